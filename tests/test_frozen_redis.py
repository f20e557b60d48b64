"""A frozen Redis (SIGSTOP on a real redis-server) costs a caller a fraction of a second, not 5 s:
the caller snapshot has its own deadline (`redis.snapshot_timeout`), the caller is served as
unknown, the first key after the greeting is taken, and the end-of-call write does not hold the
AGI session (the channel's hang-up path) open.

The FastAGI peer is scripted the way res_agi.c talks, because the point is timing the server's
first prompt against a Redis we freeze; Asterisk itself is not needed to produce that edge.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ivrserver.app import IvrServer
from tests.conftest import private_redis
from tests.inprocess import ScriptedCaller, agi_headers, hotline_menus, server_settings, serving


@pytest.fixture
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test only: it is frozen with SIGSTOP (the session's must not be)."""
    with private_redis("ivrserver-frozen-") as own:
        yield own


@pytest.fixture
async def server(own_redis: tuple[str, subprocess.Popen[bytes]], tmp_path: Path) -> AsyncIterator[IvrServer]:
    settings = server_settings(own_redis[0], hotline_menus(tmp_path / "menus"), redis={"snapshot_timeout": 0.3})
    async with serving(settings) as srv:
        yield srv


def caller(port: int) -> ScriptedCaller:
    return ScriptedCaller(port, agi_headers(f"{time.time():.3f}"))


async def test_a_healthy_redis_first(server: IvrServer) -> None:
    call = caller(server.fastagi.port)
    await call.run()
    assert 0 <= call.first_prompt_after < 0.3, call.commands
    assert 0 <= call.closed_after_hangup < 0.5


async def test_a_frozen_redis_costs_the_caller_less_than_half_a_second_and_the_first_key_counts(
        server: IvrServer, own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    healthy = caller(server.fastagi.port)
    await healthy.run()
    os.kill(own_redis[1].pid, signal.SIGSTOP)
    try:
        for _ in range(2):  # the second call also meets the frozen Redis (on a fresh connection)
            call = caller(server.fastagi.port)
            await call.run()
            assert 0.25 <= call.first_prompt_after < 0.5, call.commands
            # the '1' pressed during the greeting took the caller on: same path as the healthy call
            assert call.commands[1:6] == healthy.commands[1:6]
            assert 0 <= call.closed_after_hangup < 0.5, "the end-of-call write held the AGI session"
    finally:
        os.kill(own_redis[1].pid, signal.SIGCONT)
