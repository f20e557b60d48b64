"""SMS keys in Redis: one marker per key (`Keys.sms_sent`, by the key's SHA-256), claimed before a
send and holding its outcome after. Never the text, never the number.

States of the marker (a STRING, expiring after sms.kept_days):
- ``sending <epoch> <instance>``  claimed; the send is running (or its instance died mid-send)
- ``done <outcome>``              finished: sent, or failed in a way that may have sent it
- ``retry <outcome>``             failed before anything left: the next send with the key may claim it
"""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

from ivrserver.store import scripts
from ivrserver.store.keys import Keys

# KEYS[1] marker; ARGV[1] the "sending …" value, ARGV[2] TTL seconds.
# → "" when claimed, else the marker's current value.
_CLAIM = scripts.declare("""
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, 6) ~= 'retry ' then
  return current
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return ''
""")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class SmsMarkers:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, kept_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.kept_seconds = kept_seconds

    async def claim(self, key: str, *, now: float, instance: str) -> str | None:
        """None when this caller may send `key` now (the marker is set to sending), else the
        marker's value (someone sent it, or is sending it)."""
        found = await scripts.script(self.redis, _CLAIM)(
            keys=[self.keys.sms_sent(key_digest(key))], args=[f"sending {now:.3f} {instance}", self.kept_seconds])
        return str(found) or None

    async def finish(self, key: str, outcome: str, *, retry: bool) -> None:
        """Record the outcome (keeping the marker's expiry); `retry`: nothing left, a later send may claim."""
        await self.redis.set(self.keys.sms_sent(key_digest(key)), f"{'retry' if retry else 'done'} {outcome}",
                             keepttl=True, xx=True)

    async def state(self, key: str) -> str | None:
        """The marker's value, or None."""
        value = await self.redis.get(self.keys.sms_sent(key_digest(key)))
        return str(value) if value is not None else None
