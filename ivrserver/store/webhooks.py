"""Outgoing webhook deliveries in Redis, shared by every ivrserver instance.

Layout (all names from `Keys`):
- `webhook:published:{sha256(key)}` STRING  SET NX by a publish; a second publish of the key is refused
- `webhook:{id}`            HASH    one delivery (domain.webhooks.Delivery; `log` is a JSON list)
- `webhooks:due`            ZSET    pending deliveries, scored by the epoch their attempt is due
- `webhooks:leased`         ZSET    deliveries being attempted, scored by the epoch the lease expires
- `webhooks:leaseinfo`      HASH    id → "<token> <due> <claimer>" of the current lease
- `webhooks:all`            ZSET    every delivery, scored by creation (the delivery log's listing)
- `webhooks:dead`           ZSET    dead letters, scored by the time they died

Exactly-once creation: ids are deterministic (domain.webhooks.delivery_id(key, endpoint)) and the
publish script checks the key's marker and each record's existence, so concurrent or repeated
publishes create each delivery once. At-least-once delivery: a claim moves due → leased atomically
(a whole batch per script call, expired leases going back to due first), and only the lease's
holder (token) may settle it; an instance that dies mid-attempt leaves a lease that expires and the
delivery is attempted again. Final deliveries (delivered, dead) expire after hot_days; each settle
also appends the delivery to the outbox with a system of record (record/sink.py → webhook_deliveries).
The scripts build record keys from a prefix: fine on one Redis or a replicated one, not on Cluster.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from ivrserver.domain.webhooks import Delivery, DeliveryState, attempt_from_dict
from ivrserver.store.indexed import newest_first
from ivrserver.store.keys import Keys
from ivrserver.store.leases import CLAIM, REAP, TOKEN_CHECK

DAY = 86400
OUTBOX_KIND = "webhook_deliveries"

# KEYS: marker, index, due
# ARGV: marker ttl, now, record prefix, index cutoff, event, key, then (id, endpoint, body) per delivery
_PUBLISH = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then return 0 end
local now = ARGV[2]
for i = 7, #ARGV, 3 do
  local id = ARGV[i]
  local record = ARGV[3] .. id
  if redis.call('EXISTS', record) == 0 then
    redis.call('HSET', record, 'id', id, 'endpoint', ARGV[i + 1], 'event', ARGV[5], 'key', ARGV[6],
               'created_at', now, 'body', ARGV[i + 2], 'state', 'pending', 'attempt', '0', 'attempts', '0',
               'next_at', now, 'updated_at', now, 'log', '[]')
    redis.call('ZADD', KEYS[3], now, id)
    redis.call('ZADD', KEYS[2], now, id)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
return 1
"""

# KEYS: due, leased, leaseinfo
# ARGV: now, lease seconds, limit, claimer, token prefix, record prefix
# Expired leases go back to due (at their old due time) first. Returns one row per claimed delivery,
# {id, token, HGETALL of its record}, then the earliest due score still waiting ('' = none).
_CLAIM = REAP + CLAIM + """
reap(ARGV[1], 1000)
local out = {}
local next_due = claim(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], function(id, token, score)
  out[#out + 1] = {id, token, redis.call('HGETALL', ARGV[6] .. id)}
end)
out[#out + 1] = next_due
return out
"""

# KEYS: due, leased, leaseinfo, record, dead
# ARGV: id, token, state, next due ('' = none), hot seconds, outbox ('' = none), outbox data, now,
#       then field, value pairs of the record ('' state = drop the lease only: record missing)
_SETTLE = TOKEN_CHECK + """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if ARGV[3] == '' then return 1 end
if #ARGV > 8 then redis.call('HSET', KEYS[4], unpack(ARGV, 9)) end
if ARGV[3] == 'pending' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
else
  if ARGV[3] == 'dead' then redis.call('ZADD', KEYS[5], ARGV[8], ARGV[1]) end
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[5]))
end
if ARGV[6] ~= '' then redis.call('XADD', ARGV[6], '*', 'kind', 'webhook_deliveries', 'data', ARGV[7]) end
return 1
"""

# KEYS: dead, due, record   ARGV: id, now
_REQUEUE = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 'missing'
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 'not_dead' end
redis.call('HSET', KEYS[3], 'state', 'pending', 'attempt', '0', 'next_at', ARGV[2], 'updated_at', ARGV[2],
           'dead_reason', '')
redis.call('PERSIST', KEYS[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'ok'
"""

_SUMMARY_FIELDS = ("id", "endpoint", "event", "key", "created_at", "state", "attempt", "attempts", "next_at",
                   "updated_at", "last_status", "last_error", "dead_reason", "log")


@dataclass(frozen=True)
class Claim:
    """A leased delivery: only the holder of `token` may settle it. `delivery` None: its record is gone."""

    delivery_id: str
    token: str
    delivery: Delivery | None


@dataclass(frozen=True)
class ClaimBatch:
    claims: list[Claim]
    next_due: float | None  # the earliest delivery still waiting; None: nothing is due


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _num(x: float) -> str:
    return repr(float(x))


def _opt_float(text: str) -> float | None:
    return float(text) if text else None


def _opt_int(text: str) -> int | None:
    return int(text) if text else None


def from_hash(fields: Mapping[str, str]) -> Delivery:
    """A delivery from its HASH (ValueError/KeyError when it is not one)."""
    log = json.loads(fields.get("log") or "[]")
    return Delivery(
        id=fields["id"], endpoint=fields["endpoint"], event=fields["event"], key=fields["key"],
        created_at=float(fields["created_at"]), body=fields.get("body", ""), state=DeliveryState(fields["state"]),
        attempt=int(fields.get("attempt") or 0), attempts=int(fields.get("attempts") or 0),
        next_at=_opt_float(fields.get("next_at", "")), updated_at=float(fields.get("updated_at") or 0),
        last_status=_opt_int(fields.get("last_status", "")), last_error=fields.get("last_error", ""),
        dead_reason=fields.get("dead_reason", ""), log=tuple(attempt_from_dict(a) for a in log))


def state_fields(d: Delivery) -> list[str]:
    """The fields an attempt changes, as HSET arguments."""
    log = json.dumps([a.as_dict() for a in d.log], separators=(",", ":"), ensure_ascii=False)
    pairs = {"state": d.state.value, "attempt": str(d.attempt), "attempts": str(d.attempts),
             "next_at": "" if d.next_at is None else _num(d.next_at), "updated_at": _num(d.updated_at),
             "last_status": "" if d.last_status is None else str(d.last_status), "last_error": d.last_error,
             "dead_reason": d.dead_reason, "log": log}
    return [x for item in pairs.items() for x in item]


def outbox_data(d: Delivery) -> str:
    """The outbox entry's data: the delivery log row (record/rows.upsert_webhook_deliveries)."""
    try:
        payload = json.loads(d.body).get("data") if d.body else None
    except ValueError:
        payload = None
    row = {**d.summary(), "payload": payload}
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False)


def _decode(pairs: Sequence[Any]) -> dict[str, str]:
    flat = [_s(x) for x in pairs]
    return dict(zip(flat[::2], flat[1::2], strict=True))


class WebhookStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, hot_days: int = 30) -> None:
        if hot_days < 1:
            raise ValueError("hot_days must be at least 1")
        self.redis = redis
        self.keys = keys
        self.hot_seconds = hot_days * DAY
        self._publish = redis.register_script(_PUBLISH)
        self._claim = redis.register_script(_CLAIM)
        self._settle = redis.register_script(_SETTLE)
        self._requeue = redis.register_script(_REQUEUE)

    def _lease_keys(self) -> list[str]:
        return [self.keys.webhooks_due(), self.keys.webhooks_leased(), self.keys.webhooks_lease_info()]

    async def publish(self, key_digest: str, event: str, key: str, now: float,
                      deliveries: Sequence[tuple[str, str, str]]) -> bool:
        """Create the deliveries (id, endpoint name, body), due now, unless `key` was published
        before (False: nothing written). Creation is atomic across instances."""
        args: list[str] = [str(self.hot_seconds), _num(now), self.keys.webhook_delivery(""),
                           _num(now - self.hot_seconds), event, key]
        for delivery_id, endpoint, body in deliveries:
            args += [delivery_id, endpoint, body]
        created = await self._publish(
            keys=[self.keys.webhook_published(key_digest), self.keys.webhooks_index(), self.keys.webhooks_due()],
            args=args)
        return bool(int(created))

    async def claim(self, now: float, *, lease_seconds: float, limit: int, claimer: str) -> ClaimBatch:
        """Lease up to `limit` deliveries due at `now` (expired leases re-queued first), with their records."""
        rows = await self._claim(keys=self._lease_keys(), args=[
            _num(now), _num(lease_seconds), str(max(0, limit)), claimer.replace(" ", "_"), uuid.uuid4().hex,
            self.keys.webhook_delivery("")])
        *claimed, next_due = rows
        claims = []
        for delivery_id, token, pairs in claimed:
            fields = _decode(pairs)
            try:
                delivery = from_hash(fields) if fields else None
            except (KeyError, ValueError):
                delivery = None
            claims.append(Claim(_s(delivery_id), _s(token), delivery))
        text = _s(next_due)
        return ClaimBatch(claims, float(text) if text else None)

    async def settle(self, claim: Claim, delivery: Delivery | None, *, now: float) -> bool:
        """Write the delivery after an attempt, releasing the lease: pending → back on due at its
        next_at; delivered or dead → expires after hot_days (dead → the dead letters). None: the
        record is gone, only the lease is dropped. False if the lease was lost (nothing written)."""
        outbox = self.keys.outbox_if_recording()
        if delivery is None:
            args = [claim.delivery_id, claim.token, "", "", "", "", "", _num(now)]
        else:
            due = delivery.next_at if delivery.next_at is not None else now
            args = [claim.delivery_id, claim.token, delivery.state.value, _num(due), str(self.hot_seconds),
                    outbox or "", outbox_data(delivery) if outbox else "", _num(now), *state_fields(delivery)]
        ok = await self._settle(keys=[*self._lease_keys(), self.keys.webhook_delivery(claim.delivery_id),
                                      self.keys.webhooks_dead()], args=args)
        return bool(int(ok))

    async def requeue(self, delivery_id: str, now: float) -> str:
        """A dead delivery back on the due queue with a fresh attempt budget: "ok", "missing" or "not_dead"."""
        result = await self._requeue(
            keys=[self.keys.webhooks_dead(), self.keys.webhooks_due(), self.keys.webhook_delivery(delivery_id)],
            args=[delivery_id, _num(now)])
        return _s(result)

    async def get(self, delivery_id: str) -> Delivery | None:
        fields = await self.redis.hgetall(self.keys.webhook_delivery(delivery_id))  # type: ignore[misc]
        return from_hash({_s(k): _s(v) for k, v in fields.items()}) if fields else None

    async def _summaries(self, index: str, *, limit: int, scan: int, state: str | None,
                         event: str | None) -> list[Delivery]:
        out: list[Delivery] = []
        async for values in newest_first(self.redis, index, self.keys.webhook_delivery, _SUMMARY_FIELDS, scan=scan):
            delivery = from_hash(values)
            if (state is None or delivery.state.value == state) and (event is None or delivery.event == event):
                out.append(delivery)
                if len(out) >= limit:
                    break
        return out

    async def deliveries(self, *, state: str | None = None, event: str | None = None, limit: int = 100,
                         scan: int = 20000) -> list[Delivery]:
        """The delivery log, newest first (without bodies), looking at the newest `scan` at most."""
        return await self._summaries(self.keys.webhooks_index(), limit=limit, scan=scan, state=state, event=event)

    async def dead(self, *, limit: int = 100) -> list[Delivery]:
        """Dead letters, the most recently dead first."""
        return await self._summaries(self.keys.webhooks_dead(), limit=limit, scan=max(limit * 2, 1000),
                                     state=None, event=None)

    async def counts(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.webhooks_due())
            pipe.zcard(self.keys.webhooks_leased())
            pipe.zcard(self.keys.webhooks_dead())
            due, leased, dead = await pipe.execute()
        return {"due": int(due), "leased": int(leased), "dead": int(dead)}
