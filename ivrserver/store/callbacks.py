"""The callback scheduler's Redis side, shared by every ivrserver instance.

Layout (all names from `Keys`):
- `callback:{id}`             STRING  the callback record as JSON (domain.callbacks.to_dict)
- `callbacks:all`             ZSET    every callback id, scored by creation time (listing)
- `callbacks:due`             ZSET    waiting jobs, scored by the epoch they are due
- `callbacks:leased`          ZSET    claimed jobs, scored by the epoch their lease expires
- `callbacks:leaseinfo`       HASH    id → "<token> <due> <claimer>" of the current lease
- `callback:placed:{id}:{n}`  STRING  SET NX when attempt n is about to be dialed (who, when)
- `callback:seen:{id}:{n}`    STRING  what an AMI observer saw of channel `<id>-<n>` (while the
                                      marker exists; expires after `seen_ttl_seconds`)
- `callbacks:observers`       HASH    instance → "<since> <through>" of its AMI observer

A job is in exactly one of due / leased (or neither once final). Claim moves due → leased
atomically (Lua), so concurrent claimers never get the same job; a reaper moves expired leases
back to due with their original due score (at-least-once). Every write by a lease holder checks
its token, so a holder whose lease expired and was re-claimed cannot overwrite the new holder.
The placed marker makes the dial itself at-most-once per attempt, across restarts.
With a system of record (`Keys.records`), a record written in a final state (done, failed,
cancelled) is also appended to the outbox in the same script as its write (record/sink.py:
callbacks_finished, notifications; the sink's upsert makes a repeat harmless), and PostgreSQL being
its home, Redis keeps it only `hot_days` (EXPIRE): `callbacks:expiring` (ZSET id → expiry epoch,
itself expiring) tells which index entries to drop once their record is gone — every final write
drops up to 100 of them, and a listing drops the ones it finds without a record. Recent finished
callbacks stay listed for `hot_days`. Redis-only, finished records are kept (the only copy).
Unleased updates (API reschedule / cancel) compare the record's version and refuse leased jobs.

Round trips of one placement: the claim returns the records with the leases (one script call for
a whole batch; the record cannot change while leased, as every other writer refuses leased jobs
or checks the token), `start_dial` saves the record as dialing, takes the placed marker and
refreshes the lease in one token-guarded script, and the outcome is one settle. The claim and
start_dial scripts touch record / marker keys built from ids (passed as a prefix): fine on a
single Redis or a replicated one, not on Redis Cluster (neither were the other scripts).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from ivrserver.domain.callbacks import TERMINAL_STATES, Callback, CallbackState, ObserverLink, from_dict
from ivrserver.store.keys import Keys
from ivrserver.store.leases import CLAIM, REAP, TOKEN_CHECK

log = logging.getLogger(__name__)


def lease_info_key(keys: Keys) -> str:
    return keys.callbacks_lease_info()


# Every script that writes a record ends its ARGV with four more: hot seconds ('' = not a final
# record, or Redis-only: nothing more to do), outbox, expiring ZSET, index (key names: see above).
# finished(record key, id, json): the written final record expires, goes to the outbox, and index
# entries of records already expired are dropped (at most 100 per write).
_FINISHED = """
local function finished(record, id, json)
  local n = #ARGV
  local ttl = ARGV[n - 3]
  if ttl == '' then return end
  local expiring, index = ARGV[n - 1], ARGV[n]
  local now = tonumber(redis.call('TIME')[1])
  redis.call('EXPIRE', record, ttl)
  redis.call('ZADD', expiring, now + tonumber(ttl), id)
  local gone = redis.call('ZRANGEBYSCORE', expiring, '-inf', now, 'LIMIT', 0, 100)
  if #gone > 0 then
    redis.call('ZREM', index, unpack(gone))
    redis.call('ZREM', expiring, unpack(gone))
  end
  redis.call('EXPIRE', expiring, tonumber(ttl) + 86400)
  redis.call('XADD', ARGV[n - 2], '*', 'kind', 'callback', 'data', json)
end
"""

# KEYS: record, index, due   ARGV: id, json, created score, due score ('' = not due), finished args
_CREATE = _FINISHED + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1]) end
finished(KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: due, leased, leaseinfo
# ARGV: now, lease seconds, limit, claimer, token prefix, record key prefix ('' = no records)
# Returns id, token, due score, record JSON ('' = missing or not asked for) per claimed job, then
# the earliest due score still waiting and the earliest lease expiry ('' = none): the scheduler
# sleeps until then instead of polling.
_CLAIM = CLAIM + """
local out = {}
local next_due = claim(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], function(id, token, score)
  local record = ''
  if ARGV[6] ~= '' then record = redis.call('GET', ARGV[6] .. id) or '' end
  out[#out + 1] = id
  out[#out + 1] = token
  out[#out + 1] = score
  out[#out + 1] = record
end)
out[#out + 1] = next_due
out[#out + 1] = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2] or ''
return out
"""

# KEYS: due, leased, leaseinfo   ARGV: now, limit
_REAP = REAP + """
return reap(ARGV[1], tonumber(ARGV[2]))
"""

# KEYS: due, leased, leaseinfo, record
# ARGV: id, token, json ('' = keep), next due ('' = none), finished args
_SETTLE = _FINISHED + TOKEN_CHECK + """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[4], ARGV[3])
  finished(KEYS[4], ARGV[1], ARGV[3])
end
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1]) end
return 1
"""

# KEYS: due, leased, leaseinfo, record   ARGV: id, token, json, finished args
_SAVE = _FINISHED + TOKEN_CHECK + """
redis.call('SET', KEYS[4], ARGV[3])
finished(KEYS[4], ARGV[1], ARGV[3])
return 1
"""

# KEYS: due, leased, leaseinfo, record, placed marker
# ARGV: id, token, json, marker holder, marker ttl seconds, new lease expiry
# Steps 2 and 3 of a placement in one go, only while the lease is held: save the record (dialing
# attempt N), SET NX the marker of attempt N, and refresh the lease for the dial.
# 0 = lease lost (nothing written), 1 = marker taken: dial, 2 = the marker was already taken.
_START_DIAL = TOKEN_CHECK + """
redis.call('SET', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[2], 'XX', ARGV[6], ARGV[1])
if redis.call('SET', KEYS[5], ARGV[4], 'NX', 'EX', tonumber(ARGV[5])) then return 1 end
return 2
"""

# KEYS: due, leased, leaseinfo, record, placed marker
# ARGV: id, token, json, dead holder, new holder, new lease expiry
# A takeover's re-dial of an attempt a dead holder marked but never dialed: the marker passes
# from the dead holder to the new one (so the dead one, were it only stalled, finds it is no
# longer its own), the record is saved and the lease refreshed, all only while the lease is held.
# 0 = lease lost, 1 = marker taken over: dial, 2 = the marker is not the dead holder's any more.
_TAKE_OVER_DIAL = TOKEN_CHECK + """
if redis.call('GET', KEYS[5]) ~= ARGV[4] then return 2 end
redis.call('SET', KEYS[5], ARGV[5], 'KEEPTTL')
redis.call('SET', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[2], 'XX', ARGV[6], ARGV[1])
return 1
"""

# KEYS: placed marker, seen   ARGV: what was seen, ttl seconds
# Only channels of ours: an attempt whose marker exists (a channel id of that shape that is not a
# callback's, or one long finished, writes nothing).
_OBSERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
"""

# KEYS: due, leased, leaseinfo   ARGV: id, token, new expiry
_RENEW = TOKEN_CHECK + """
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[1])
return 1
"""

# KEYS: record, due, leased   ARGV: id, expected version, json, next due ('' = not due), finished args
_UPDATE = _FINISHED + """
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 'leased' end
local cur = redis.call('GET', KEYS[1])
if not cur then return 'missing' end
if tostring(cjson.decode(cur)['version']) ~= ARGV[2] then return 'conflict' end
redis.call('SET', KEYS[1], ARGV[3])
finished(KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '' then redis.call('ZREM', KEYS[2], ARGV[1]) else redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1]) end
return 'ok'
"""


# KEYS: placed marker   ARGV: holder
_UNMARK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Claim:
    """A leased job: only the holder of `token` may save, reschedule or complete it.

    `loaded` tells whether the claim brought the record along (`record`, None if it is missing);
    a leased record can only be changed by the lease holder, so it is as fresh as a GET."""

    callback_id: str
    token: str
    due: float
    record: Callback | None = field(default=None, compare=False, repr=False)
    loaded: bool = field(default=False, compare=False, repr=False)


@dataclass(frozen=True)
class ClaimBatch:
    """What one claim round trip returns: the jobs leased, and when the scheduler must look again
    (every instance's jobs and leases, as the shared ZSETs hold them at that moment)."""

    claims: list[Claim]
    next_due: float | None  # the earliest job still waiting; None: the due queue is empty
    next_expiry: float | None  # the earliest lease expiry; None: nothing is leased


class DialStart(enum.Enum):
    MARKED = 1  # record saved as dialing, marker taken, lease refreshed: dial now
    ALREADY_PLACED = 2  # record saved as dialing, but someone took this attempt's marker before
    LEASE_LOST = 0  # nothing written


class UpdateResult(enum.StrEnum):
    OK = "ok"
    LEASED = "leased"  # being placed right now by a scheduler
    CONFLICT = "conflict"  # someone changed it since it was read
    MISSING = "missing"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_FIELDS: dict[type, tuple[str, ...]] = {}


def _plain(value: Any) -> Any:
    """What `dataclasses.asdict` makes of a field value, without its deep copies (the records are
    frozen and JSON-encoded at once). Enums are StrEnums: json writes them as their values."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    cls = type(value)
    names = _FIELDS.get(cls)
    if names is None and dataclasses.is_dataclass(cls):
        names = _FIELDS.setdefault(cls, tuple(f.name for f in dataclasses.fields(cls)))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    raise TypeError(f"unexpected {cls.__name__} in a callback record: {value!r}")


def _json(cb: Callback) -> str:
    """The JSON of `domain.callbacks.to_dict(cb)` (byte for byte; a test holds it to that), at a
    fraction of the cost: it is written twice per placement."""
    return json.dumps(_plain(cb), separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _num(x: float) -> str:
    return repr(float(x))


def _score(value: Any) -> float | None:
    text = _s(value)
    return float(text) if text else None


DAY = 86400
NOT_FINISHED = ("", "", "", "")


class CallbackStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, placed_ttl_seconds: int = 30 * 86400,
                 replicated: Callable[[], Awaitable[bool]] | None = None, hot_days: int = 30,
                 seen_ttl_seconds: int = 2 * DAY) -> None:
        """`hot_days` (redis.hot_days): how long a finished record stays in Redis with a system of
        record (`keys.records`); Redis-only it stays."""
        if hot_days < 1:
            raise ValueError("hot_days must be at least 1")
        self.redis = redis
        self.keys = keys
        self.hot_seconds = hot_days * DAY
        self.placed_ttl_seconds = placed_ttl_seconds
        self.seen_ttl_seconds = seen_ttl_seconds
        # Under Sentinel: waits until a replica holds what was just written (store/client.wait_for_replica).
        self.replicated = replicated
        self.unreplicated_marks = 0
        self._create = redis.register_script(_CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._reap = redis.register_script(_REAP)
        self._settle = redis.register_script(_SETTLE)
        self._save = redis.register_script(_SAVE)
        self._renew = redis.register_script(_RENEW)
        self._start_dial = redis.register_script(_START_DIAL)
        self._update = redis.register_script(_UPDATE)
        self._unmark = redis.register_script(_UNMARK)
        self._take_over_dial = redis.register_script(_TAKE_OVER_DIAL)
        self._observe = redis.register_script(_OBSERVE)

    def _lease_keys(self) -> list[str]:
        return [self.keys.callbacks_due(), self.keys.callbacks_leased(), lease_info_key(self.keys)]

    def _finished(self, cb: Callback | None) -> tuple[str, str, str, str]:
        """The scripts' trailing ARGV for writing `cb`: with a system of record and a final state,
        the record expires after hot_days and goes to the outbox, in the script that writes it."""
        outbox = self.keys.outbox_if_recording()
        if outbox is None or cb is None or cb.state not in TERMINAL_STATES:
            return NOT_FINISHED
        return (str(self.hot_seconds), outbox, self.keys.callbacks_expiring(), self.keys.callback_index())

    # ------------------------------------------------------------------ records
    async def create(self, cb: Callback) -> bool:
        """Store a new callback (and queue it if it has a due time); False if the id exists."""
        due = "" if cb.due_at is None else _num(cb.due_at)
        created = await self._create(
            keys=[self.keys.callback(cb.id), self.keys.callback_index(), self.keys.callbacks_due()],
            args=[cb.id, _json(cb), _num(cb.created_at), due, *self._finished(cb)])
        return bool(int(created))

    async def get(self, callback_id: str) -> Callback | None:
        raw = await self.redis.get(self.keys.callback(callback_id))
        return None if raw is None else from_dict(json.loads(raw))

    async def get_many(self, ids: Sequence[str]) -> list[Callback | None]:
        if not ids:
            return []
        raws = await self.redis.mget([self.keys.callback(i) for i in ids])
        return [None if r is None else from_dict(json.loads(r)) for r in raws]

    async def list(self, *, state: CallbackState | None = None, agent: str | None = None,
                   customer: str | None = None, limit: int = 100, scan: int = 20000,
                   where: Callable[[Callback], bool] | None = None) -> list[Callback]:
        """Newest first, filtered (`where`: a further condition, e.g. who may see it); looks at
        the newest `scan` callbacks at most."""
        ids = [_s(i) for i in await self.redis.zrevrange(self.keys.callback_index(), 0, scan - 1)]
        out: list[Callback] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found = await self.get_many(chunk)
            if self.keys.records:  # finished records expired (PostgreSQL has them): out of the index
                gone = [i for i, cb in zip(chunk, found, strict=True) if cb is None]
                if gone:
                    await self.redis.zrem(self.keys.callback_index(), *gone)
            for cb in found:
                if cb is None:
                    continue
                if state is not None and cb.state is not state:
                    continue
                if customer is not None and cb.customer_id != customer:
                    continue
                if agent is not None and cb.preferred_agent != agent and not any(
                        a.agent_id == agent for a in cb.history):
                    continue
                if where is not None and not where(cb):
                    continue
                out.append(cb)
                if len(out) >= limit:
                    return out
        return out

    async def update(self, cb: Callback, *, expected_version: int, due: float | None) -> UpdateResult:
        """Replace a record nobody holds a lease on (API / CLI edits); `due` None takes it off the
        due queue. Refused while a scheduler is placing it or if it changed since it was read."""
        result = await self._update(
            keys=[self.keys.callback(cb.id), self.keys.callbacks_due(), self.keys.callbacks_leased()],
            args=[cb.id, str(expected_version), _json(cb), "" if due is None else _num(due), *self._finished(cb)])
        return UpdateResult(_s(result))

    # ------------------------------------------------------------------ scheduling
    async def claim(self, now: float, *, lease_seconds: float, limit: int, claimer: str,
                    with_records: bool = True) -> list[Claim]:
        """Atomically lease up to `limit` jobs due at `now`, oldest due first, each with its record
        (`with_records`) read in the same script."""
        if limit <= 0:
            return []
        batch = await self.claim_batch(now, lease_seconds=lease_seconds, limit=limit, claimer=claimer,
                                       with_records=with_records)
        return batch.claims

    async def claim_batch(self, now: float, *, lease_seconds: float, limit: int, claimer: str,
                          with_records: bool = True) -> ClaimBatch:
        """`claim`, plus when the next job falls due and the next lease expires (same round trip)."""
        record_prefix = self.keys.callback("") if with_records else ""
        flat = await self._claim(
            keys=self._lease_keys(),
            args=[_num(now), _num(lease_seconds), str(max(0, limit)), claimer.replace(" ", "_"),
                  uuid.uuid4().hex, record_prefix])
        *rows, next_due, next_expiry = flat
        claims = []
        for i in range(0, len(rows), 4):
            claim = Claim(_s(rows[i]), _s(rows[i + 1]), float(_s(rows[i + 2])))
            raw = _s(rows[i + 3])
            if with_records:
                try:
                    record = from_dict(json.loads(raw)) if raw else None
                except Exception:  # a bad record fails its own placement (by a GET), not the batch
                    log.exception("callback %s: unreadable record", claim.callback_id)
                else:
                    claim = dataclasses.replace(claim, record=record, loaded=True)
            claims.append(claim)
        return ClaimBatch(claims, _score(next_due), _score(next_expiry))

    async def reap(self, now: float, *, limit: int = 1000) -> list[str]:
        """Put jobs whose lease expired (their holder died) back on the due queue at their old due."""
        return [_s(i) for i in await self._reap(keys=self._lease_keys(), args=[_num(now), str(limit)])]

    async def renew(self, claim: Claim, now: float, lease_seconds: float) -> bool:
        ok = await self._renew(keys=self._lease_keys(),
                               args=[claim.callback_id, claim.token, _num(now + lease_seconds)])
        return bool(int(ok))

    async def start_dial(self, claim: Claim, cb: Callback, holder: str, *, now: float,
                         lease_seconds: float) -> DialStart:
        """Save `cb` (dialing attempt `cb.attempts`) and SET NX that attempt's placed marker to
        `holder`, atomically and only while the lease is held; the lease then runs until
        `now + lease_seconds`. Dial only on MARKED."""
        result = await self._start_dial(
            keys=[*self._lease_keys(), self.keys.callback(claim.callback_id),
                  self.keys.callback_placed(cb.id, cb.attempts)],
            args=[claim.callback_id, claim.token, _json(cb), holder, str(self.placed_ttl_seconds),
                  _num(now + lease_seconds)])
        started = DialStart(int(result))
        if started is DialStart.MARKED and self.replicated is not None and not await self.replicated():
            # No replica confirmed the mark in time: a failover right now could forget it. Dialing
            # anyway serves the customer (waiting longer would not make a lone primary safer);
            # counted and logged so operators see a replica is missing or lagging.
            self.unreplicated_marks += 1
            log.warning("callback %s attempt %d: placed mark not confirmed by a replica", cb.id, cb.attempts)
        return started

    async def take_over_dial(self, claim: Claim, cb: Callback, dead_holder: str, holder: str, *, now: float,
                             lease_seconds: float) -> DialStart:
        """Re-dial attempt `cb.attempts` that `dead_holder` marked and never dialed: the marker
        passes to `holder` (only if it is still the dead holder's), the record is saved and the
        lease runs until `now + lease_seconds`, atomically and only while the lease is held."""
        result = await self._take_over_dial(
            keys=[*self._lease_keys(), self.keys.callback(claim.callback_id),
                  self.keys.callback_placed(cb.id, cb.attempts)],
            args=[claim.callback_id, claim.token, _json(cb), dead_holder, holder, _num(now + lease_seconds)])
        return DialStart(int(result))

    async def save_leased(self, claim: Claim, cb: Callback) -> bool:
        """Write the record while holding the lease (e.g. state dialing); False if the lease is lost."""
        ok = await self._save(keys=[*self._lease_keys(), self.keys.callback(claim.callback_id)],
                              args=[claim.callback_id, claim.token, _json(cb), *self._finished(cb)])
        return bool(int(ok))

    async def _settle_job(self, claim: Claim, cb: Callback | None, due: float | None) -> bool:
        ok = await self._settle(
            keys=[*self._lease_keys(), self.keys.callback(claim.callback_id)],
            args=[claim.callback_id, claim.token, "" if cb is None else _json(cb),
                  "" if due is None else _num(due), *self._finished(cb)])
        return bool(int(ok))

    async def complete(self, claim: Claim, cb: Callback | None) -> bool:
        """Release the job for good, writing the final record (None: leave the record as is)."""
        return await self._settle_job(claim, cb, None)

    async def reschedule(self, claim: Claim, cb: Callback | None, due: float) -> bool:
        """Release the job back to the due queue at `due`, writing the record (None: keep it)."""
        return await self._settle_job(claim, cb, due)

    async def cancel(self, claim: Claim, cb: Callback) -> bool:
        """Release the job as cancelled (the holder decided so)."""
        if cb.state is not CallbackState.CANCELLED:
            raise ValueError(f"callback {cb.id}: cancel() needs a cancelled record, got {cb.state.value}")
        return await self._settle_job(claim, cb, None)

    # ------------------------------------------------------------------ exactly-once dial
    async def mark_placed(self, callback_id: str, attempt: int, holder: str) -> bool:
        """SET NX the placed marker of (callback, attempt): True only for the first caller ever."""
        ok = await self.redis.set(self.keys.callback_placed(callback_id, attempt), holder,
                                  nx=True, ex=self.placed_ttl_seconds)
        return bool(ok)

    async def unmark_placed(self, callback_id: str, attempt: int, holder: str) -> bool:
        """Give the marker back — only its own holder, and only when it knows nothing was dialed."""
        deleted = await self._unmark(keys=[self.keys.callback_placed(callback_id, attempt)], args=[holder])
        return bool(int(deleted))

    async def placed_by(self, callback_id: str, attempt: int) -> str | None:
        raw = await self.redis.get(self.keys.callback_placed(callback_id, attempt))
        return None if raw is None else _s(raw)

    # ------------------------------------------------------------------ AMI observation (takeover)
    async def observe(self, seen: Sequence[tuple[str, int, str]]) -> int:
        """Record what AMI showed of attempts' channels, (callback id, attempt, "up" |
        "originate:<outcome>" | "result:<outcome>") in order, in one round trip; only attempts
        whose placed marker exists are written. Returns how many were."""
        if not seen:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for callback_id, attempt, what in seen:
            await self.observe_in(pipe, callback_id, attempt, what)
        return sum(int(r) for r in await pipe.execute())

    async def observe_in(self, pipe: Any, callback_id: str, attempt: int, what: str) -> None:
        """Queue one observation on the caller's pipeline (or transaction), to be written with the
        caller's own commands (the benchmarks' recording dialer: a dial and Asterisk's report of it)."""
        await self._observe(keys=[self.keys.callback_placed(callback_id, attempt),
                                  self.keys.callback_seen(callback_id, attempt)],
                            args=[what, str(self.seen_ttl_seconds)], client=pipe)

    async def observation(self, callback_id: str, attempt: int) -> str | None:
        raw = await self.redis.get(self.keys.callback_seen(callback_id, attempt))
        return None if raw is None else _s(raw)

    async def observer_up(self, instance: str, since: float, through: float) -> None:
        """This instance's AMI observer has had no gap since `since` and recorded all until `through`."""
        await self.redis.hset(self.keys.callback_observers(), instance, f"{since!r} {through!r}")

    async def observer_down(self, instance: str) -> None:
        await self.redis.hdel(self.keys.callback_observers(), instance)

    async def observers(self, now: float, *, forget_after: float = DAY) -> list[ObserverLink]:
        """Every instance's observer link as last written; entries silent for `forget_after`
        (instances gone for good) are dropped, unreadable ones ignored."""
        raw = await self.redis.hgetall(self.keys.callback_observers())
        links, stale = [], []
        for name, value in raw.items():
            try:
                since_text, through_text = _s(value).split(" ")
                link = ObserverLink(_s(name), float(since_text), float(through_text))
            except ValueError:
                continue
            if link.through < now - forget_after:
                stale.append(link.instance)
            else:
                links.append(link)
        if stale:
            await self.redis.hdel(self.keys.callback_observers(), *stale)
        return links

    async def counts(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.callbacks_due())
        pipe.zcard(self.keys.callbacks_leased())
        pipe.zcard(self.keys.callback_index())
        due, leased, total = await pipe.execute()
        return {"due": int(due), "leased": int(leased), "total": int(total)}
