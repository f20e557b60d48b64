"""Menu entry announcements (`PUT /api/v1/menus/{menu}/announcement`): a temporary message played
before a menu, e.g. during an outage. Stored in Redis by store/callpath.py (the call path reads it
in the caller snapshot's round trip)."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from ivrserver.store import callpath
from ivrserver.store.keys import Keys


class Announcements:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def read(self, menu: str) -> tuple[str, ...]:
        return await callpath.read_announcement(self.redis, self.keys, menu)

    async def set(self, menu: str, sounds: Sequence[str], ttl_seconds: int | None = None) -> None:
        """Switch the announcement on (raises ValueError for names that are not sound names)."""
        await callpath.set_announcement(self.redis, self.keys, menu, sounds, ttl_seconds)

    async def clear(self, menu: str) -> None:
        await callpath.set_announcement(self.redis, self.keys, menu, [])
