"""Which instance publishes the pops of one agent leg.

Every ivrserver instance reads the same AMI events; the first to claim a ringing leg
(`Keys.pop_claim(agent, leg)`, SET NX with an expiry longer than any ring + call) publishes its
pops, the others stay silent.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from ivrserver.store.keys import Keys


async def claim(redis: aioredis.Redis, keys: Keys, agent_id: str, leg_id: str, *, instance: str,
                seconds: int) -> bool:
    """True if this `instance` now owns the leg (nobody claimed it within `seconds`)."""
    return bool(await redis.set(keys.pop_claim(agent_id, leg_id), instance, nx=True, ex=seconds))
