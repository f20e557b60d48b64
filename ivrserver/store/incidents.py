"""Incidents in Redis: complaint counters, the incidents themselves, who asked to be told.

Counters (names in store/keys.py, "mass-fault incidents"): a complaint is written by the call's
end-of-call script (store/callpath.py `record(..., extra=...)`), never in a round trip of its
own: `complaint_ops` gives the operations that script runs —
INCR of the pair's short bucket and hourly bucket (each with its TTL) and the bucket's first
complaint time (SET NX), ZADD of the pair into `incident_pairs()` (what the detector looks at) and
of the caller into the pair's callers (who is told at resolve; trimmed to `callers_kept_seconds`),
the contact's counted mark; for a call offered an announcement HINCRBY of the incident's stats,
the caller into its heard set (told at resolve) and, sent to a queue, the contact id into its
queued set (at resolve: how many an agent answered).

Incidents: JSON under `incident(id)`, listed in `incidents_all()`; active ones also in the HASH
`incidents_active()` (read by the caller snapshot) and as the pair's marker `incident_pair()`
(SET NX: one incident per (service, area) across instances). Every change is one script run
that checks the revision (compare-and-set) and, with a system of record, appends the incident
to the outbox (kind "incidents") in the same run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis

from ivrserver.domain import incidents as inc
from ivrserver.store import scripts
from ivrserver.store.keys import Keys

MAX_LIST = 1000


def incident_to_json(incident: inc.Incident) -> str:
    return json.dumps(inc.to_dict(incident), separators=(",", ":"), ensure_ascii=False)


def incident_from_json(raw: str | None) -> inc.Incident | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return inc.from_dict(data) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def member(customer_id: str | None, number: str) -> str:
    """How a caller is remembered: 'customer id|number' (either may be empty)."""
    return f"{customer_id or ''}|{number}"


def split_member(value: str) -> tuple[str | None, str]:
    customer_id, _, number = value.partition("|")
    return customer_id or None, number


# What each IncidentOutcome adds to the incident's stats (menu_engine.incident_outcome).
STATS_FIELD = {"subscribed": "absorbed", "heard": "absorbed", "agent": "sent_to_queue", "menu": "went_to_menu",
               "hung_up": "hung_up"}

# The counter operations of a call, run inside a store script (the end-of-call script of
# store/callpath.py, or `IncidentStore.count` for an agent's disposition). Each op is a list:
#   incr key ttl                      INCR, EXPIRE
#   setnx key value ttl               SET NX EX (the first complaint's time in a bucket)
#   zadd key score member ttl [min]   ZADD, EXPIRE, and ZREMRANGEBYSCORE below `min` when given
#   hincr key field ttl               HINCRBY 1, EXPIRE
#   sadd key member ttl               SADD, EXPIRE
#   once key member ttl               SADD, EXPIRE; the member was there already: stop, return 0
RUN_OPS_LUA = """
local function run_ops(ops)
  for _, op in ipairs(ops) do
    local kind = op[1]
    if kind == 'incr' then
      redis.call('INCR', op[2])
      redis.call('EXPIRE', op[2], op[3])
    elseif kind == 'setnx' then
      redis.call('SET', op[2], op[3], 'NX', 'EX', op[4])
    elseif kind == 'zadd' then
      redis.call('ZADD', op[2], op[3], op[4])
      redis.call('EXPIRE', op[2], op[5])
      if op[6] then redis.call('ZREMRANGEBYSCORE', op[2], '-inf', '(' .. op[6]) end
    elseif kind == 'hincr' then
      redis.call('HINCRBY', op[2], op[3], 1)
      redis.call('EXPIRE', op[2], op[4])
    elseif kind == 'sadd' or kind == 'once' then
      local added = redis.call('SADD', op[2], op[3])
      redis.call('EXPIRE', op[2], op[4])
      if kind == 'once' and added == 0 then return 0 end
    end
  end
  return 1
end
"""


def complaint_ops(keys: Keys, policy: inc.Policy, now: float, *, services: Iterable[str], area: str | None,
                  caller: str, heard: tuple[str, str] | None = None, contact_id: str | None = None) -> list[list[str]]:
    """The counter operations of one call (for the end-of-call script): its complaints about
    `services` from `area`, and what it did after an incident announcement (`heard`: incident id,
    menu_engine.IncidentOutcome). `contact_id` (the call's contact record): its complaints are
    marked counted (an agent's fault disposition on it does not count them again), and a call the
    announcement sent to a queue is remembered for the figure of calls an agent answered."""
    ops: list[list[str]] = []
    kept = str(policy.callers_kept_seconds)
    if area:
        short_ttl = str(policy.window_seconds + 2 * policy.bucket_seconds)
        hourly_ttl = str((policy.baseline_hours + 2) * inc.HOUR)
        bucket, hour = inc.bucket_of(now, policy.bucket_seconds), inc.bucket_of(now, inc.HOUR)
        for service in services:
            ops.append(["incr", keys.incident_count(service, area, bucket), short_ttl])
            ops.append(["setnx", keys.incident_first(service, area, bucket), repr(now), short_ttl])
            ops.append(["incr", keys.incident_hourly(service, area, hour), hourly_ttl])
            ops.append(["zadd", keys.incident_pairs(), repr(now), f"{service}|{area}", hourly_ttl])
            if caller.strip("|"):
                # who complained, kept `callers_kept_seconds`: older members are trimmed on each write
                ops.append(["zadd", keys.incident_callers(service, area), repr(now), caller, kept,
                            repr(now - policy.callers_kept_seconds)])
            if contact_id:
                ops.append(["sadd", keys.incident_counted(contact_id), service, kept])
    if heard is not None:
        incident_id, outcome = heard
        ops.append(["hincr", keys.incident_stats(incident_id), STATS_FIELD.get(str(outcome), "hung_up"), kept])
        if caller.strip("|"):
            ops.append(["sadd", keys.incident_heard(incident_id), caller, kept])
        if str(outcome) == "agent" and contact_id:
            ops.append(["sadd", keys.incident_queued(incident_id), contact_id, kept])
    return ops


_COUNT = scripts.declare(RUN_OPS_LUA + """
return run_ops(cjson.decode(ARGV[1]))
""")


# KEYS: incident, listing, active hash, pair marker; ARGV: id, JSON, compact JSON, opened at,
# outbox ('' without a system of record)
_OPEN = scripts.declare("""
if redis.call('SET', KEYS[4], ARGV[1], 'NX') == false then
  return redis.call('GET', KEYS[4]) or ''
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
if ARGV[5] ~= '' then redis.call('XADD', ARGV[5], '*', 'kind', 'incidents', 'data', ARGV[2]) end
return 1
""")

# KEYS: incident, active hash, pair marker, cool-down, subscribers, stats, heard, queued, unfinished;
# ARGV: id, JSON, compact JSON ('' when no longer active), expected stored revision, cool-down
# seconds, keep seconds after resolve, outbox, resolved at ('' unless domain/incidents.unfinished)
_SAVE = scripts.declare("""
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
local ok, decoded = pcall(cjson.decode, current)
if not ok or tonumber(decoded['revision']) ~= tonumber(ARGV[4]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
else
  redis.call('HDEL', KEYS[2], ARGV[1])
  if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
  if tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[5]) end
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('EXPIRE', KEYS[5], ARGV[6])
  redis.call('EXPIRE', KEYS[6], ARGV[6])
  redis.call('EXPIRE', KEYS[7], ARGV[6])
  redis.call('EXPIRE', KEYS[8], ARGV[6])
end
if ARGV[8] ~= '' then
  redis.call('ZADD', KEYS[9], 'GT', ARGV[8], ARGV[1])  -- GT: a renewed mark stays renewed
else
  redis.call('ZREM', KEYS[9], ARGV[1])
end
if ARGV[7] ~= '' then redis.call('XADD', ARGV[7], '*', 'kind', 'incidents', 'data', ARGV[2]) end
return 1
""")

# KEYS: lease; ARGV: holder, milliseconds. Take it when free, extend it when ours.
_LEASE = scripts.declare("""
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
""")


def _number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


class Conflict(Exception):
    """The incident changed meanwhile (revision) or is gone."""


class IncidentStore:
    def __init__(self, redis: Redis, keys: Keys, *, keep_seconds: int = 30 * 86400) -> None:
        self.redis = redis
        self.keys = keys
        self.keep_seconds = keep_seconds  # a resolved incident stays in Redis this long

    # -- incidents -------------------------------------------------------------------------

    async def create(self, incident: inc.Incident) -> str | None:
        """Store a new incident unless its pair has an active one: None when stored, else the id of
        the pair's active incident."""
        keys = [self.keys.incident(incident.id), self.keys.incidents_all(), self.keys.incidents_active(),
                self.keys.incident_pair(incident.service, incident.area)]
        doc = incident_to_json(incident)
        reply = await scripts.script(self.redis, _OPEN)(keys=keys, args=[
            incident.id, doc, doc, repr(incident.opened_at), self.keys.outbox_if_recording() or ""])
        return None if reply == 1 else str(reply)

    async def save(self, incident: inc.Incident, *, previous_revision: int, cooldown_seconds: int) -> None:
        """Replace the stored incident of `previous_revision` by `incident` (raises Conflict)."""
        keys = [self.keys.incident(incident.id), self.keys.incidents_active(),
                self.keys.incident_pair(incident.service, incident.area),
                self.keys.incident_cooldown(incident.service, incident.area),
                self.keys.incident_subscribers(incident.id), self.keys.incident_stats(incident.id),
                self.keys.incident_heard(incident.id), self.keys.incident_queued(incident.id),
                self.keys.incidents_unfinished()]
        doc = incident_to_json(incident)
        unfinished = inc.unfinished(incident)
        reply = await scripts.script(self.redis, _SAVE)(keys=keys, args=[
            incident.id, doc, doc if incident.active else "", previous_revision, int(cooldown_seconds),
            self.keep_seconds, self.keys.outbox_if_recording() or "",
            repr(incident.resolved_at or 0.0) if unfinished else ""])
        if reply != 1:
            raise Conflict("gone" if reply == -1 else "changed meanwhile")

    async def get(self, incident_id: str) -> inc.Incident | None:
        return incident_from_json(await self.redis.get(self.keys.incident(incident_id)))

    async def list(self, *, limit: int = 100) -> list[inc.Incident]:
        """The latest incidents, newest first."""
        ids = await self.redis.zrevrange(self.keys.incidents_all(), 0, max(1, min(limit, MAX_LIST)) - 1)
        if not ids:
            return []
        raws = await self.redis.mget([self.keys.incident(i) for i in ids])
        return [i for i in (incident_from_json(r) for r in raws) if i is not None]

    async def unfinished(self, resolved_before: float) -> list[str]:
        """Ids of resolved incidents not archived yet whose mark (the resolve's time, renewed while
        an instance follows it through) is older than `resolved_before`, oldest first."""
        return list(await self.redis.zrangebyscore(self.keys.incidents_unfinished(), "-inf", resolved_before,
                                                   start=0, num=MAX_LIST))

    async def still_unfinished(self, incident_id: str, now: float) -> None:
        """Renew the mark of a resolve still being followed through (only while it is marked)."""
        await self.redis.zadd(self.keys.incidents_unfinished(), {incident_id: now}, xx=True, gt=True)

    async def drop_unfinished(self, incident_id: str) -> None:
        """Forget the mark of an incident that is gone (expired) or no longer resolved."""
        await self.redis.zrem(self.keys.incidents_unfinished(), incident_id)

    async def active(self) -> list[inc.Incident]:
        raw = await self.redis.hgetall(self.keys.incidents_active())
        return [i for i in (incident_from_json(v) for v in raw.values()) if i is not None]

    # -- callers ---------------------------------------------------------------------------

    async def subscribe(self, incident_id: str, caller: str) -> bool:
        """Remember that this caller wants to be told (only while the incident is active)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hexists(self.keys.incidents_active(), incident_id)
            pipe.sadd(self.keys.incident_subscribers(incident_id), caller)
            active, _ = await pipe.execute()
        if not active:
            await self.redis.srem(self.keys.incident_subscribers(incident_id), caller)
        return bool(active)

    async def subscribers(self, incident_id: str) -> list[str]:
        return sorted(await self.redis.smembers(self.keys.incident_subscribers(incident_id)))

    async def callers(self, service: str, area: str, since: float, until: float) -> list[str]:
        return list(await self.redis.zrangebyscore(self.keys.incident_callers(service, area), since, until))

    async def stats(self, incident_id: str) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.incident_stats(incident_id))
        return {k: int(v) for k, v in raw.items() if str(v).lstrip("-").isdigit()}

    async def heard(self, incident_id: str) -> list[str]:
        """Every caller offered the incident's announcement ("customer id|number")."""
        return sorted(await self.redis.smembers(self.keys.incident_heard(incident_id)))

    async def queued_outcomes(self, incident_id: str) -> list[str]:
        """The contact outcomes (answered, abandoned, in_progress, ...) of the calls the
        announcement sent to a queue; a record no longer in Redis is "unknown"."""
        ids = sorted(await self.redis.smembers(self.keys.incident_queued(incident_id)))
        out: list[str] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for raw in await self.redis.mget([self.keys.contact(i) for i in chunk]):
                outcome = "unknown"
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    outcome = str(json.loads(raw).get("outcome") or "unknown") if raw else "unknown"
                out.append(outcome)
        return out

    async def delivered(self, incident_id: str, notice_id: str) -> int:
        """A resolve notice delivered (each notice counts once, however often it is told); the
        number delivered so far."""
        key = self.keys.incident_delivered(incident_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(key, notice_id)
            pipe.expire(key, self.keep_seconds)
            pipe.scard(key)
            _, _, count = await pipe.execute()
        return int(count)

    async def delivered_count(self, incident_id: str) -> int:
        return int(await self.redis.scard(self.keys.incident_delivered(incident_id)))

    async def count(self, ops: Sequence[Sequence[str]]) -> bool:
        """Run counter operations (`complaint_ops`, possibly led by a `once`) in one script run;
        False when a `once` found its member there already (nothing after it ran)."""
        if not ops:
            return False
        reply = await scripts.script(self.redis, _COUNT)(keys=[], args=[json.dumps(ops, separators=(",", ":"))])
        return reply == 1

    # -- detection -------------------------------------------------------------------------

    async def take_lease(self, holder: str, seconds: float) -> bool:
        reply = await scripts.script(self.redis, _LEASE)(keys=[self.keys.incident_leader()],
                                                          args=[holder, int(seconds * 1000)])
        return reply == 1

    async def recent_pairs(self, since: float) -> list[tuple[str, str]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self.keys.incident_pairs(), "-inf", f"({since!r}")
            pipe.zrangebyscore(self.keys.incident_pairs(), since, "+inf")
            _, members = await pipe.execute()
        out = []
        for m in members:
            service, _, area = str(m).partition("|")
            if service and area:
                out.append((service, area))
        return out

    async def pair_states(self, pairs: Sequence[tuple[str, str]], now: float, policy: inc.Policy,
                          ) -> list[tuple[inc.Counts, bool, float | None]]:
        """For each pair: its counts, whether an incident is active for it, and when its last
        incident was resolved if still cooling down (one round trip for all pairs)."""
        if not pairs:
            return []
        buckets = list(inc.window_buckets(now, policy))
        hours = list(inc.baseline_hours(now, policy))
        since = buckets[0] * policy.bucket_seconds
        async with self.redis.pipeline(transaction=False) as pipe:
            for service, area in pairs:
                pipe.mget([self.keys.incident_count(service, area, b) for b in buckets])
                pipe.mget([self.keys.incident_hourly(service, area, h) for h in hours] or ["-"])
                pipe.exists(self.keys.incident_pair(service, area))
                pipe.pttl(self.keys.incident_cooldown(service, area))
                pipe.mget([self.keys.incident_first(service, area, b) for b in buckets])
                pipe.zrevrangebyscore(self.keys.incident_callers(service, area), "+inf", since, start=0, num=1,
                                      withscores=True)
            replies: list[Any] = await pipe.execute()
        out = []
        for i in range(len(pairs)):
            short_raw, hourly_raw, active, cooling_ms, first_raw, latest_raw = replies[6 * i: 6 * i + 6]
            short = {b: int(v) for b, v in zip(buckets, short_raw, strict=True) if v}
            hourly = {h: int(v) for h, v in zip(hours, hourly_raw, strict=False) if v}
            first = {b: float(v) for b, v in zip(buckets, first_raw, strict=True) if _number(v)}
            latest = float(latest_raw[0][1]) if latest_raw else None
            counts = inc.counts_from(short, hourly, now, policy, first_times=first, latest_time=latest)
            resolved_at = None
            if cooling_ms and int(cooling_ms) > 0:
                resolved_at = now - (policy.cooldown_seconds - int(cooling_ms) / 1000)
            out.append((counts, bool(active), resolved_at))
        return out
