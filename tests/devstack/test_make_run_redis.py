"""`make run`'s Redis keeps its data: restarted (even after a SIGKILL) with make run's settings and
data directory, it still has the customers, cases, callbacks and contact history written before.

Real redis-server (ivrserver.devstack.redis.LocalRedis as `make run` starts it), demo data loaded
by the real `ivrserver customers import`, records written by the real stores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivrserver import config
from ivrserver.devstack.demo import seed_demo
from ivrserver.devstack.pidfiles import PidFiles
from ivrserver.devstack.redis import LocalRedis
from ivrserver.devstack.stack import write_settings
from ivrserver.domain.callbacks import Callback
from ivrserver.domain.model import Contact, ContactKind, Outcome
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.cases import list_open_cases
from ivrserver.store.contacts import get_contact, save_contact
from ivrserver.store.customers import get_customer
from ivrserver.store.keys import Keys


@pytest.fixture
async def run_dir(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "run"


def make_run_redis(run_dir: Path) -> LocalRedis:
    """The Redis `make run` starts (cli.py): persistent, in <run>/redis, recorded in <run>/pids."""
    return LocalRedis(data_dir=run_dir / "redis", pids=PidFiles(run_dir / "pids"))


async def test_data_survives_a_restart_and_a_sigkill(run_dir: Path) -> None:
    redis = make_run_redis(run_dir)
    await redis.start()
    port = redis.port
    assert port is not None
    settings = config.Settings()
    settings = dataclasses.replace(settings, redis=dataclasses.replace(settings.redis, url=redis.url))
    settings_file = await asyncio.to_thread(write_settings, settings, run_dir / "ivrserver.yaml")
    keys = Keys(prefix=settings.redis.prefix)
    now = time.time()
    try:
        assert "imported 5 customer(s)" in await seed_demo(settings_file)
        client = aioredis.Redis.from_url(redis.url, decode_responses=True)
        try:
            assert await client.config_get("appendonly") == {"appendonly": "yes"}
            assert await CallbackStore(client, keys).create(Callback(
                id="cb-persist", customer_id="c-vip-1", number="15550001", earliest=now + 3600,
                latest=now + 7200, created_at=now, preferred_agent="agent1003", reason="refund"))
            await save_contact(client, keys, Contact(
                id="contact-persist", kind=ContactKind.INBOUND, number="15550001", started_at=now - 60,
                customer_id="c-vip-1", ended_at=now, routing_reason="repeat caller", agents=("agent1003",),
                outcome=Outcome.ANSWERED), now=now)
        finally:
            await client.aclose()
    finally:
        await redis.stop()          # a clean stop (SIGTERM): what Ctrl-C of make run does

    async def everything_is_there(url: str) -> None:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            customer = await get_customer(client, keys, "c-vip-1")
            assert customer is not None and customer.account_manager == "agent1001"
            cases = await list_open_cases(client, keys, "c-vip-1")
            assert [c.owner_agent for c in cases] == ["agent1003"]
            callback = await CallbackStore(client, keys).get("cb-persist")
            assert callback is not None and callback.reason == "refund"
            contact = await get_contact(client, keys, "contact-persist")
            assert contact is not None and contact.agents == ("agent1003",)
        finally:
            await client.aclose()

    again = make_run_redis(run_dir)
    again.port = port
    await again.start()
    try:
        await everything_is_there(again.url)
        # SIGKILL after the next fsync (appendfsync everysec): nothing written a second ago is lost.
        await asyncio.sleep(1.5)
        assert again._proc is not None
        os.kill(again._proc.pid, signal.SIGKILL)
        await again._proc.wait()
    finally:
        await again.stop()
    third = make_run_redis(run_dir)
    third.port = port
    await third.start()
    try:
        await everything_is_there(third.url)
    finally:
        await third.stop()
    assert (run_dir / "redis" / "appendonlydir").is_dir()
    assert list((run_dir / "pids").glob("*.pid")) == []


async def test_the_throwaway_redis_of_the_tests_keeps_nothing(tmp_path: Path) -> None:
    """The other side of the switch: without a data directory nothing reaches the disk."""
    redis = LocalRedis()
    await redis.start()
    try:
        client = aioredis.Redis.from_url(redis.url, decode_responses=True)
        try:
            assert await client.config_get("appendonly") == {"appendonly": "no"}
            assert await client.config_get("save") == {"save": ""}
        finally:
            await client.aclose()
    finally:
        await redis.stop()
