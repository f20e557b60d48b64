"""IVR paths and the entry announcement in a real Redis."""

from __future__ import annotations

import argparse
import asyncio
import io
import json

import pytest
import redis.asyncio as aioredis

from ivrserver.commands import menus as cli
from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath
from ivrserver.store import call_context, callpath
from ivrserver.store.call_context import CallContext
from ivrserver.store.keys import Keys

DAY = 86400


def call(call_id: str, started: float) -> CallPath:
    return CallPath(call_id, "hotline", "abc123", started, (
        PathEvent(PathKind.START, "main", started, detail="open"),
        PathEvent(PathKind.ENTER, "main", started),
        PathEvent(PathKind.KEY, "main", started + 3.25, key="1", target="goto:balance"),
        PathEvent(PathKind.EXIT, "balance", started + 9, target="", detail="self_served"),
    ))


async def test_record_and_read_back(redis_client: aioredis.Redis, keys: Keys) -> None:
    recorder = callpath.RedisPathRecorder(redis_client, keys, retention_seconds=30 * DAY)
    await recorder.record(call("c1", 1_000_000.0))
    assert await callpath.read_path(redis_client, keys, "c1") == call("c1", 1_000_000.0)
    assert await callpath.read_path(redis_client, keys, "nope") is None
    ttl = await redis_client.ttl(keys.ivr_path("c1"))
    assert 30 * DAY - 5 <= ttl <= 30 * DAY
    assert await redis_client.ttl(keys.ivr_calls("hotline")) > 0


async def test_record_saves_the_call_context_in_the_same_script(redis_client: aioredis.Redis, keys: Keys) -> None:
    recorder = callpath.RedisPathRecorder(redis_client, keys, retention_seconds=DAY)
    ctx = CallContext(id="ctx-1", number="15550001", started_at=1000.0, routing_reason="menu",
                      ivr_path=({"kind": "enter", "node": "main"},))
    await recorder.record(call("c1", 1000.0), context=call_context.as_write(keys, ctx, ttl=600))
    assert await callpath.read_path(redis_client, keys, "c1") == call("c1", 1000.0)
    assert await call_context.load(redis_client, keys, "ctx-1") == ctx
    assert 595 <= await redis_client.ttl(keys.call_context("ctx-1")) <= 600


async def test_a_very_long_path_is_written_whole(redis_client: aioredis.Redis, keys: Keys) -> None:
    """A caller wandering the menu for an hour: more list items than one Lua unpack() can take."""
    events = tuple(PathEvent(PathKind.KEY, "main", 1000.0 + i, key="9", target="goto:main") for i in range(9000))
    long = CallPath("c-long", "hotline", "abc123", 1000.0, events)
    await callpath.RedisPathRecorder(redis_client, keys, retention_seconds=DAY).record(long)
    assert await callpath.read_path(redis_client, keys, "c-long") == long


async def test_recording_twice_replaces_the_path(redis_client: aioredis.Redis, keys: Keys) -> None:
    recorder = callpath.RedisPathRecorder(redis_client, keys, retention_seconds=DAY)
    await recorder.record(call("c1", 1000.0))
    await recorder.record(call("c1", 1000.0))
    assert await redis_client.llen(keys.ivr_path("c1")) == 5  # header + 4 events, not 10


async def test_recent_paths_by_time_and_retention_trim(redis_client: aioredis.Redis, keys: Keys) -> None:
    recorder = callpath.RedisPathRecorder(redis_client, keys, retention_seconds=10 * DAY)
    t = 2_000_000_000.0
    await recorder.record(call("old", t - 20 * DAY))
    for i in range(3):
        await recorder.record(call(f"c{i}", t + i))
    # the newer writes trimmed the index entry older than the retention
    assert await redis_client.zscore(keys.ivr_calls("hotline"), "old") is None
    paths = await callpath.recent_paths(redis_client, keys, "hotline", since=t + 1, batch=1)
    assert [p.call_id for p in paths] == ["c1", "c2"]
    assert paths[0].events[2].key == "1"


async def test_unreadable_items_are_skipped(redis_client: aioredis.Redis, keys: Keys) -> None:
    recorder = callpath.RedisPathRecorder(redis_client, keys, retention_seconds=DAY)
    await recorder.record(call("c1", 1000.0))
    await redis_client.rpush(keys.ivr_path("c1"), "not json", '{"k":"bogus","n":"x","t":1}')
    read = await callpath.read_path(redis_client, keys, "c1")
    assert read is not None and len(read.events) == 4
    await redis_client.rpush(keys.ivr_path("broken"), "{}")
    assert await callpath.read_path(redis_client, keys, "broken") is None


async def test_announcement_switch(redis_client: aioredis.Redis, keys: Keys) -> None:
    assert await callpath.read_announcement(redis_client, keys, "hotline") == ()
    await callpath.set_announcement(redis_client, keys, "hotline", ["ss-noservice", "digits/5"], ttl_seconds=60)
    assert await callpath.read_announcement(redis_client, keys, "hotline") == ("ss-noservice", "digits/5")
    assert 0 < await redis_client.ttl(keys.announcement("hotline")) <= 60
    with pytest.raises(ValueError, match="not sound names"):
        await callpath.set_announcement(redis_client, keys, "hotline", ["../x", "a\nb"])
    await callpath.set_announcement(redis_client, keys, "hotline", [])
    assert await callpath.read_announcement(redis_client, keys, "hotline") == ()
    # a value written by something else is filtered, never passed on to AGI
    await redis_client.set(keys.announcement("hotline"), "ok-file,../../etc/passwd,bad name")
    assert await callpath.read_announcement(redis_client, keys, "hotline") == ("ok-file",)


async def test_stats_command_reads_recorded_paths(redis_client: aioredis.Redis, redis_url: str) -> None:
    recorder = callpath.RedisPathRecorder(redis_client, Keys("ivr"), retention_seconds=DAY)  # the CLI's prefix
    now = 2_000_000_000.0
    for i in range(3):
        await recorder.record(call(f"c{i}", now - 60 + i))
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["menus", "stats", "--menu", "hotline", "--redis-url", redis_url, "--format", "json"])
    out = io.StringIO()
    code = await asyncio.to_thread(cli.run_stats, args, out, lambda: now)
    report = json.loads(out.getvalue())
    assert code == 0 and report["calls"] == 3 and report["exits"] == {"self_served": 3}
    assert report["nodes"]["main"]["keys"] == {"1": 3} and report["policy"] == "third-fourth-first"
