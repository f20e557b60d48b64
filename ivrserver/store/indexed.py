"""Records listed through a sorted-set index, newest first (webhook deliveries, the case
follow-up's dead letters): read in pipelined chunks of HMGET, and an id whose record has expired
leaves the index when it is met (the records expire on their own timers; the index is state)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

CHUNK = 500


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def newest_first(redis: aioredis.Redis, index: str, record_key: Callable[[str], str],
                       fields: Sequence[str], *, scan: int) -> AsyncIterator[dict[str, str]]:
    """The `fields` of the newest `scan` records of `index` (missing fields left out), newest first."""
    ids = [_s(i) for i in await redis.zrevrange(index, 0, scan - 1)]
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for ident in chunk:
                pipe.hmget(record_key(ident), list(fields))
            rows = await pipe.execute()
        gone = [ident for ident, values in zip(chunk, rows, strict=True) if values[0] is None]
        if gone:
            await redis.zrem(index, *gone)
        for values in rows:
            if values[0] is not None:
                yield {f: _s(v) for f, v in zip(fields, values, strict=True) if v is not None}
