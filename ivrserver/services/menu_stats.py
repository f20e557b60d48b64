"""What the `menus` commands read: a menu's counts over a window, a caller's data for `simulate`.

`window_counts`: with `postgres.dsn` set, every call of the window from the system of record
(record/rollup.stats: 15-minute rollups where clean, paths elsewhere). Without it, the paths Redis
still holds, read page by page to the end of the window (never a silent cap), counted as they come
(memory stays one page), and the number read is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ivrserver.config import Settings
from ivrserver.domain.menu_stats import Tally
from ivrserver.store.callpath import recent_paths
from ivrserver.store.client import connect_for_command
from ivrserver.store.keys import Keys

REDIS_PAGE = 5000


@dataclass(frozen=True)
class WindowCounts:
    tally: Tally
    source: str     # "postgres" or "redis"
    since: float
    until: float
    read: int       # paths read (Redis); calls counted (PostgreSQL)


async def _from_postgres(settings: Settings, menu: str, since: float, until: float) -> Tally:
    import asyncpg

    from ivrserver.record import rollup

    conn = await asyncpg.connect(settings.postgres.dsn, timeout=10)
    try:
        return await rollup.stats(conn, menu, datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(until, UTC))
    finally:
        await conn.close()


async def _from_redis(settings: Settings, menu: str, since: float, until: float, redis_url: str | None,
                      page: int) -> tuple[Tally, int]:
    """Page through the menu's start-time index: each page starts at the last start time read;
    paths of that very instant already counted are skipped (a page full of one instant is re-read
    with a bigger page)."""
    client = connect_for_command(settings.redis, redis_url, decode_responses=True)
    keys = Keys(settings.redis.prefix)
    out, read = Tally(), 0
    cursor, at_cursor = since, set[str]()
    try:
        while True:
            paths = await recent_paths(client, keys, menu, cursor, until, limit=page)
            fresh = [p for p in paths if not (p.started_at == cursor and p.call_id in at_cursor)]
            if not fresh:
                if len(paths) >= page:      # one instant fills the page: look at more of it
                    page *= 2
                    continue
                return out, read
            for p in fresh:
                out.add(p)
            read += len(fresh)
            last = max(p.started_at for p in fresh)
            if last != cursor:
                cursor, at_cursor = last, set()
            at_cursor.update(p.call_id for p in fresh if p.started_at == last)
    finally:
        await client.aclose()


async def window_counts(settings: Settings, menu: str, since: float, until: float, *,
                        redis_url: str | None = None, page: int = REDIS_PAGE) -> WindowCounts:
    """Counts of every call to `menu` started in [since, until). `redis_url` forces Redis."""
    if settings.postgres.dsn and not redis_url:
        tally = await _from_postgres(settings, menu, since, until)
        return WindowCounts(tally, "postgres", since, until, tally.calls)
    tally, read = await _from_redis(settings, menu, since, until, redis_url, page)
    return WindowCounts(tally, "redis", since, until, read)


async def caller_data(settings: Settings, number: str) -> dict[str, str]:
    """The attributes of the customer a number identifies ({} when none): `menus simulate --redis`."""
    from ivrserver.store.customers import snapshot_by_number

    client = connect_for_command(settings.redis, decode_responses=True)
    try:
        snap = await snapshot_by_number(client, Keys(settings.redis.prefix), number)
    finally:
        await client.aclose()
    return dict(snap.customer.attributes) if snap.customer else {}
