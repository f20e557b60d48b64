"""The case follow-up's dead letters in Redis: one handler's part of one case change it gave up on.

Layout (names from `Keys`):
- `casechange:failed:{entry}`     HASH   handler → JSON {n, first, last, error}: the attempt budget
                                         of a change still being retried (every instance sees it)
- `casefollowup:dead`             ZSET   dead letter ids ("<entry id>.<handler>"), scored by when they died
- `casefollowup:dead:{id}`        HASH   one dead letter (fields below); expires after hot_days

A dead letter keeps the change's stream entry (`change`: its fields as JSON), so a supervisor's
retry puts that change back on the stream for that handler alone (`only`), with its original
event id (`event_id`): the handlers' idempotency by event id holds across the retry. The retry is
one script: the first caller takes the letter off the list and re-queues it, any other gets None.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from ivrserver.store.indexed import newest_first
from ivrserver.store.keys import Keys

DAY = 86400
HANDLER_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
ENTRY_RE = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
ID_RE = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}\.[a-z][a-z0-9_-]{0,39}$")
MAX_ERROR = 300
REQUEUED = ("event_id", "only")  # the fields a retry adds to the change's entry

# KEYS: index, record, stream   ARGV: id
# Returns the re-queued entry's id, or false when the letter is not (or no longer) dead.
_RETRY = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
local rec = redis.call('HMGET', KEYS[2], 'change', 'event_id', 'handler')
redis.call('DEL', KEYS[2])
if not rec[1] then return false end
local fields = cjson.decode(rec[1])
local args = {}
for k, v in pairs(fields) do
  if k ~= 'event_id' and k ~= 'only' then
    args[#args + 1] = k
    args[#args + 1] = tostring(v)
  end
end
args[#args + 1] = 'event_id'
args[#args + 1] = rec[2]
args[#args + 1] = 'only'
args[#args + 1] = rec[3]
return redis.call('XADD', KEYS[3], '*', unpack(args))
"""

# KEYS: the change's failures hash   ARGV: handler, now, error, ttl
# One more failed attempt of a handler on a change, read and written in one step (two instances
# around a claim never count one attempt short). Returns the JSON stored.
_COUNT_FAILURE = """
local n, first = 0, tonumber(ARGV[2])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local ok, d = pcall(cjson.decode, old)
  if ok and type(d) == 'table' and tonumber(d.n) and tonumber(d.first) then
    n, first = tonumber(d.n), tonumber(d.first)
  end
end
local out = cjson.encode({n = n + 1, first = first, last = tonumber(ARGV[2]), error = ARGV[3]})
redis.call('HSET', KEYS[1], ARGV[1], out)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return out
"""


@dataclass(frozen=True)
class Failures:
    """A handler's failed attempts on one change so far."""

    attempts: int
    first_at: float
    last_at: float
    error: str

    def to_json(self) -> str:
        return json.dumps({"n": self.attempts, "first": self.first_at, "last": self.last_at, "error": self.error},
                          separators=(",", ":"), ensure_ascii=False)


def failures_from_json(text: str | None) -> Failures | None:
    """None for nothing recorded or a value that is not ours (the budget then starts again)."""
    if not text:
        return None
    try:
        d = json.loads(text)
        return Failures(int(d["n"]), float(d["first"]), float(d["last"]), str(d.get("error", "")))
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class DeadLetter:
    id: str  # "<entry id>.<handler>"
    entry: str  # the stream entry it came from
    event_id: str  # the change's own id (the entry id, or the original one for a re-queued change)
    handler: str
    kind: str
    case_id: str
    customer_id: str
    error: str
    attempts: int
    first_at: float
    last_at: float
    dead_at: float
    reason: str  # "attempts", "age" or "no_handler"

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "event_id": self.event_id, "handler": self.handler, "kind": self.kind,
                "case_id": self.case_id, "customer_id": self.customer_id, "error": self.error,
                "attempts": self.attempts, "first_at": self.first_at, "last_at": self.last_at,
                "dead_at": self.dead_at, "reason": self.reason}


_FIELDS = ("id", "entry", "event_id", "handler", "kind", "case_id", "customer_id", "error", "attempts", "first_at",
           "last_at", "dead_at", "reason")


def _letter(values: Mapping[str, str]) -> DeadLetter:
    return DeadLetter(id=values["id"], entry=values["entry"], event_id=values["event_id"], handler=values["handler"],
                      kind=values.get("kind", ""), case_id=values.get("case_id", ""),
                      customer_id=values.get("customer_id", ""), error=values.get("error", ""),
                      attempts=int(values.get("attempts") or 0), first_at=float(values.get("first_at") or 0),
                      last_at=float(values.get("last_at") or 0), dead_at=float(values.get("dead_at") or 0),
                      reason=values.get("reason", ""))


def letter_id(entry_id: str, handler: str) -> str:
    return f"{entry_id}.{handler}"


def case_ids(fields: Mapping[str, str]) -> tuple[str, str]:
    """(case id, customer id) of a change entry, "" where it cannot be read (the list shows what it can)."""
    try:
        case = json.loads(fields.get("case") or "{}")
        return str(case.get("id", ""))[:64], str(case.get("customer_id", ""))[:64]
    except (ValueError, AttributeError):
        return "", ""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class DeadLetters:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, keep_days: int = 30) -> None:
        if keep_days < 1:
            raise ValueError("keep_days must be at least 1")
        self.redis = redis
        self.keys = keys
        self.keep_seconds = keep_days * DAY
        self._retry = redis.register_script(_RETRY)
        self._count_failure = redis.register_script(_COUNT_FAILURE)

    async def count_failure(self, entry_id: str, handler: str, *, now: float, error: str, ttl: int) -> Failures:
        """One more failed attempt of `handler` on the change `entry_id` (atomic); the budget so far."""
        raw = await self._count_failure(keys=[self.keys.case_change_failures(entry_id)],
                                        args=[handler, repr(now), error[:MAX_ERROR], ttl])
        counted = failures_from_json(raw.decode() if isinstance(raw, bytes) else raw)
        assert counted is not None  # the script stores what failures_from_json reads
        return counted

    def bury(self, pipe: Any, *, entry_id: str, event_id: str, handler: str, fields: Mapping[str, str],
             failures: Failures, now: float, reason: str) -> str:
        """Queue on `pipe` (a MULTI the caller executes, with the handler's done mark) the writes of
        one dead letter; returns its id. Writing it again (a crash before the ack) changes nothing."""
        ident = letter_id(entry_id, handler)
        change = {k: v for k, v in fields.items() if k not in REQUEUED}
        case_id, customer_id = case_ids(fields)
        record = self.keys.case_followup_dead_letter(ident)
        pipe.hset(record, mapping={
            "id": ident, "entry": entry_id, "event_id": event_id, "handler": handler,
            "kind": fields.get("kind", "")[:64], "case_id": case_id, "customer_id": customer_id,
            "error": failures.error[:MAX_ERROR],
            "attempts": str(failures.attempts), "first_at": repr(failures.first_at), "last_at": repr(failures.last_at),
            "dead_at": repr(now), "reason": reason,
            "change": json.dumps(change, separators=(",", ":"), ensure_ascii=False)})
        pipe.expire(record, self.keep_seconds)
        pipe.zadd(self.keys.case_followup_dead(), {ident: now})
        return ident

    async def retry(self, ident: str) -> str | None:
        """Put the letter's change back on the stream for its handler alone: the new entry's id, or
        None when `ident` is not a dead letter (never was, expired, or retried already)."""
        if not ID_RE.fullmatch(ident):
            return None
        result = await self._retry(keys=[self.keys.case_followup_dead(), self.keys.case_followup_dead_letter(ident),
                                         self.keys.case_changes()], args=[ident])
        return _s(result) if result else None

    async def get(self, ident: str) -> DeadLetter | None:
        values = await self.redis.hmget(self.keys.case_followup_dead_letter(ident), list(_FIELDS))  # type: ignore[misc]
        if values[0] is None:
            return None
        return _letter({f: _s(v) for f, v in zip(_FIELDS, values, strict=True) if v is not None})

    async def list(self, *, limit: int = 100) -> list[DeadLetter]:
        """The most recently dead first; letters past their keep time leave the index here."""
        out: list[DeadLetter] = []
        index, record = self.keys.case_followup_dead(), self.keys.case_followup_dead_letter
        async for values in newest_first(self.redis, index, record, _FIELDS, scan=max(limit * 2, 1000)):
            out.append(_letter(values))
            if len(out) >= limit:
                break
        return out

    async def count(self) -> int:
        return int(await self.redis.zcard(self.keys.case_followup_dead()))
