"""Batched, idempotent writes of contacts, IVR paths and audit entries into PostgreSQL.

Every write can be repeated (the outbox delivers at least once): contacts are upserted and an
older revision never overwrites a newer one (`rev`, the outbox entry's position), paths are
replaced whole, audit entries are keyed by their Redis stream id and inserted once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import Contact

if TYPE_CHECKING:
    import asyncpg


def ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


@dataclass(frozen=True)
class AuditRow:
    id: str  # the Redis stream id it was appended under: unique, ordered
    at: float
    who: str
    role: str
    what: str
    target: str
    why: str
    allowed: bool
    source: str = ""


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


async def insert_audit(conn: asyncpg.Connection, rows: Sequence[AuditRow]) -> None:
    await conn.executemany(_AUDIT_INSERT, [
        (r.id, ts(r.at), r.who, r.role, r.what, r.target, r.allowed, r.why, r.source) for r in rows])
