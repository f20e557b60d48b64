"""The outbox: records leave the call path through a Redis stream and reach PostgreSQL in batches.

Producers (the contact writer, the path recorder, the audit log) `XADD` one entry per record to
the outbox stream: one round trip they already make to Redis, never a PostgreSQL wait on a call.
`RecordSink` reads the stream with a consumer group, writes each batch in ONE PostgreSQL
transaction with idempotent statements (record/rows.py), and only then `XACK`s and deletes the
entries. So:
- PostgreSQL down: entries stay in the stream (Redis persists them: AOF) and are retried with
  backoff; one log line when it goes away, one when it is back — none lost.
- The sink dies between commit and ack: the entries are delivered again (to this consumer on
  restart, or claimed by another instance after `claim_idle` seconds) and written again with the
  same effect — none written twice.
- An entry that cannot be decoded is moved to the dead-letter stream (kept, visible), not retried
  forever and not dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ivrserver.domain.callbacks import TERMINAL_STATES, Callback
from ivrserver.domain.callbacks import from_dict as callback_from_dict
from ivrserver.domain.callbacks import to_dict as callback_to_dict
from ivrserver.domain.compensation import from_dict as compensation_from_dict
from ivrserver.domain.i18n import check_language
from ivrserver.domain.incidents import from_dict as incident_from_dict
from ivrserver.domain.menu_stats import CallPath
from ivrserver.record import reports as report_rollups
from ivrserver.record.rollup import mark_dirty
from ivrserver.record.rows import (
    AgentPrefsRow,
    AuditEntry,
    CaseEventRow,
    delete_customers,
    insert_audit,
    insert_case_events,
    upsert_agent_preferences,
    upsert_case_compensations,
    upsert_cases,
    upsert_contacts,
    upsert_customers,
    upsert_finished_callbacks,
    upsert_incidents,
    upsert_paths,
    upsert_webhook_deliveries,
    webhook_delivery_row,
)
from ivrserver.store.callpath import decode_event, path_to_json
from ivrserver.store.cases import case_entry, case_event_entry, case_from_json
from ivrserver.store.contacts import contact_from_json, contact_to_json
from ivrserver.store.customers import customer_deleted_entry, customer_entry, customer_from_json
from ivrserver.store.grants import check_agent_id

if TYPE_CHECKING:
    import asyncpg
    import redis.asyncio as aioredis
    from redis.asyncio.client import Pipeline

    from ivrserver.domain.model import Case, Contact, Customer

log = logging.getLogger(__name__)

GROUP = "record"
KINDS = ("contact", "path", "audit", "customer", "customer_deleted", "case", "case_event", "callback",
         "case_compensation", "webhook_deliveries", "incidents", "agent_prefs")


def revision(entry_id: str) -> int:
    """A stream id `ms-seq` as one ordered integer (fits a bigint until the year 2262)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms) * 1_000_000 + int(seq or 0)


def path_from_json(raw: str) -> CallPath:
    d = json.loads(raw)
    events = tuple(e for e in (decode_event(r) for r in d["events"]) if e is not None)
    return CallPath(str(d["call"]), str(d["menu"]), str(d["version"]), float(d["started_at"]), events)


def audit_to_fields(row: AuditEntry) -> dict[str, str]:
    return {"at": repr(row.at), "who": row.who, "role": row.role, "what": row.what, "target": row.target,
            "why": row.why, "allowed": "1" if row.allowed else "0", "source": row.source}


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- entries: the fields of one outbox entry per record (XADD them alone or in a pipeline) -----------
# customer_entry, customer_deleted_entry (store/customers.py), case_entry and case_event_entry
# (store/cases.py) live next to the JSON they carry: the store's writes queue them in their own
# MULTI, and store/ cannot import this module (it imports store/). Imported here for Outbox and callers.


def callback_entry(cb: Callback) -> dict[str, str]:
    if cb.state not in TERMINAL_STATES:
        raise ValueError(f"callback {cb.id} is {cb.state.value}, not finished")
    return {"kind": "callback", "data": _dumps(callback_to_dict(cb))}


class Outbox:
    """The producer side: one XADD per record, in the round trip the caller already makes.

    `queue(pipe, entry)` puts an entry on a pipeline (or MULTI) the caller executes with its own
    writes; the other methods XADD at once and return the entry id."""

    def __init__(self, redis: aioredis.Redis, stream: str) -> None:
        self.redis = redis
        self.stream = stream

    def queue(self, pipe: Pipeline, entry: Mapping[str, str]) -> None:
        pipe.xadd(self.stream, dict(entry))  # type: ignore[arg-type]

    async def add(self, entry: Mapping[str, str]) -> str:
        return str(await self.redis.xadd(self.stream, dict(entry)))  # type: ignore[arg-type]

    async def contact(self, contact: Contact) -> str:
        return await self.add({"kind": "contact", "data": contact_to_json(contact)})

    async def path(self, path: CallPath) -> str:
        return await self.add({"kind": "path", "data": path_to_json(path)})

    async def audit(self, entry_id: str, row: AuditEntry) -> str:
        return await self.add({"kind": "audit", "data": _dumps({"id": entry_id, **audit_to_fields(row)})})

    async def customer(self, customer: Customer) -> str:
        return await self.add(customer_entry(customer))

    async def customer_deleted(self, customer_id: str) -> str:
        return await self.add(customer_deleted_entry(customer_id))

    async def case(self, case: Case, at: float) -> str:
        return await self.add(case_entry(case, at))

    async def case_event(self, case_id: str, customer_id: str | None, *, at: float, actor: str, kind: str,
                         detail: Mapping[str, Any] | None = None) -> str:
        return await self.add(case_event_entry(case_id, customer_id, at=at, actor=actor, kind=kind, detail=detail))

    async def callback(self, cb: Callback) -> str:
        return await self.add(callback_entry(cb))


@dataclass(frozen=True)
class Record:
    """One decoded outbox entry: its id, its fields (for the dead letters), its kind and value."""

    entry_id: str
    fields: Mapping[str, str]
    kind: str
    value: Any


@dataclass
class Batch:
    ids: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)  # in stream order
    dead: list[tuple[str, Mapping[str, str], str]] = field(default_factory=list)


def _decode_one(entry_id: str, kind: str, data: str, fields: Mapping[str, str]) -> Any:
    rev = revision(entry_id)
    row = ROWS.get(kind)
    if row is not None:
        return (row(data), rev)
    if kind == "contact":
        contact = contact_from_json(data)
        if contact is None:
            raise ValueError("unreadable contact")
        return (contact, rev)
    if kind == "path":
        return path_from_json(data)
    if kind == "audit":
        d = json.loads(data)
        return AuditEntry(id=str(d["id"]), at=float(d["at"]), who=str(d["who"]), role=str(d["role"]),
                        what=str(d["what"]), target=str(d["target"]), why=str(d["why"]), allowed=d["allowed"] == "1",
                        source=str(d.get("source", "")))
    if kind == "customer":
        customer = customer_from_json(data)
        if customer is None or not customer.id:
            raise ValueError("unreadable customer")
        return (customer, rev)
    if kind == "customer_deleted":
        customer_id = json.loads(data)["id"]
        if not isinstance(customer_id, str) or not customer_id:
            raise ValueError("no customer id")
        return (customer_id, rev)
    if kind == "case":
        case = case_from_json(data)
        if case is None:
            raise ValueError("unreadable case")
        return (case, float(fields.get("at") or case.opened_at), rev)
    if kind == "case_event":
        d = json.loads(data)
        detail = d.get("detail") or {}
        if not isinstance(detail, dict):
            raise ValueError("case event detail is not an object")
        customer_id = d.get("customer_id")
        return (CaseEventRow(entry_id=entry_id, case_id=str(d["case_id"]),
                             customer_id=None if customer_id is None else str(customer_id), at=float(d["at"]),
                             actor=str(d["actor"]), kind=str(d["kind"]), detail=detail,
                             why=str(d.get("why") or "")), rev)
    if kind == "case_compensation":
        return (compensation_from_dict(json.loads(data)), rev)
    if kind == "incidents":
        d = json.loads(data)
        if not isinstance(d, dict):
            raise ValueError("incident is not an object")
        return (incident_from_dict(d), rev)
    if kind == "callback":
        d = json.loads(data)
        if not isinstance(d, dict):
            raise ValueError("callback is not an object")
        cb = callback_from_dict(d)
        if cb.state not in TERMINAL_STATES:
            raise ValueError(f"callback in state {cb.state.value}, not finished")
        return (cb, rev)
    raise ValueError(f"unknown kind {kind[:32]!r}")


MAX_EPOCH = 32503680000.0  # 3000-01-01: a later time is no agent's change (and PostgreSQL's range ends)


def agent_prefs_row(data: str) -> AgentPrefsRow:
    """An outbox entry of kind agent_prefs (store/agent_prefs.agent_prefs_entry), checked as the REST
    API checks it: a valid agent id and a language the pages are shown in (ValueError otherwise)."""
    d = json.loads(data)
    prefs = d["prefs"] if isinstance(d, dict) else None
    if not isinstance(prefs, dict):
        raise ValueError("agent preferences are not an object")
    at = float(d["at"])
    if not (math.isfinite(at) and 0 <= at < MAX_EPOCH):
        raise ValueError("agent preferences: time out of range")
    return AgentPrefsRow(agent_id=check_agent_id(d["agent_id"]), language=check_language(prefs.get("language")),
                         updated_at=at)


# kinds whose data alone makes the row (written with the entry's revision)
ROWS: dict[str, Callable[[str], Any]] = {"webhook_deliveries": webhook_delivery_row, "agent_prefs": agent_prefs_row}


def decode(entries: Sequence[tuple[str, Mapping[str, str]]]) -> Batch:
    batch = Batch()
    for entry_id, fields in entries:
        batch.ids.append(entry_id)
        kind, data = fields.get("kind", ""), fields.get("data", "")
        try:
            batch.records.append(Record(entry_id, fields, kind, _decode_one(entry_id, kind, data, fields)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            batch.dead.append((entry_id, fields, str(exc)[:200]))
    return batch


async def _paths(conn: asyncpg.Connection, paths: Sequence[CallPath]) -> None:
    await upsert_paths(conn, paths)
    await mark_dirty(conn, paths)
    await report_rollups.mark_paths(conn, paths)


async def _contacts(conn: asyncpg.Connection, contacts: Sequence[tuple[Contact, int]]) -> None:
    await upsert_contacts(conn, contacts)
    await report_rollups.mark_contacts(conn, contacts)  # the reports' hourly rollups (migration 0008)


async def _callbacks(conn: asyncpg.Connection, finished: Sequence[tuple[Callback, int]]) -> None:
    await upsert_finished_callbacks(conn, finished)
    await report_rollups.mark_callbacks(conn, finished)


# kind → the batched write of a run of records of that kind (each record's value as decoded)
WRITERS: dict[str, Callable[[asyncpg.Connection, list[Any]], Awaitable[None]]] = {
    "contact": _contacts, "path": _paths, "audit": insert_audit, "customer": upsert_customers,
    "customer_deleted": delete_customers, "case": upsert_cases, "case_event": insert_case_events,
    "callback": _callbacks, "case_compensation": upsert_case_compensations,
    "webhook_deliveries": upsert_webhook_deliveries,
    "incidents": upsert_incidents,
    "agent_prefs": upsert_agent_preferences,
}


def runs(records: Sequence[Record]) -> list[tuple[str, list[Record]]]:
    """The batch's records grouped by kind, each group in stream order: [(kind, records), ...].

    One statement batch per kind, whatever the interleaving: producers interleave kinds (a call
    writes a contact, a path, an audit entry), and runs of consecutive records were one row each —
    a third of the writer's throughput (bench/storage_bench.py). Grouping is safe because every
    write is revision-guarded (rows.py): a customer deleted and created again, or an older copy
    arriving after a newer one, ends the same in any order."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.kind, []).append(record)
    return list(groups.items())


def is_data_error(exc: BaseException) -> bool:
    """An error of the records written, not of the database's availability: the same write fails
    again however often it is retried (a value out of range or not encodable, a constraint).
    Connection loss, shutdown, too many connections, a missing table or right are not: retried."""
    import asyncpg

    if isinstance(exc, asyncpg.exceptions._base.DataError):  # a value the client cannot encode
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in ("22", "23", "54")
    return False


def _error_text(exc: BaseException, kind: str) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    text = type(exc).__name__ + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
    if kind != "customer":  # a customer's message could quote its values (the PIN hash among them)
        text += ": " + str(exc).replace("\n", " ")
    return text[:300]


class RecordSink:
    """Moves outbox entries into PostgreSQL; several instances share the work (consumer group)."""

    def __init__(self, redis: aioredis.Redis, pool: asyncpg.Pool, *, stream: str, dead_stream: str,
                 consumer: str, batch_size: int = 500, block_ms: int = 1000, claim_idle: float = 30.0,
                 max_backoff: float = 5.0, write_interval: float = 0.0) -> None:
        self.redis = redis
        self.pool = pool
        self.stream = stream
        self.dead_stream = dead_stream
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle * 1000)
        self.max_backoff = max_backoff
        self.write_interval = write_interval
        self.written = 0
        self._down = False
        # Own unacknowledged entries exist only between reading a batch and acknowledging it (a
        # failed batch, a restart): look for them then, not before every batch. Idle consumers'
        # entries are claimed every claim_idle / 2.
        self._check_mine = True
        self._mine_left = False
        self._next_claim = 0.0

    async def ensure_group(self) -> None:
        from redis.exceptions import ResponseError

        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self) -> list[tuple[str, Mapping[str, str]]]:
        # Our own unacknowledged entries first (a batch that failed, or from before a restart),
        # then entries another consumer left idle too long, then new ones.
        if self._check_mine:
            mine = await self.redis.xreadgroup(GROUP, self.consumer, {self.stream: "0"}, count=self.batch_size)
            entries = _entries(mine)
            if entries:
                # a full batch of them: there may be more; the acknowledgement must not stop the look
                self._mine_left = len(entries) >= self.batch_size
                return entries
            self._check_mine = False
        now = time.monotonic()
        if now >= self._next_claim:
            claimed = await self.redis.xautoclaim(self.stream, GROUP, self.consumer, self.claim_idle_ms,
                                                  start_id="0-0", count=self.batch_size)
            if claimed and claimed[1]:
                self._check_mine = True
                return [(str(i), f) for i, f in claimed[1] if f]
            self._next_claim = now + self.claim_idle_ms / 2000
        fresh = _entries(await self.redis.xreadgroup(GROUP, self.consumer, {self.stream: ">"},
                                                     count=self.batch_size, block=self.block_ms))
        if fresh:
            self._check_mine = True  # until they are acknowledged (_done)
        return fresh

    async def _write(self, batch: Batch) -> None:
        """The whole batch in one transaction, one statement batch per kind (runs())."""
        async with self.pool.acquire() as conn, conn.transaction():
            for kind, records in runs(batch.records):
                await WRITERS[kind](conn, [r.value for r in records])

    async def _write_each(self, batch: Batch) -> None:
        """After a data error: each record in a transaction of its own, in stream order; the ones
        that fail with a data error join the dead letters, the rest are written. Any other error
        (PostgreSQL gone meanwhile) propagates: the batch is retried whole, idempotently."""
        async with self.pool.acquire() as conn:
            for record in batch.records:
                try:
                    async with conn.transaction():
                        await WRITERS[record.kind](conn, [record.value])
                except Exception as exc:
                    if not is_data_error(exc):
                        raise
                    batch.dead.append((record.entry_id, record.fields, _error_text(exc, record.kind)))

    async def _done(self, batch: Batch) -> None:
        if batch.dead:
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry_id, fields, why in batch.dead:
                    pipe.xadd(self.dead_stream, {**fields, "entry": entry_id, "error": why})
                await pipe.execute()
            kinds = sorted({fields.get("kind", "")[:32] for _, fields, _ in batch.dead})
            log.error("record sink: %d outbox entr%s could not be written (%s); moved to %s", len(batch.dead),
                      "y" if len(batch.dead) == 1 else "ies", ", ".join(kinds), self.dead_stream)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, GROUP, *batch.ids)
            pipe.xdel(self.stream, *batch.ids)
            await pipe.execute()
        self._check_mine = self._mine_left  # what this consumer read is acknowledged
        self._mine_left = False

    async def step(self) -> int:
        """Read one batch, write it, acknowledge it; returns how many entries were moved."""
        entries = await self._read()
        if not entries:
            return 0
        batch = decode(entries)
        try:
            await self._write(batch)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            log.warning("record sink: a batch of %d failed on its data (%s); writing its entries one by one",
                        len(batch.records), type(exc).__name__)
            await self._write_each(batch)
        await self._done(batch)
        self.written += len(batch.ids)
        return len(batch.ids)

    async def run(self) -> None:
        await self.ensure_group()
        delay = 0.2
        while True:
            try:
                moved = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL or Redis away: wait and retry the same entries
                if "NOGROUP" in str(exc):
                    # Redis lost the stream and its group (a flush, a restart without persistence):
                    # without the group no entry written since would ever be read
                    with contextlib.suppress(Exception):
                        await self.ensure_group()
                        self._check_mine = True
                        log.warning("record sink: the outbox's consumer group was gone (Redis lost its data); "
                                    "created again")
                        await asyncio.sleep(0.2)  # never a busy loop, whatever Redis answers next
                        continue
                if not self._down:
                    self._down = True
                    log.warning("record sink: cannot write to the system of record (%s); outbox entries wait "
                                "in Redis and are retried", _short(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            if self._down:
                self._down = False
                log.info("record sink: writing again")
            delay = 0.2
            if 0 < moved < self.batch_size and self.write_interval:
                # Little was waiting: let the outbox collect (a call's records are off its path).
                await asyncio.sleep(self.write_interval)

    async def drain(self, timeout: float = 10.0) -> None:
        """Write what is waiting now (shutdown, tests)."""
        async with asyncio.timeout(timeout):
            while await self.pending():
                await self.step()

    async def pending(self) -> int:
        return int(await self.redis.xlen(self.stream))


def _entries(reply: Any) -> list[tuple[str, Mapping[str, str]]]:
    out: list[tuple[str, Mapping[str, str]]] = []
    for _stream, rows in reply or ():
        out.extend((str(i), f) for i, f in rows if f)
    return out


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text.replace("\n", " ")[:200]
