"""Reading the system of record back: what Redis needs to serve calls (and agents' pages) again
after losing its data.

Keyset-paged (by customer id), so a warm-up of millions of customers reads bounded batches; the
recent contacts of a page come from the (customer_id, started_at DESC) index, a few per customer.
A row the domain cannot read (a tier this code does not know) is skipped and counted, not raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ivrserver.domain.cases import checklist_item_from_dict
from ivrserver.domain.i18n import check_language
from ivrserver.domain.model import (
    AuditEntry,
    Case,
    CaseStatus,
    Contact,
    ContactKind,
    ContactPreferences,
    Customer,
    Outcome,
    Segment,
    Tier,
)
from ivrserver.store.grants import check_agent_id

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)
R = TypeVar("R")


@dataclass
class Page:
    """One page of customers with their cases and recent contacts; `last_id` pages on."""

    customers: list[Customer] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)
    unreadable: int = 0
    last_id: str | None = None


_CUSTOMERS = """
SELECT c.id, c.name, c.tier, c.segment, c.language, c.account_manager, c.account_number, c.pin_hash,
       c.preferences, c.attributes,
       coalesce(array_agg(p.phone ORDER BY p.phone) FILTER (WHERE p.phone IS NOT NULL), '{}') AS phones
FROM customers c LEFT JOIN customer_phones p ON p.customer_id = c.id
WHERE c.id > $1
GROUP BY c.id
ORDER BY c.id
LIMIT $2
"""

_CASES = """
SELECT id, customer_id, status, summary, severity, owner_agent, still_needed, next_step, opened_at, due_at,
       checklist, handed_to, compensated_cents, currency, updated_at
FROM cases WHERE customer_id = ANY($1::text[])
"""

# the newest few contacts of each customer of the page, within the retention Redis keeps
_RECENT_CONTACTS = """
SELECT k.* FROM unnest($1::text[]) AS ids(customer_id)
CROSS JOIN LATERAL (
    SELECT id, kind, number, started_at, customer_id, ended_at, ivr_path, routing_reason, queue, wait_seconds,
           agents, outcome, talk_seconds, disposition, notes
    FROM contacts
    WHERE contacts.customer_id = ids.customer_id AND started_at >= $2
    ORDER BY started_at DESC
    LIMIT $3
) AS k
"""

# one customer's contacts, newest first, up to a time: the (customer_id, started_at DESC) index
_CONTACTS_BEFORE = """
SELECT id, kind, number, started_at, customer_id, ended_at, ivr_path, routing_reason, queue, wait_seconds,
       agents, outcome, talk_seconds, disposition, notes
FROM contacts
WHERE customer_id = $1 AND ($2::timestamptz IS NULL OR started_at <= $2)
ORDER BY started_at DESC
LIMIT $3
"""

# the audit log, newest first by the numbers of its stream ids (index audit_order): from the
# newest, or from below one id (two statements: an "id IS NULL OR" would not seek in the index)
_AUDIT_COLUMNS = "SELECT entry_id, at, actor, role, action, subject, allowed, reason, source FROM audit"
_AUDIT_ORDER = "ORDER BY split_part(entry_id, '-', 1)::numeric DESC, split_part(entry_id, '-', 2)::numeric DESC"
_AUDIT_NEWEST = f"{_AUDIT_COLUMNS} {_AUDIT_ORDER} LIMIT $1"
_AUDIT_BEFORE = f"""{_AUDIT_COLUMNS}
WHERE (split_part(entry_id, '-', 1)::numeric, split_part(entry_id, '-', 2)::numeric) < ($1::numeric, $2::numeric)
{_AUDIT_ORDER} LIMIT $3"""

_MAX_CASE_ID = "SELECT max(id::numeric) FROM cases WHERE id ~ '^[0-9]{1,18}$'"


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _customer(row: Any) -> Customer:
    prefs = json.loads(row["preferences"]) if row["preferences"] else {}
    return Customer(
        id=row["id"], name=row["name"], phones=tuple(row["phones"]), tier=Tier(row["tier"]),
        segment=Segment(row["segment"]), language=row["language"], account_manager=row["account_manager"],
        account_number=row["account_number"], pin_hash=row["pin_hash"],
        preferences=ContactPreferences(
            timezone=str(prefs.get("timezone", "UTC")), allowed_from=str(prefs.get("allowed_from", "09:00")),
            allowed_until=str(prefs.get("allowed_until", "20:00")), do_not_call=bool(prefs.get("do_not_call")),
            holidays_ok=bool(prefs.get("holidays_ok"))),
        attributes={str(k): str(v) for k, v in (json.loads(row["attributes"]) if row["attributes"] else {}).items()})


def _case(row: Any) -> Case:
    return Case(id=row["id"], customer_id=row["customer_id"], status=CaseStatus(row["status"]), summary=row["summary"],
                opened_at=row["opened_at"].timestamp(), owner_agent=row["owner_agent"], severity=int(row["severity"]),
                still_needed=row["still_needed"], next_step=row["next_step"], due_at=_epoch(row["due_at"]),
                checklist=tuple(checklist_item_from_dict(i) for i in json.loads(row["checklist"] or "[]")),
                handed_to=tuple(row["handed_to"] or ()), compensated_cents=int(row["compensated_cents"]),
                currency=row["currency"], updated_at=_epoch(row["updated_at"]))


def _contact(row: Any) -> Contact:
    return Contact(id=row["id"], kind=ContactKind(row["kind"]), number=row["number"],
                   started_at=row["started_at"].timestamp(), customer_id=row["customer_id"],
                   ended_at=_epoch(row["ended_at"]), ivr_path=tuple(row["ivr_path"]),
                   routing_reason=row["routing_reason"], queue=row["queue"], wait_seconds=row["wait_seconds"],
                   agents=tuple(row["agents"]), outcome=Outcome(row["outcome"]), talk_seconds=row["talk_seconds"],
                   disposition=row["disposition"], notes=row["notes"])


async def page(conn: asyncpg.Connection, *, after: str = "", limit: int = 500, contacts_since: datetime,
               contacts_per_customer: int = 10) -> Page:
    """The customers after id `after` (at most `limit`), every case of theirs and their newest
    contacts since `contacts_since`. An empty page (last_id None) means the end."""
    out = Page()
    rows = await conn.fetch(_CUSTOMERS, after, limit)
    if not rows:
        return out
    out.last_id = rows[-1]["id"]
    out.customers, out.unreadable = _read(rows, _customer)
    ids = [r["id"] for r in rows]
    out.cases, bad_cases = _read(await conn.fetch(_CASES, ids), _case)
    out.contacts, bad_contacts = _read(await conn.fetch(_RECENT_CONTACTS, ids, contacts_since,
                                                        contacts_per_customer), _contact)
    out.unreadable += bad_cases + bad_contacts
    return out


def _read(rows: list[Any], build: Any) -> tuple[list[Any], int]:
    found, bad = [], 0
    for row in rows:
        try:
            found.append(build(row))
        except (ValueError, KeyError, TypeError, AttributeError):
            bad += 1
    return found, bad


async def contacts_before(conn: asyncpg.Connection, customer_id: str, until: float | None,
                          limit: int) -> list[Contact]:
    """A customer's contacts that started at or before `until` (None: any), newest first."""
    at = datetime.fromtimestamp(until, UTC) if until is not None else None
    found, unreadable = _read(await conn.fetch(_CONTACTS_BEFORE, customer_id, at, limit), _contact)
    if unreadable:
        log.warning("customer %s: %d archived contact(s) unreadable, left out", customer_id, unreadable)
    return found


async def audit_before(conn: asyncpg.Connection, before: str | None, count: int) -> list[AuditEntry]:
    """Audit entries older than entry id `before` (`<ms>-<seq>`; None: the newest), newest first."""
    if before:
        ms, seq = before.split("-", 1)
        rows = await conn.fetch(_AUDIT_BEFORE, int(ms), int(seq), count)
    else:
        rows = await conn.fetch(_AUDIT_NEWEST, count)
    return [AuditEntry(id=r["entry_id"], at=r["at"].timestamp(), who=r["actor"], role=r["role"], what=r["action"],
                       target=r["subject"], why=r["reason"], allowed=bool(r["allowed"]), source=r["source"])
            for r in rows]


class RecordArchive:
    """What PostgreSQL keeps past Redis's hot window, read back for agents and supervisors: a
    customer's contacts (services/customers.ContactArchive) and the audit log
    (services/privacy.AuditArchive). `pool` gives the record's pool (None: not open yet); every
    read answers None when PostgreSQL does not answer within `timeout` (the caller shows Redis's
    part and says so)."""

    def __init__(self, pool: Callable[[], asyncpg.Pool | None], *, timeout: float = 2.0) -> None:
        self._pool = pool
        self.timeout = timeout

    async def contacts_before(self, customer_id: str, until: float | None, limit: int) -> list[Contact] | None:
        return await self._read(contacts_before, customer_id, until, limit, what=f"customer {customer_id}'s contacts")

    async def audit_before(self, before: str | None, count: int) -> list[AuditEntry] | None:
        return await self._read(audit_before, before, count, what="audit entries")

    async def _read(self, query: Callable[..., Awaitable[R]], *args: Any, what: str) -> R | None:
        import asyncpg

        pool = self._pool()
        if pool is None:
            return None
        try:
            async with asyncio.timeout(self.timeout), pool.acquire() as conn:
                return await query(conn, *args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("%s not read from PostgreSQL (%s)", what, type(exc).__name__)
            return None


async def max_case_id(conn: asyncpg.Connection) -> int:
    """The highest numeric case id on record (0 for none): Redis's case sequence must not hand it out again."""
    value = await conn.fetchval(_MAX_CASE_ID)
    return int(value or 0)


_AGENT_PREFERENCES = "SELECT agent_id, language FROM agent_preferences WHERE agent_id > $1 ORDER BY agent_id LIMIT $2"


async def agent_preferences_page(conn: asyncpg.Connection, *, after: str = "",
                                 limit: int = 500) -> tuple[list[tuple[str, dict[str, str]]], int, str | None]:
    """The agents' preferences after agent id `after` (at most `limit`): ([(agent id, fields)],
    unreadable, last agent id — None at the end). A language this ivrserver does not ship (written
    by a newer one) or an agent id it would refuse is skipped and counted."""
    rows = await conn.fetch(_AGENT_PREFERENCES, after, limit)
    found: list[tuple[str, dict[str, str]]] = []
    bad = 0
    for row in rows:
        try:
            found.append((check_agent_id(row["agent_id"]), {"language": check_language(row["language"])}))
        except ValueError:
            bad += 1
    return found, bad, (rows[-1]["agent_id"] if rows else None)
