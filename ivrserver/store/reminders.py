"""Reminders in Redis (every name from `Keys`):

- ``reminders:handled:{customer}``  HASH   attribute rule → the attribute value handled last (its
                                           notice scheduled, or skipped as invalid/past); expires
                                           two years after its last change
- ``reminders:fired:{sha256(key)}`` STRING a posted event's reminder key was scheduled (TTL kept_days)
- ``reminders:scan``                STRING the instance walking the customers now (EX = the interval)

Customers are walked in pages by id from the customer index (`customers`, a ZSET whose members all
score 0: ZRANGE BYLEX from the last id seen), so a customer saved during a walk neither shifts the
pages nor is read twice.
"""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

from ivrserver.domain.model import Customer
from ivrserver.store import customers as customer_store
from ivrserver.store import scripts
from ivrserver.store.keys import Keys

HANDLED_TTL = 2 * 365 * 86400

# KEYS[1] the walk's lease; ARGV[1] instance, ARGV[2] PX: extended only while it is still ours.
_EXTEND = scripts.declare("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 0
""")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ReminderStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, kept_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.kept_seconds = kept_seconds

    async def customers_after(self, last_id: str, limit: int) -> list[Customer]:
        """Up to `limit` customers whose ids sort after `last_id` ("" = from the first)."""
        start = f"({last_id}" if last_id else "-"
        ids = await self.redis.zrange(self.keys.customer_ids(), start, "+", bylex=True, offset=0, num=limit)
        if not ids:
            return []
        return await customer_store.get_customers(self.redis, self.keys, [str(i) for i in ids])

    async def get_customer(self, customer_id: str) -> Customer | None:
        return await customer_store.get_customer(self.redis, self.keys, customer_id)

    async def handled(self, customer_ids: list[str]) -> dict[str, dict[str, str]]:
        """rule → value handled, per customer (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in customer_ids:
                pipe.hgetall(self.keys.reminders_handled(cid))
            found = await pipe.execute()
        return {cid: {str(k): str(v) for k, v in (values or {}).items()} for cid, values in zip(customer_ids, found,
                                                                                                   strict=True)}

    async def set_handled(self, customer_id: str, rule: str, value: str | None) -> None:
        """Remember `value` as handled for (customer, rule); None forgets the rule."""
        key = self.keys.reminders_handled(customer_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            if value is None:
                pipe.hdel(key, rule)
            else:
                pipe.hset(key, rule, value)
                pipe.expire(key, HANDLED_TTL)
            await pipe.execute()

    async def fired(self, key: str) -> bool:
        return bool(await self.redis.exists(self.keys.reminder_fired(key_digest(key))))

    async def mark_fired(self, key: str, outcome: str) -> None:
        await self.redis.set(self.keys.reminder_fired(key_digest(key)), outcome[:100], ex=self.kept_seconds)

    async def take_scan(self, instance: str, seconds: float) -> bool:
        """The walk of this interval, if no instance took it yet (expires after `seconds`)."""
        return bool(await self.redis.set(self.keys.reminders_scan_lease(), instance, nx=True,
                                         px=max(1000, int(seconds * 1000))))

    async def extend_scan(self, instance: str, seconds: float) -> bool:
        """Keep the walk's lease `seconds` more while `instance` holds it (a walk longer than the
        interval is not joined by a second one); False when it is no longer ours."""
        return bool(await scripts.script(self.redis, _EXTEND)(
            keys=[self.keys.reminders_scan_lease()], args=[instance, max(1000, int(seconds * 1000))]))
