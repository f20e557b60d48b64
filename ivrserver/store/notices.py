"""Proactive notices in Redis: the notice records, which call carries which notices, the customer's
pending notice calls (batching), the budget counters and a short per-customer lock.

Layout (names from `Keys`):
- `notice:{id}`                 STRING  JSON (domain.notices.to_dict); created with SET NX (the id is
                                        a hash of the key: exactly once); final ones expire after hot_days
- `notice:call:{call id}`       SET     notice ids the call carries
- `notices:pending:{customer}`  HASH    call id → due of notice calls not dialed yet
- `notices:budget:{customer}`   ZSET    call id → planned epoch of each counted notice call
- `notices:lock:{customer}`     STRING  token of the instance scheduling / cancelling (PX, released by
                                        compare-and-delete)
- `notices:sms:due`             ZSET    notice id → when its held SMS may be sent (the allowed hours)
- `notices:sms:leased`          ZSET    notice id → until when the instance sending it holds it
- `notices:open`                ZSET    notice call id → from when the reconcile sweep watches it (its due
                                        time at first; looked at a grace later); dropped once its call
                                        and its notices are final
The calls themselves are customer-first callbacks (store/callbacks.py): their lease, placed marker
and ChannelId make each dial at-most-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import redis.asyncio as aioredis

from ivrserver.domain.notices import PENDING, Notice, from_dict, to_dict
from ivrserver.store.keys import Keys

DAY = 86400

# KEYS: notice, sms due; ARGV: json, due, id. The record and its place in the due set at once.
_CREATE_HELD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
"""

# KEYS: due, leased; ARGV: now, lease until, limit. Leases run out (their sender died) are taken
# over first, then due ones are moved to leased: each id is held by one claimer at a time.
_CLAIM_SMS = """
local out = {}
local limit = tonumber(ARGV[3])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, limit)) do
  redis.call('ZADD', KEYS[2], ARGV[2], id)
  out[#out + 1] = id
end
if #out < limit then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit - #out)) do
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    out[#out + 1] = id
  end
end
return out
"""

# KEYS: notice; ARGV: expected state, expected number of outcomes, expected created_at, new json,
# ttl (0: none). Compare-and-set: the notice is replaced only if nobody changed it since it was
# read (every change appends an outcome or leaves the pending state), so of two writers racing on
# one notice (on_placed, "press 1", the reconcile sweep, of any instance) exactly one wins.
_REPLACE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local cur = cjson.decode(raw)
local outcomes = cur['outcomes']
local n = 0
if type(outcomes) == 'table' then n = #outcomes end
if cur['state'] ~= ARGV[1] or n ~= tonumber(ARGV[2]) or tonumber(cur['created_at']) ~= tonumber(ARGV[3]) then
  return 0
end
if tonumber(ARGV[5]) > 0 then
  redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[5])
else
  redis.call('SET', KEYS[1], ARGV[4])
end
return 1
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LockBusy(RuntimeError):
    """Another instance holds the customer's notice lock for longer than we wait."""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json(n: Notice) -> str:
    return json.dumps(to_dict(n), separators=(",", ":"), ensure_ascii=False)


class NoticeStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, hot_days: int = 30, lock_wait: float = 10.0) -> None:
        self.redis = redis
        self.keys = keys
        self.hot_seconds = hot_days * DAY
        self.lock_wait = lock_wait  # how long `locked` waits for another holder before LockBusy
        self._unlock = redis.register_script(_UNLOCK)
        self._create_held = redis.register_script(_CREATE_HELD)
        self._claim_sms = redis.register_script(_CLAIM_SMS)
        self._replace = redis.register_script(_REPLACE)

    # ------------------------------------------------------------------ records
    async def get(self, notice_id: str) -> Notice | None:
        raw = await self.redis.get(self.keys.notice(notice_id))
        return None if raw is None else from_dict(json.loads(raw))

    async def get_many(self, ids: Iterable[str]) -> list[Notice]:
        ids = list(ids)
        if not ids:
            return []
        raws = await self.redis.mget([self.keys.notice(i) for i in ids])
        return [from_dict(json.loads(r)) for r in raws if r is not None]

    async def create(self, n: Notice) -> bool:
        """Store a new notice; False when its id (its key) exists already. A notice about a case is
        listed under the case (what a reopen cancels)."""
        ttl = None if n.state in PENDING else self.hot_seconds
        created = bool(await self.redis.set(self.keys.notice(n.id), _json(n), nx=True, ex=ttl))
        if created and n.case_id:
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(self.keys.notices_of_case(n.case_id), n.key)
            pipe.expire(self.keys.notices_of_case(n.case_id), self.hot_seconds)
            await pipe.execute()
        return created

    async def forget(self, notice_id: str) -> None:
        """Delete a notice record (under the customer's lock: one written for a call it did not
        get onto, or whose call was never created)."""
        await self.redis.delete(self.keys.notice(notice_id))

    async def case_notice_keys(self, case_id: str) -> list[str]:
        """Keys of the notices about a case (any state; the last hot_days)."""
        return sorted(_s(k) for k in await self.redis.smembers(self.keys.notices_of_case(case_id)))

    async def save(self, n: Notice) -> None:
        """Overwrite a notice (under the customer's lock, or its call's outcome); final ones expire."""
        ttl = None if n.state in PENDING else self.hot_seconds
        await self.redis.set(self.keys.notice(n.id), _json(n), ex=ttl)

    async def replace(self, old: Notice, new: Notice) -> bool:
        """Overwrite `old` with `new` only if the stored notice is still `old` (same state, same
        number of outcomes, same creation); False when it changed meanwhile or is gone."""
        ttl = 0 if new.state in PENDING else self.hot_seconds
        return bool(await self._replace(keys=[self.keys.notice(old.id)],
                                        args=[old.state.value, len(old.outcomes), repr(float(old.created_at)),
                                              _json(new), ttl]))

    # ------------------------------------------------------------------ calls
    async def call_notices(self, call_id: str) -> list[str]:
        return sorted(_s(i) for i in await self.redis.smembers(self.keys.notice_call(call_id)))

    async def attach(self, call_id: str, notice_id: str, customer_id: str, due: float) -> None:
        """The call carries this notice (too) and is pending at `due`; the reconcile sweep looks
        at it once it is due (NX: a call already watched keeps its time)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(self.keys.notice_call(call_id), notice_id)
        pipe.hset(self.keys.notice_pending_calls(customer_id), call_id, repr(float(due)))
        pipe.zadd(self.keys.notices_open_calls(), {call_id: float(due)}, nx=True)
        await pipe.execute()

    async def attach_due(self, call_id: str, customer_id: str, due: float) -> None:
        """The pending call's next attempt is due at `due` (a retry): the sweep looks at it then."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.notice_pending_calls(customer_id), call_id, repr(float(due)))
        pipe.zadd(self.keys.notices_open_calls(), {call_id: float(due)}, xx=True)
        await pipe.execute()

    async def detach(self, call_id: str, notice_id: str) -> None:
        await self.redis.srem(self.keys.notice_call(call_id), notice_id)

    async def pending_calls(self, customer_id: str) -> list[tuple[str, float]]:
        raw = await self.redis.hgetall(self.keys.notice_pending_calls(customer_id))
        return [(_s(k), float(_s(v))) for k, v in raw.items()]

    async def call_settled(self, customer_id: str, call_id: str, *, close: bool = False) -> None:
        """The call is final (or dialing for good): no more notices ride on it; its set expires.
        `close`: its notices are final too, the reconcile sweep forgets it (close_call)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.keys.notice_pending_calls(customer_id), call_id)
        pipe.expire(self.keys.notice_call(call_id), self.hot_seconds)
        if close:
            pipe.zrem(self.keys.notices_open_calls(), call_id)
        await pipe.execute()

    async def open_calls(self, until: float, limit: int) -> list[str]:
        """Watched notice calls whose time is `until` or earlier, the oldest first."""
        raw = await self.redis.zrangebyscore(self.keys.notices_open_calls(), "-inf", repr(float(until)),
                                             start=0, num=limit)
        return [_s(i) for i in raw]

    async def look_again(self, call_id: str, at: float) -> None:
        """The sweep watches this call again from `at` (only if it is still watched)."""
        await self.redis.zadd(self.keys.notices_open_calls(), {call_id: float(at)}, xx=True)

    async def close_call(self, call_id: str) -> None:
        """The call and every notice it carries are final: the sweep forgets it."""
        await self.redis.zrem(self.keys.notices_open_calls(), call_id)

    async def open_count(self) -> int:
        return int(await self.redis.zcard(self.keys.notices_open_calls()))

    # ------------------------------------------------------------------ held SMS
    async def create_held_sms(self, n: Notice, due: float) -> bool:
        """A new notice whose SMS waits until `due`, and its place in the due set, in one step
        (never a record nobody will send); False when its id exists already."""
        created = bool(await self._create_held(keys=[self.keys.notice(n.id), self.keys.notices_sms_due()],
                                               args=[_json(n), repr(float(due)), n.id]))
        if created and n.case_id:
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(self.keys.notices_of_case(n.case_id), n.key)
            pipe.expire(self.keys.notices_of_case(n.case_id), self.hot_seconds)
            await pipe.execute()
        return created

    async def claim_due_sms(self, now: float, lease_until: float, limit: int) -> list[str]:
        raw = await self._claim_sms(keys=[self.keys.notices_sms_due(), self.keys.notices_sms_leased()],
                                    args=[repr(float(now)), repr(float(lease_until)), int(limit)])
        return [_s(i) for i in raw]

    async def sms_done(self, notice_id: str) -> None:
        """The held SMS was sent (or found moot): release it."""
        await self.redis.zrem(self.keys.notices_sms_leased(), notice_id)

    async def sms_cancel(self, notice_id: str) -> bool:
        """Take a held SMS out before it is claimed; False when it is being sent (or was)."""
        return bool(await self.redis.zrem(self.keys.notices_sms_due(), notice_id))

    async def sms_counts(self) -> tuple[int, int]:
        """(held SMS waiting, being sent)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.notices_sms_due())
        pipe.zcard(self.keys.notices_sms_leased())
        due, leased = await pipe.execute()
        return int(due), int(leased)

    # ------------------------------------------------------------------ budget
    async def counted(self, customer_id: str, since: float) -> list[float]:
        """Planned times of the customer's counted notice calls from `since` on (older ones dropped)."""
        key = self.keys.notice_budget(customer_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", f"({since!r}")
        pipe.zrange(key, 0, -1, withscores=True)
        _, rows = await pipe.execute()
        return [float(score) for _, score in rows]

    async def count(self, customer_id: str, call_id: str, at: float, keep_seconds: float) -> None:
        key = self.keys.notice_budget(customer_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(key, {call_id: at})
        pipe.expire(key, int(keep_seconds) + 1, nx=True)  # GT below needs a TTL to compare with
        pipe.expireat(key, int(at + keep_seconds) + 1, gt=True)
        await pipe.execute()

    async def uncount(self, customer_id: str, call_id: str) -> None:
        """A call cancelled before it dialed gives its budget back."""
        await self.redis.zrem(self.keys.notice_budget(customer_id), call_id)

    # ------------------------------------------------------------------ lock
    @contextlib.asynccontextmanager
    async def locked(self, customer_id: str, *, hold_ms: int = 15000, wait: float | None = None) -> AsyncIterator[None]:
        """One scheduler/canceller of this customer's notices at a time, across instances (the lock
        of an instance that died holding it goes after `hold_ms`)."""
        key = self.keys.notice_lock(customer_id)
        token = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.lock_wait if wait is None else wait)
        delay = 0.005
        while not await self.redis.set(key, token, nx=True, px=hold_ms):
            if loop.time() > deadline:
                raise LockBusy(f"notices of customer {customer_id} are being changed elsewhere; try again")
            await asyncio.sleep(delay)
            delay = min(0.1, delay * 2)
        try:
            yield
        finally:
            await asyncio.shield(self._unlock(keys=[key], args=[token]))
