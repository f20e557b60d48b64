"""The audit log in Redis: an append-only stream of who read or changed what, allowed or not.

Layout (all names from `Keys`):
- `audit()`   Stream, append-only: who, role, what, target, why, allowed, at, source. No TTL (one
              key for the whole log). Redis-only, it is the only copy and is never trimmed; with
              PostgreSQL configured (`Keys.records`), the `audit` table keeps every entry and the
              stream only the last `hot_days` (`redis.hot_days`): each append trims it by age
              (XADD MINID, by the Redis clock as the entry ids are).
- `outbox()`  Stream: with PostgreSQL configured (`Keys.records`) every entry is also appended
              there, in the same script, for record/sink.py (the `audit` table).
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from ivrserver.domain.model import AuditEntry
from ivrserver.store import scripts
from ivrserver.store.keys import Keys

DAY = 86400
DEFAULT_HOT_DAYS = 30

# KEYS: audit stream, outbox; ARGV: milliseconds of entries the stream keeps, the outbox record's
# JSON after its opening brace (the entry id goes first, known only here), then the entry's
# field/value pairs. Entries older than the kept time are trimmed in the same XADD (exact MINID:
# in steady state each append removes about one entry; the entry ids are Redis clock times).
_APPEND_RECORDED = scripts.declare("""
local t = redis.call('TIME')
local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
if oldest < 0 then oldest = 0 end
local id = redis.call('XADD', KEYS[1], 'MINID', string.format('%d', oldest), '*', unpack(ARGV, 3))
redis.call('XADD', KEYS[2], '*', 'kind', 'audit', 'data', '{"id":"' .. id .. '",' .. string.sub(ARGV[2], 2))
return id
""")


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
    """Append-only: this class has no way to change or remove an entry. With a system of record
    (`keys.records`) the stream keeps `hot_days` of entries (PostgreSQL keeps them all); without
    one nothing is ever trimmed."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, hot_days: float = DEFAULT_HOT_DAYS) -> None:
        if hot_days <= 0:
            raise ValueError("hot_days must be more than 0")
        self.redis = redis
        self.keys = keys
        self.hot_days = hot_days

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
            keys=[self.keys.audit(), outbox], args=[int(self.hot_days * DAY * 1000), record, *pairs])
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
