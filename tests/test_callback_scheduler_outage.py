"""The callback scheduler across a Redis outage: a redis-server of this test's own is stopped under a
running scheduler and started again (the session's shared Redis is never touched).

The Dialer is the recording test double of test_callback_service (it stands in for AMI Originate).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivrserver.domain.callbacks import CallbackPolicy, CallbackState
from ivrserver.services.callbacks import CallbackPlacer, CallbackScheduler, CallbackService
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.keys import Keys
from tests.conftest import free_port
from tests.test_agent_ws import eventually
from tests.test_callback_service import Agents, RecordingDialer

ALL_DAY = CallbackPolicy(calling_from="00:00", calling_until="24:00")
OPEN = {"timezone": "UTC", "allowed_from": "00:00", "allowed_until": "24:00"}


class RedisProcess:
    """A redis-server on a fixed port and data directory (append-only file: data survive a restart)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed: run `make test`, which installs it")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    pytest.fail(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_scheduler_logs_one_line_when_redis_goes_and_one_when_it_returns(
        own_redis: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ivrserver.services.callbacks")
    client = aioredis.Redis.from_url(own_redis.url, decode_responses=True, socket_connect_timeout=0.5,
                                     socket_timeout=1)
    keys = Keys("outage")
    store = CallbackStore(client, keys)
    dialer = RecordingDialer()
    agents = Agents({"standard": ["agent1004"]})
    placer = CallbackPlacer(store, dialer, ALL_DAY, free_agents=agents.free_agents, is_free=agents.is_free)
    scheduler = CallbackScheduler(store, placer, instance="outage-test", poll_interval=0.1)
    service = CallbackService(store, ALL_DAY, on_due=scheduler.wake)
    body = {"customer_id": "c1", "number": "5551234", "preferred_agent": "agent1004", **OPEN}
    task = asyncio.create_task(scheduler.run())
    try:
        first = await service.request({**body, "at": time.time()})
        await eventually(lambda: len(dialer.calls) == 1)
        # Due while Redis is away: placed only once it is back.
        later = await service.request({**body, "at": time.time() + 1.0})
        own_redis.stop()
        await asyncio.sleep(2.0)  # 20 poll intervals without Redis
        assert scheduler.redis_down and len(dialer.calls) == 1
        own_redis.start()
        await eventually(lambda: len(dialer.calls) == 2, timeout=10)
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()
    assert [c["channel_id"] for c in dialer.calls] == [f"{first.id}-1", f"{later.id}-1"]
    lines = [r for r in caplog.records if r.name == "ivrserver.services.callbacks"]
    unavailable = [r for r in lines if "Redis unavailable" in r.getMessage()]
    back = [r for r in lines if "Redis back" in r.getMessage()]
    assert len(unavailable) == 1, [r.getMessage() for r in lines]
    assert len(back) == 1, [r.getMessage() for r in lines]
    assert all(r.exc_info is None for r in lines), "no traceback for an outage"
    assert unavailable[0].created < back[0].created
    done = await _final(own_redis.url, keys, later.id)
    assert done is CallbackState.CONNECTED


async def _final(url: str, keys: Keys, callback_id: str) -> CallbackState | None:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        cb = await CallbackStore(client, keys).get(callback_id)
        return None if cb is None else cb.state
    finally:
        await client.aclose()
