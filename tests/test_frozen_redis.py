"""A frozen Redis (SIGSTOP on a real redis-server) costs a caller a fraction of a second, not 5 s:
the caller snapshot has its own deadline (`redis.snapshot_timeout`), the caller is served as
unknown, the first key after the greeting is taken, and the end-of-call write does not hold the
AGI session (the channel's hang-up path) open.

The FastAGI peer is scripted the way res_agi.c talks, because the point is timing the server's
first prompt against a Redis we freeze; Asterisk itself is not needed to produce that edge.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ivrserver.app import IvrServer
from tests.conftest import private_redis
from tests.inprocess import PROMPTS, hotline_menus, server_settings, serving

HEADERS = ("agi_network: yes\nagi_network_script: hotline\nagi_request: agi://127.0.0.1/hotline\n"
           "agi_channel: PJSIP/callers-00000001\nagi_uniqueid: {uid}\nagi_callerid: 15550001\n"
           "agi_calleridname: Eve\n\n")


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


class Call:
    """One scripted FastAGI session; records when the first prompt came and which commands followed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.commands: list[str] = []
        self.first_prompt_after = -1.0
        self.closed_after_hangup = -1.0

    async def run(self, *, prompts_before_hangup: int = 3) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        started = time.monotonic()
        writer.write(HEADERS.format(uid=f"{time.time():.3f}").encode())
        prompts = 0
        try:
            while True:
                line = (await asyncio.wait_for(reader.readline(), 10)).decode().strip()
                if not line:
                    return
                self.commands.append(line)
                if line.startswith(PROMPTS):
                    prompts += 1
                    if prompts == 1:
                        self.first_prompt_after = time.monotonic() - started
                        writer.write(b"200 result=49 endpos=8000\n")  # '1' pressed during the greeting
                    elif prompts > prompts_before_hangup:
                        writer.write(b"200 result=-1\nHANGUP\n")
                        await writer.drain()
                        hung_up = time.monotonic()
                        assert await asyncio.wait_for(reader.read(), 10) is not None
                        self.closed_after_hangup = time.monotonic() - hung_up
                        return
                    else:
                        writer.write(b"200 result=0 endpos=8000\n")
                else:
                    writer.write(b"200 result=1\n")
                await writer.drain()
        finally:
            writer.close()


async def test_a_healthy_redis_first(server: IvrServer) -> None:
    call = Call(server.fastagi.port)
    await call.run()
    assert 0 <= call.first_prompt_after < 0.3, call.commands
    assert 0 <= call.closed_after_hangup < 0.5


async def test_a_frozen_redis_costs_the_caller_less_than_half_a_second_and_the_first_key_counts(
        server: IvrServer, own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    healthy = Call(server.fastagi.port)
    await healthy.run()
    os.kill(own_redis[1].pid, signal.SIGSTOP)
    try:
        for _ in range(2):  # the second call also meets the frozen Redis (on a fresh connection)
            call = Call(server.fastagi.port)
            await call.run()
            assert 0.25 <= call.first_prompt_after < 0.5, call.commands
            # the '1' pressed during the greeting took the caller on: same path as the healthy call
            assert call.commands[1:6] == healthy.commands[1:6]
            assert 0 <= call.closed_after_hangup < 0.5, "the end-of-call write held the AGI session"
    finally:
        os.kill(own_redis[1].pid, signal.SIGCONT)
