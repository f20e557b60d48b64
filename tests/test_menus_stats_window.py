"""`menus stats --days N` counts every call of the window: from PostgreSQL when postgres.dsn is set
(paths written through record.rows, rolled up through record.rollup), else every path Redis holds
for the window, read page by page (the old code read the OLDEST 100,000 and stopped silently)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from ivrserver import config
from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath
from ivrserver.record import rollup, rows
from ivrserver.services import menu_stats, record_schema
from ivrserver.store.callpath import RedisPathRecorder
from ivrserver.store.keys import Keys
from tests.cli_harness import covers, ivrserver, user_env

DAY = 86400.0


def path(call_id: str, at: float, key: str = "1", exit_reason: str = "self_served") -> CallPath:
    return CallPath(call_id, "hotline", "v1", at, (
        PathEvent(PathKind.START, "main", at, detail="open"),
        PathEvent(PathKind.ENTER, "main", at),
        PathEvent(PathKind.KEY, "main", at + 3, key=key, target="goto:balance"),
        PathEvent(PathKind.EXIT, "balance", at + 9, detail=exit_reason)))


def settings_with(redis_url: str, dsn: str = "") -> config.Settings:
    base = config.Settings()
    return dataclasses.replace(base, redis=dataclasses.replace(base.redis, url=redis_url),
                               postgres=dataclasses.replace(base.postgres, dsn=dsn))


async def test_redis_window_is_read_to_its_end_across_pages_and_ties(redis_client: aioredis.Redis,
                                                                     redis_url: str) -> None:
    recorder = RedisPathRecorder(redis_client, Keys("ivr"), retention_seconds=int(40 * DAY))
    now = time.time()
    written = [path(f"spread-{i}", now - 3600 + i) for i in range(23)]
    written += [path(f"tie-{i}", now - 1800.0) for i in range(9)]      # one instant across page edges
    written += [path("old", now - 3 * DAY)]                             # outside a 1-day window
    for p in written:
        await recorder.record(p)
    window = await menu_stats.window_counts(settings_with(redis_url), "hotline", now - DAY, now, page=4)
    assert (window.source, window.read, window.tally.calls) == ("redis", 32, 32)
    assert window.tally.nodes["main"].keys == {"1": 32}


@covers("menus stats")
async def test_menus_stats_counts_the_month_from_postgres(empty_db: str, redis_url: str,
                                                          redis_client: aioredis.Redis) -> None:
    settings = settings_with(redis_url, empty_db)
    await record_schema.migrate_schema(settings.postgres)
    now = time.time()
    # 30 days of calls, one every 6 hours, plus two older than the window; Redis holds none of them.
    inside = [path(f"pg-{i}", now - 29.5 * DAY + i * 0.25 * DAY, key="2" if i % 3 else "1",
                   exit_reason="self_served" if i % 4 else "caller_hangup") for i in range(118)]
    outside = [path("pg-old-1", now - 31 * DAY), path("pg-old-2", now - 45 * DAY)]
    conn = await asyncpg.connect(empty_db)
    try:
        await rows.upsert_paths(conn, inside + outside)
        await rollup.mark_dirty(conn, inside + outside)
        rolled = await rollup.roll(conn, datetime.now(UTC))
        assert rolled > 100     # most buckets come from rollups, the newest ones from paths
    finally:
        await conn.close()
    env = user_env(redis_url, IVRSERVER_POSTGRES__DSN=empty_db)
    result = await asyncio.to_thread(ivrserver, "menus", "stats", "--days", "30", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["source"], report["calls"]) == ("postgres", 118)
    assert report["exits"] == {"self_served": 88, "caller_hangup": 30}
    assert report["nodes"]["main"]["keys"] == {"1": 40, "2": 78}
    text = await asyncio.to_thread(ivrserver, "menus", "stats", "--days", "30", env=env)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("menu hotline: 118 call(s)")
    assert "counted in PostgreSQL" in text.stdout
    # --redis-url still reads what Redis holds (nothing here), and says how many it read
    local = await asyncio.to_thread(ivrserver, "menus", "stats", "--redis-url", redis_url, env=env)
    assert local.returncode == 0 and local.stdout.startswith("menu hotline: 0 call(s)"), local.stderr
    assert "0 path(s) read from Redis" in local.stdout


@covers("menus stats")
def test_menus_stats_with_an_unreachable_postgres_fails_cleanly(redis_url: str) -> None:
    env = user_env(redis_url, IVRSERVER_POSTGRES__DSN="postgresql://ivrserver@127.0.0.1:1/ivrserver")
    result = ivrserver("menus", "stats", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot read IVR paths from PostgreSQL" in result.stderr
