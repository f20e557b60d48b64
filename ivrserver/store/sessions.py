"""Login sessions and login limits in Redis (the use case: services/sessions.py).

Layout (every name from `Keys`):
- `session(sha256 of token)`            STRING agent id, expires with the session
- `login_failures(agent, address)`      counter per (agent, address)      } fixed windows that
- `address_login_failures(address)`     counter per address               } start at the first
- `agent_login_failures(agent)`         counter per agent                 } failure
- `known_login_address(agent, address)` marker: the agent logged in from there (exempt from the
                                         address and agent limits)
"""

from __future__ import annotations

import redis.asyncio as aioredis

from ivrserver.store.keys import Keys

# check-and-count in one step. KEYS: pair, address, agent, known-address marker.
# ARGV: pair limit, address limit, agent limit, window. Returns {0, 0} (allowed, counted) or
# {which limit (1 pair, 2 address, 3 agent), milliseconds until it resets}.
_TAKE_SLOT = """
local known = redis.call('EXISTS', KEYS[4]) == 1
local checks = known and 1 or 3
for i = 1, checks do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n >= tonumber(ARGV[i]) then
    return {i, redis.call('PTTL', KEYS[i])}
  end
end
for i = 1, 3 do
  redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[4]) end
end
return {0, 0}
"""
# a successful login: give back its slots. KEYS: pair, address, agent, known marker; ARGV: known ttl
_RELEASE_SLOT = """
redis.call('DEL', KEYS[1])
for i = 2, 3 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
redis.call('SET', KEYS[4], '1', 'EX', ARGV[1])
return 1
"""


class SessionStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._take = redis.register_script(_TAKE_SLOT)
        self._release = redis.register_script(_RELEASE_SLOT)

    def _limit_keys(self, agent_id: str, address: str) -> list[str]:
        return [self.keys.login_failures(agent_id, address), self.keys.address_login_failures(address),
                self.keys.agent_login_failures(agent_id), self.keys.known_login_address(agent_id, address)]

    async def take_login_slot(self, agent_id: str, address: str, *, per_agent_address: int, per_address: int,
                              per_agent: int, window_seconds: int) -> tuple[int, int]:
        """Count one attempt in all three counters unless one is full: (0, 0), or (which limit
        1 pair / 2 address / 3 agent, milliseconds until it resets). Atomic (one script)."""
        which, ttl_ms = await self._take(keys=self._limit_keys(agent_id, address),
                                         args=[per_agent_address, per_address, per_agent, window_seconds])
        return int(which), int(ttl_ms)

    async def release_login_slot(self, agent_id: str, address: str, *, known_seconds: int) -> None:
        """A successful login: give back its slots and mark the address known for `known_seconds`."""
        await self._release(keys=self._limit_keys(agent_id, address), args=[known_seconds])

    async def create(self, digest: str, agent_id: str, *, seconds: int) -> None:
        await self.redis.set(self.keys.session(digest), agent_id, ex=seconds)

    async def agent_of(self, digest: str) -> str | None:
        value = await self.redis.get(self.keys.session(digest))
        return str(value) if value is not None else None

    async def exist(self, digests: list[str]) -> list[bool]:
        """Which of these sessions are still live (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.exists(self.keys.session(digest))
            found = await pipe.execute()
        return [bool(f) for f in found]

    async def delete(self, digest: str) -> None:
        await self.redis.delete(self.keys.session(digest))
