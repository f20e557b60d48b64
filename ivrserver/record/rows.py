"""Batched, idempotent writes of the outbox's records into PostgreSQL: contacts, IVR paths, audit
entries, customers (and their deletion), cases, case events, finished callbacks and notices.

Every write can be repeated (the outbox delivers at least once): contacts are upserted and an
older revision never overwrites a newer one (`rev`, the outbox entry's position), paths are
replaced whole, audit entries are keyed by their Redis stream id and inserted once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ivrserver.domain.callbacks import Callback, CallbackMode
from ivrserver.domain.callbacks import to_dict as callback_to_dict
from ivrserver.domain.cases import checklist_item_to_dict
from ivrserver.domain.compensation import Compensation
from ivrserver.domain.incidents import Incident
from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import AuditEntry, Case, Contact, Customer

if TYPE_CHECKING:
    import asyncpg


def ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


_CONTACT_UPSERT = """
INSERT INTO contacts AS c (id, started_at, kind, number, customer_id, ended_at, routing_reason, queue,
                           wait_seconds, talk_seconds, agents, outcome, disposition, notes, ivr_path, rev)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (id, started_at) DO UPDATE SET
    kind = EXCLUDED.kind, number = EXCLUDED.number, customer_id = EXCLUDED.customer_id,
    ended_at = EXCLUDED.ended_at, routing_reason = EXCLUDED.routing_reason, queue = EXCLUDED.queue,
    wait_seconds = EXCLUDED.wait_seconds, talk_seconds = EXCLUDED.talk_seconds, agents = EXCLUDED.agents,
    outcome = EXCLUDED.outcome, disposition = EXCLUDED.disposition, notes = EXCLUDED.notes,
    ivr_path = EXCLUDED.ivr_path, rev = EXCLUDED.rev
WHERE c.rev <= EXCLUDED.rev
"""


async def upsert_contacts(conn: asyncpg.Connection, contacts: Sequence[tuple[Contact, int]]) -> None:
    """(contact, revision) pairs; within one batch the newest revision of a contact wins."""
    newest: dict[str, tuple[Contact, int]] = {}
    for contact, rev in contacts:
        held = newest.get(contact.id)
        if held is None or held[1] <= rev:
            newest[contact.id] = (contact, rev)
    await conn.executemany(_CONTACT_UPSERT, [
        (c.id, ts(c.started_at), c.kind.value, c.number, c.customer_id, ts(c.ended_at), c.routing_reason, c.queue,
         c.wait_seconds, c.talk_seconds, list(c.agents), c.outcome.value, c.disposition, c.notes,
         list(c.ivr_path), rev)
        for c, rev in newest.values()])


_PATH_UPSERT = """
INSERT INTO ivr_paths (call_id, started_at, menu, version, exit_reason, events)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
ON CONFLICT (call_id, started_at) DO UPDATE SET
    menu = EXCLUDED.menu, version = EXCLUDED.version, exit_reason = EXCLUDED.exit_reason, events = EXCLUDED.events
"""


def path_exit(path: CallPath) -> str:
    for event in reversed(path.events):
        if event.kind.value == "exit":
            return event.detail or event.target
    return ""


def encode_path_events(path: CallPath) -> str:
    return json.dumps([{"k": e.kind.value, "n": e.node, "t": round(e.at, 3), "key": e.key, "to": e.target,
                        "d": e.detail} for e in path.events], separators=(",", ":"), ensure_ascii=False)


def decode_path_events(raw: str) -> tuple[PathEvent, ...]:
    """The events of a stored path; an unreadable event is skipped (it was validated on the way in)."""
    out = []
    for d in json.loads(raw):
        try:
            out.append(PathEvent(PathKind(d["k"]), str(d["n"]), float(d["t"]), key=str(d.get("key", "")),
                                 target=str(d.get("to", "")), detail=str(d.get("d", ""))))
        except (KeyError, ValueError, TypeError):
            continue
    return tuple(out)


async def upsert_paths(conn: asyncpg.Connection, paths: Sequence[CallPath]) -> None:
    await conn.executemany(_PATH_UPSERT, [
        (p.call_id, ts(p.started_at), p.menu, p.version, path_exit(p), encode_path_events(p)) for p in paths])


_AUDIT_INSERT = """
INSERT INTO audit (entry_id, at, actor, role, action, subject, allowed, reason, source)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (entry_id, at) DO NOTHING
"""


async def insert_audit(conn: asyncpg.Connection, rows: Sequence[AuditEntry]) -> None:
    await conn.executemany(_AUDIT_INSERT, [
        (r.id, ts(r.at), r.who, r.role, r.what, r.target, r.allowed, r.why, r.source) for r in rows])


# --- customers, cases, case events, finished callbacks (the outbox's other kinds) ---------------------
#
# Every statement is one row's whole story (executemany runs them in order, in one round trip), guarded
# by revision: an upsert applies only over an older `rev`, and never over a deletion of the customer at
# a newer one (`deleted_customers`). Repeating a statement changes nothing.

@dataclass(frozen=True)
class CaseEventRow:
    entry_id: str  # the outbox entry it came from: written once
    case_id: str
    customer_id: str | None
    at: float
    actor: str  # an agent id, `system`, `import`, `backoffice:<name>`
    kind: str  # opened, updated, closed, reopened, ...
    detail: Mapping[str, object]
    why: str = ""  # required to reopen, wait and resolve (domain/cases.py)


_NOT_DELETED_SINCE = "NOT EXISTS (SELECT 1 FROM deleted_customers d WHERE d.id = {id} AND d.rev > {rev})"

_CUSTOMER_UPSERT = f"""
WITH up AS (
    INSERT INTO customers AS c (id, name, tier, segment, language, account_manager, account_number, pin_hash,
                                preferences, attributes, updated_at, rev)
    SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::jsonb,
           $10::jsonb, now(), $12::bigint
    WHERE {_NOT_DELETED_SINCE.format(id="$1", rev="$12")}
    ON CONFLICT (id) DO UPDATE SET
        name = EXCLUDED.name, tier = EXCLUDED.tier, segment = EXCLUDED.segment, language = EXCLUDED.language,
        account_manager = EXCLUDED.account_manager, account_number = EXCLUDED.account_number,
        pin_hash = EXCLUDED.pin_hash, preferences = EXCLUDED.preferences, attributes = EXCLUDED.attributes,
        updated_at = now(), rev = EXCLUDED.rev
    WHERE c.rev <= EXCLUDED.rev
    RETURNING id
), gone AS (
    DELETE FROM customer_phones p USING up WHERE p.customer_id = up.id AND NOT (p.phone = ANY($11::text[]))
)
INSERT INTO customer_phones (phone, customer_id)
SELECT DISTINCT phone, up.id FROM up, unnest($11::text[]) AS phone
ON CONFLICT DO NOTHING
"""


async def upsert_customers(conn: asyncpg.Connection, customers: Sequence[tuple[Customer, int]]) -> None:
    """(customer, revision) pairs, in stream order: the whole profile (pin_hash included: this is the
    record) and its phones, which replace the stored ones."""
    await conn.executemany(_CUSTOMER_UPSERT, [
        (c.id, c.name, c.tier.value, c.segment.value, c.language, c.account_manager, c.account_number, c.pin_hash,
         json.dumps(dataclasses.asdict(c.preferences)), json.dumps(dict(c.attributes), ensure_ascii=False),
         sorted(set(c.phones)), rev)
        for c, rev in customers])


_CUSTOMER_DELETE = """
WITH tomb AS (
    INSERT INTO deleted_customers AS d (id, rev) VALUES ($1, $2)
    ON CONFLICT (id) DO UPDATE SET rev = GREATEST(d.rev, EXCLUDED.rev), deleted_at = now()
), newer AS (
    SELECT 1 FROM customers WHERE id = $1 AND rev > $2
), customer AS (
    DELETE FROM customers WHERE id = $1 AND rev <= $2
), phones AS (
    DELETE FROM customer_phones WHERE customer_id = $1 AND NOT EXISTS (SELECT 1 FROM newer)
), old_cases AS (
    DELETE FROM cases WHERE customer_id = $1 AND rev <= $2 RETURNING id
)
DELETE FROM case_events
WHERE rev <= $2 AND (customer_id = $1 OR case_id IN (SELECT id FROM old_cases))
"""


async def delete_customers(conn: asyncpg.Connection, deletions: Sequence[tuple[str, int]]) -> None:
    """(customer id, revision) pairs: the customer, its phones, cases and case events, all as of that
    revision (a customer created again later, at a newer revision, keeps what is newer)."""
    await conn.executemany(_CUSTOMER_DELETE, list(deletions))


_CASE_UPSERT = f"""
INSERT INTO cases AS k (id, customer_id, status, summary, severity, owner_agent, still_needed, next_step,
                        opened_at, closed_at, updated_at, rev, due_at, checklist, handed_to, compensated_cents,
                        currency, resolved_at)
SELECT $1::text, $2::text, $3::text, $4::text, $5::smallint, $6::text, $7::text, $8::text, $9::timestamptz,
       CASE WHEN $3::text = 'closed' THEN $10::timestamptz END, $10::timestamptz, $11::bigint,
       $12::timestamptz, $13::jsonb, $14::text[], $15::bigint, $16::text,
       CASE WHEN $3::text IN ('resolved', 'closed') THEN $10::timestamptz END
WHERE {_NOT_DELETED_SINCE.format(id="$2", rev="$11")}
ON CONFLICT (id) DO UPDATE SET
    customer_id = EXCLUDED.customer_id, status = EXCLUDED.status, summary = EXCLUDED.summary,
    severity = EXCLUDED.severity, owner_agent = EXCLUDED.owner_agent, still_needed = EXCLUDED.still_needed,
    next_step = EXCLUDED.next_step, opened_at = EXCLUDED.opened_at,
    -- a closed case keeps the time it was first closed (resolved: first resolved); a reopened one has none
    closed_at = CASE WHEN EXCLUDED.status = 'closed' THEN COALESCE(k.closed_at, EXCLUDED.closed_at) END,
    resolved_at = CASE WHEN EXCLUDED.status IN ('resolved', 'closed')
                       THEN COALESCE(k.resolved_at, EXCLUDED.resolved_at) END,
    updated_at = EXCLUDED.updated_at, rev = EXCLUDED.rev, due_at = EXCLUDED.due_at, checklist = EXCLUDED.checklist,
    handed_to = EXCLUDED.handed_to, compensated_cents = EXCLUDED.compensated_cents, currency = EXCLUDED.currency
WHERE k.rev <= EXCLUDED.rev
"""


async def upsert_cases(conn: asyncpg.Connection, cases: Sequence[tuple[Case, float, int]]) -> None:
    """(case, time of the change, revision) triples, in stream order."""
    await conn.executemany(_CASE_UPSERT, [
        (k.id, k.customer_id, k.status.value, k.summary, k.severity, k.owner_agent, k.still_needed, k.next_step,
         ts(k.opened_at), ts(at), rev, ts(k.due_at),
         json.dumps([checklist_item_to_dict(i) for i in k.checklist], ensure_ascii=False, separators=(",", ":")),
         list(k.handed_to), k.compensated_cents, k.currency)
        for k, at, rev in cases])


_CASE_EVENT_INSERT = f"""
INSERT INTO case_events (entry_id, case_id, customer_id, at, actor, kind, detail, rev, why)
SELECT $1::text, $2::text, $3::text, $4::timestamptz, $5::text, $6::text, $7::jsonb, $8::bigint, $9::text
WHERE $3::text IS NULL OR {_NOT_DELETED_SINCE.format(id="$3", rev="$8")}
ON CONFLICT (entry_id) DO NOTHING
"""


async def insert_case_events(conn: asyncpg.Connection, events: Sequence[tuple[CaseEventRow, int]]) -> None:
    """(event, revision) pairs; each is appended once, whatever the number of deliveries."""
    await conn.executemany(_CASE_EVENT_INSERT, [
        (e.entry_id, e.case_id, e.customer_id, ts(e.at), e.actor, e.kind,
         json.dumps(dict(e.detail), ensure_ascii=False, separators=(",", ":")), rev, e.why)
        for e, rev in events])


_COMPENSATION_UPSERT = f"""
INSERT INTO case_compensations AS p (id, case_id, customer_id, amount_cents, currency, reason, granted_by,
                                     approved_by, state, requested_at, decided_at, decision_why, revision)
SELECT $1::text, $2::text, $3::text, $4::bigint, $5::text, $6::text, $7::text, $8::text, $9::text,
       $10::timestamptz, $11::timestamptz, $12::text, $13::bigint
WHERE {_NOT_DELETED_SINCE.format(id="$3", rev="$13")}
ON CONFLICT (id) DO UPDATE SET
    approved_by = EXCLUDED.approved_by, state = EXCLUDED.state, decided_at = EXCLUDED.decided_at,
    decision_why = EXCLUDED.decision_why, revision = EXCLUDED.revision
WHERE p.revision <= EXCLUDED.revision
"""


async def upsert_case_compensations(conn: asyncpg.Connection,
                                    compensations: Sequence[tuple[Compensation, int]]) -> None:
    """(compensation as it is now, revision) pairs: the newest version of each wins."""
    await conn.executemany(_COMPENSATION_UPSERT, [
        (c.id, c.case_id, c.customer_id, c.amount_cents, c.currency, c.reason, c.granted_by, c.approved_by,
         c.state.value, ts(c.requested_at), ts(c.decided_at), c.decision_why, rev)
        for c, rev in compensations])


_CALLBACK_UPSERT = """
INSERT INTO callbacks_finished AS f (id, customer_id, number, mode, state, requested_at, finished_at, record, rev)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
ON CONFLICT (id) DO UPDATE SET
    customer_id = EXCLUDED.customer_id, number = EXCLUDED.number, mode = EXCLUDED.mode, state = EXCLUDED.state,
    requested_at = EXCLUDED.requested_at, finished_at = EXCLUDED.finished_at, record = EXCLUDED.record,
    rev = EXCLUDED.rev
WHERE f.rev <= EXCLUDED.rev
"""

_NOTICE_UPSERT = """
INSERT INTO notifications AS n (id, customer_id, kind, state, created_at, finished_at, record, rev)
VALUES ($1, $2, 'call', $3, $4, $5, $6::jsonb, $7)
ON CONFLICT (id) DO UPDATE SET
    customer_id = EXCLUDED.customer_id, kind = EXCLUDED.kind, state = EXCLUDED.state,
    created_at = EXCLUDED.created_at, finished_at = EXCLUDED.finished_at, record = EXCLUDED.record,
    rev = EXCLUDED.rev
WHERE n.rev <= EXCLUDED.rev
"""


async def upsert_finished_callbacks(conn: asyncpg.Connection, finished: Sequence[tuple[Callback, int]]) -> None:
    """(callback in a final state, revision) pairs: agent-first callbacks go to callbacks_finished,
    customer-first ones (spoken notices) to notifications; `record` is the whole callback as JSON."""
    callbacks, notices = [], []
    for cb, rev in finished:
        record = json.dumps(callback_to_dict(cb), ensure_ascii=False, separators=(",", ":"))
        finished_at = ts(cb.updated_at or cb.created_at)
        if cb.mode is CallbackMode.CUSTOMER_FIRST:
            notices.append((cb.id, cb.customer_id or None, cb.state.value, ts(cb.created_at), finished_at, record, rev))
        else:
            callbacks.append((cb.id, cb.customer_id or None, cb.number, cb.mode.value, cb.state.value,
                              ts(cb.created_at), finished_at, record, rev))
    if callbacks:
        await conn.executemany(_CALLBACK_UPSERT, callbacks)
    if notices:
        await conn.executemany(_NOTICE_UPSERT, notices)



# --- mass-fault incidents (migration 0007): one row per incident, rewritten at every change
_INCIDENT_UPSERT = """
INSERT INTO incidents AS i (id, service, area, state, planned, opened_at, acknowledged_at, resolved_at, cause,
                            expected_fix_at, opened_by, area_names, counts, figures, revision, rev)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb, $14::jsonb, $15, $16)
ON CONFLICT (id) DO UPDATE SET
    state = EXCLUDED.state, planned = EXCLUDED.planned, acknowledged_at = EXCLUDED.acknowledged_at,
    resolved_at = EXCLUDED.resolved_at, cause = EXCLUDED.cause, expected_fix_at = EXCLUDED.expected_fix_at,
    area_names = EXCLUDED.area_names, counts = EXCLUDED.counts, figures = EXCLUDED.figures,
    revision = EXCLUDED.revision, rev = EXCLUDED.rev
WHERE i.revision < EXCLUDED.revision OR (i.revision = EXCLUDED.revision AND i.rev <= EXCLUDED.rev)
"""


async def upsert_incidents(conn: asyncpg.Connection, incidents: Sequence[tuple[Incident, int]]) -> None:
    """(incident, outbox revision) pairs; the incident's own revision orders versions first."""
    def dumps(value: object) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    await conn.executemany(_INCIDENT_UPSERT, [
        (i.id, i.service, i.area, i.state.value, i.planned, ts(i.opened_at), ts(i.acknowledged_at),
         ts(i.resolved_at), i.cause, ts(i.expected_fix_at), i.opened_by, dumps(dict(i.area_names)),
         dumps(dict(i.counts)), dumps(dict(i.figures)), i.revision, rev) for i, rev in incidents])

# --- outgoing webhook deliveries (migration 0006): one row per delivery, rewritten after each attempt
_WEBHOOK_UPSERT = """
INSERT INTO webhook_deliveries AS w (id, endpoint, event, key, state, attempts, created_at, updated_at, next_at,
                                     last_status, last_error, dead_reason, log, payload, rev)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14::jsonb, $15)
ON CONFLICT (id, created_at) DO UPDATE SET
    state = EXCLUDED.state, attempts = EXCLUDED.attempts, updated_at = EXCLUDED.updated_at,
    next_at = EXCLUDED.next_at, last_status = EXCLUDED.last_status, last_error = EXCLUDED.last_error,
    dead_reason = EXCLUDED.dead_reason, log = EXCLUDED.log, payload = EXCLUDED.payload, rev = EXCLUDED.rev
WHERE w.rev <= EXCLUDED.rev
"""
_WEBHOOK_STATES = ("pending", "delivered", "dead")


def webhook_delivery_row(data: str) -> tuple[object, ...]:
    """An outbox entry of kind webhook_deliveries (store/webhooks.outbox_data) → the row's values
    (without rev); ValueError/KeyError/TypeError when it is not one."""
    d = json.loads(data)
    if not isinstance(d, dict) or d.get("state") not in _WEBHOOK_STATES or not isinstance(d.get("log"), list):
        raise ValueError("not a webhook delivery")
    status = d.get("last_status")
    next_at = d.get("next_at")
    return (str(d["id"]), str(d["endpoint"]), str(d["event"]), str(d["key"]), d["state"], int(d["attempts"]),
            ts(float(d["created_at"])), ts(float(d["updated_at"])), None if next_at is None else ts(float(next_at)),
            None if status is None else int(status), str(d.get("last_error", "")), str(d.get("dead_reason", "")),
            json.dumps(d["log"], ensure_ascii=False, separators=(",", ":")),
            None if d.get("payload") is None else json.dumps(d["payload"], ensure_ascii=False, separators=(",", ":")))


async def upsert_webhook_deliveries(conn: asyncpg.Connection, rows: Sequence[tuple[tuple[object, ...], int]]) -> None:
    """(webhook_delivery_row values, outbox revision) pairs, in stream order."""
    await conn.executemany(_WEBHOOK_UPSERT, [(*row, rev) for row, rev in rows])


# --- agents' page preferences (migration 0009): one row per agent, the newest change wins
@dataclass(frozen=True)
class AgentPrefsRow:
    agent_id: str
    language: str
    updated_at: float  # when the agent made the change


_AGENT_PREFS_UPSERT = """
INSERT INTO agent_preferences AS p (agent_id, language, updated_at, rev)
VALUES ($1, $2, $3, $4)
ON CONFLICT (agent_id) DO UPDATE SET
    language = EXCLUDED.language, updated_at = EXCLUDED.updated_at, rev = EXCLUDED.rev
WHERE p.rev <= EXCLUDED.rev
"""


async def upsert_agent_preferences(conn: asyncpg.Connection, prefs: Sequence[tuple[AgentPrefsRow, int]]) -> None:
    """(preferences, revision) pairs, in stream order: an older revision never overwrites a newer one."""
    await conn.executemany(_AGENT_PREFS_UPSERT, [(p.agent_id, p.language, ts(p.updated_at), rev) for p, rev in prefs])
