"""Agents' page preferences in Redis: one HASH per agent (`keys.agent_prefs`), no TTL (state).

Fields: "language" (en | zh). Values are validated by the service before they get here.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from ivrserver.store.grants import check_agent_id
from ivrserver.store.keys import Keys


class AgentPrefsStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def read(self, agent_id: str) -> dict[str, str]:
        check_agent_id(agent_id)
        raw = await self.redis.hgetall(self.keys.agent_prefs(agent_id))
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}

    async def write(self, agent_id: str, fields: dict[str, str]) -> None:
        check_agent_id(agent_id)
        if fields:
            await self.redis.hset(self.keys.agent_prefs(agent_id), mapping=fields)
