"""The audit log in Redis: an append-only stream of who read or changed what, allowed or not.

Layout (all names from `Keys`):
- `audit()`   Stream, append-only: who, role, what, target, why, allowed, at, source.
- `outbox()`  Stream: with PostgreSQL configured (`Keys.records`) every entry is also appended
              there, in the same script, for record/sink.py (the `audit` table).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis.asyncio as aioredis

from ivrserver.store import scripts
from ivrserver.store.keys import Keys

# KEYS: audit stream, outbox; ARGV: the outbox record's JSON after its opening brace (the entry id
# goes first, known only here), then the entry's field/value pairs.
_APPEND_RECORDED = scripts.declare("""
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('XADD', KEYS[2], '*', 'kind', 'audit', 'data', '{"id":"' .. id .. '",' .. string.sub(ARGV[1], 2))
return id
""")


@dataclass(frozen=True)
class AuditEntry:
    id: str
    at: float
    who: str
    role: str
    what: str
    target: str
    why: str
    allowed: bool
    source: str


_STREAM_ID_MAX = 2**64 - 1


def _older_than(before: str) -> str | None:
    """The XREVRANGE upper bound for entries older than stream id `before`, or None when no id is
    older (0-0). Ids past Redis' 64-bit parts (which Redis refuses) mean "every entry"."""
    ms_text, _, seq_text = before.partition("-")
    if not (ms_text.isascii() and ms_text.isdigit() and seq_text.isascii() and seq_text.isdigit()):
        raise ValueError(f"not a stream id: {before!r}")
    ms, seq = int(ms_text), int(seq_text)
    if ms > _STREAM_ID_MAX:
        return "+"
    if seq > _STREAM_ID_MAX:
        return f"{ms}-{_STREAM_ID_MAX}"
    if ms == 0 and seq == 0:
        return None
    return f"({ms}-{seq}"


class AuditLog:
    """Append-only: this class has no way to change or remove an entry."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def append(self, *, who: str, role: str, what: str, target: str, why: str, allowed: bool,
                     at: float, source: str = "") -> str:
        fields = {"at": repr(at), "who": who[:64], "role": role[:16], "what": what[:64],
                  "target": target[:128], "why": why[:200], "allowed": "1" if allowed else "0",
                  "source": source[:64]}
        outbox = self.keys.outbox_if_recording()
        if outbox is None:
            entry_id = await self.redis.xadd(self.keys.audit(), fields)  # type: ignore[arg-type]
            return str(entry_id)
        # with a system of record: the entry and its outbox record in one script (one round trip)
        record = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        pairs = [x for item in fields.items() for x in item]
        entry_id = await scripts.script(self.redis, _APPEND_RECORDED)(
            keys=[self.keys.audit(), outbox], args=[record, *pairs])
        return str(entry_id)

    async def recent(self, *, count: int = 100, before: str | None = None) -> list[AuditEntry]:
        """Newest first; `before` is an entry id (`<ms>-<seq>`) to page backwards from (exclusive)."""
        upper = _older_than(before) if before else "+"
        if upper is None:
            return []
        rows = await self.redis.xrevrange(self.keys.audit(), max=upper, min="-",
                                          count=max(1, min(count, 1000)))
        return [
            AuditEntry(id=entry_id, at=float(f.get("at", "0")), who=f.get("who", ""), role=f.get("role", ""),
                       what=f.get("what", ""), target=f.get("target", ""), why=f.get("why", ""),
                       allowed=f.get("allowed") == "1", source=f.get("source", ""))
            for entry_id, f in rows
        ]

    async def length(self) -> int:
        return int(await self.redis.xlen(self.keys.audit()))
