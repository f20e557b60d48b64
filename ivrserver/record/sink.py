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
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ivrserver.domain.menu_stats import CallPath
from ivrserver.record.rollup import mark_dirty
from ivrserver.record.rows import AuditRow, insert_audit, upsert_contacts, upsert_paths
from ivrserver.store.callpath import decode_event, encode_event
from ivrserver.store.contacts import contact_from_json, contact_to_json

if TYPE_CHECKING:
    import asyncpg
    import redis.asyncio as aioredis

    from ivrserver.domain.model import Contact

log = logging.getLogger(__name__)

GROUP = "record"
KINDS = ("contact", "path", "audit")


def revision(entry_id: str) -> int:
    """A stream id `ms-seq` as one ordered integer (fits a bigint until the year 2262)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms) * 1_000_000 + int(seq or 0)


def path_to_json(path: CallPath) -> str:
    return json.dumps({"call": path.call_id, "menu": path.menu, "version": path.version,
                       "started_at": path.started_at, "events": [encode_event(e) for e in path.events]},
                      separators=(",", ":"), ensure_ascii=False)


def path_from_json(raw: str) -> CallPath:
    d = json.loads(raw)
    events = tuple(e for e in (decode_event(r) for r in d["events"]) if e is not None)
    return CallPath(str(d["call"]), str(d["menu"]), str(d["version"]), float(d["started_at"]), events)


def audit_to_fields(row: AuditRow) -> dict[str, str]:
    return {"at": repr(row.at), "who": row.who, "role": row.role, "what": row.what, "target": row.target,
            "why": row.why, "allowed": "1" if row.allowed else "0", "source": row.source}


class Outbox:
    """The producer side: one XADD per record, in the round trip the caller already makes."""

    def __init__(self, redis: aioredis.Redis, stream: str) -> None:
        self.redis = redis
        self.stream = stream

    async def contact(self, contact: Contact) -> str:
        return str(await self.redis.xadd(self.stream, {"kind": "contact", "data": contact_to_json(contact)}))

    async def path(self, path: CallPath) -> str:
        return str(await self.redis.xadd(self.stream, {"kind": "path", "data": path_to_json(path)}))

    async def audit(self, entry_id: str, row: AuditRow) -> str:
        data = json.dumps({"id": entry_id, **audit_to_fields(row)}, separators=(",", ":"), ensure_ascii=False)
        return str(await self.redis.xadd(self.stream, {"kind": "audit", "data": data}))


@dataclass
class Batch:
    ids: list[str] = field(default_factory=list)
    contacts: list[tuple[Contact, int]] = field(default_factory=list)
    paths: list[CallPath] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    dead: list[tuple[str, Mapping[str, str], str]] = field(default_factory=list)


def decode(entries: Sequence[tuple[str, Mapping[str, str]]]) -> Batch:
    batch = Batch()
    for entry_id, fields in entries:
        batch.ids.append(entry_id)
        kind, data = fields.get("kind", ""), fields.get("data", "")
        try:
            if kind == "contact":
                contact = contact_from_json(data)
                if contact is None:
                    raise ValueError("unreadable contact")
                batch.contacts.append((contact, revision(entry_id)))
            elif kind == "path":
                batch.paths.append(path_from_json(data))
            elif kind == "audit":
                d = json.loads(data)
                batch.audit.append(AuditRow(id=str(d["id"]), at=float(d["at"]), who=str(d["who"]),
                                            role=str(d["role"]), what=str(d["what"]), target=str(d["target"]),
                                            why=str(d["why"]), allowed=d["allowed"] == "1",
                                            source=str(d.get("source", ""))))
            else:
                raise ValueError(f"unknown kind {kind[:32]!r}")
        except (ValueError, KeyError, TypeError) as exc:
            batch.dead.append((entry_id, fields, str(exc)[:200]))
    return batch


class RecordSink:
    """Moves outbox entries into PostgreSQL; several instances share the work (consumer group)."""

    def __init__(self, redis: aioredis.Redis, pool: asyncpg.Pool, *, stream: str, dead_stream: str,
                 consumer: str, batch_size: int = 500, block_ms: int = 1000, claim_idle: float = 30.0,
                 max_backoff: float = 5.0) -> None:
        self.redis = redis
        self.pool = pool
        self.stream = stream
        self.dead_stream = dead_stream
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle * 1000)
        self.max_backoff = max_backoff
        self.written = 0
        self._down = False

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
        mine = await self.redis.xreadgroup(GROUP, self.consumer, {self.stream: "0"}, count=self.batch_size)
        entries = _entries(mine)
        if entries:
            return entries
        claimed = await self.redis.xautoclaim(self.stream, GROUP, self.consumer, self.claim_idle_ms,
                                              start_id="0-0", count=self.batch_size)
        if claimed and claimed[1]:
            return [(str(i), f) for i, f in claimed[1] if f]
        fresh = await self.redis.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=self.batch_size,
                                            block=self.block_ms)
        return _entries(fresh)

    async def _write(self, batch: Batch) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            if batch.contacts:
                await upsert_contacts(conn, batch.contacts)
            if batch.paths:
                await upsert_paths(conn, batch.paths)
                await mark_dirty(conn, batch.paths)
            if batch.audit:
                await insert_audit(conn, batch.audit)

    async def _done(self, batch: Batch) -> None:
        if batch.dead:
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry_id, fields, why in batch.dead:
                    pipe.xadd(self.dead_stream, {**fields, "entry": entry_id, "error": why})
                await pipe.execute()
            log.error("record sink: %d outbox entr%s could not be decoded; moved to %s", len(batch.dead),
                      "y" if len(batch.dead) == 1 else "ies", self.dead_stream)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, GROUP, *batch.ids)
            pipe.xdel(self.stream, *batch.ids)
            await pipe.execute()

    async def step(self) -> int:
        """Read one batch, write it, acknowledge it; returns how many entries were moved."""
        entries = await self._read()
        if not entries:
            return 0
        batch = decode(entries)
        await self._write(batch)
        await self._done(batch)
        self.written += len(batch.ids)
        return len(batch.ids)

    async def run(self) -> None:
        await self.ensure_group()
        delay = 0.2
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL or Redis away: wait and retry the same entries
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
