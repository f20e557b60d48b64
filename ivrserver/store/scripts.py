"""Lua scripts of the store, registered once per Redis client.

`register_script` hashes the source on every call, and a hot path (every call's snapshot and
contact writes) should not pay that: `script(redis, SOURCE)` returns the cached `Script` object,
which runs EVALSHA and falls back to loading the script when Redis does not know it (a restart).
"""

from __future__ import annotations

import weakref
from typing import Any

import redis.asyncio as aioredis

_SOURCES: list[str] = []
_BY_CLIENT: weakref.WeakKeyDictionary[aioredis.Redis, dict[str, Any]] = weakref.WeakKeyDictionary()


def declare(source: str) -> str:
    """Declare a store script (module level), so that `load_all` loads it at start-up."""
    _SOURCES.append(source)
    return source


def script(redis: aioredis.Redis, source: str) -> Any:
    """The script bound to `redis` (a redis.commands.core.AsyncScript), registered once per client."""
    scripts = _BY_CLIENT.setdefault(redis, {})
    found = scripts.get(source)
    if found is None:
        found = scripts[source] = redis.register_script(source)
    return found


async def load_all(redis: aioredis.Redis) -> None:
    """Load every declared script at start-up, so that the first call's EVALSHA already hits."""
    for source in _SOURCES:
        await redis.script_load(source)
