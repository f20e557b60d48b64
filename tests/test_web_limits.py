"""The web server's header timeout and connection cap, over real sockets (web/limits.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from ivrserver.app import IvrServer
from ivrserver.metrics import Metrics
from ivrserver.web.app import build_app
from ivrserver.web.limits import ConnectionGuard, GuardedSite
from tests.test_supervision import started  # noqa: F401 - the running app fixture

FULL = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"
HALF = b"GET /metrics HTTP/1.1\r\nHost: t\r\n"  # the blank line never comes


async def serve(guard: ConnectionGuard) -> AsyncIterator[tuple[int, Metrics]]:
    metrics = Metrics()
    guard.metrics = metrics
    runner = web.AppRunner(build_app(metrics, {}), access_log=None, handle_signals=False)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, guard=guard, access_log=None)
    await site.start()
    try:
        yield site.port, metrics
    finally:
        await runner.cleanup()


@pytest.fixture
async def quick_timeout() -> AsyncIterator[tuple[int, ConnectionGuard]]:
    guard = ConnectionGuard(header_timeout=0.3, max_connections=1000)
    async for port, _ in serve(guard):
        yield port, guard


@pytest.fixture
async def small_cap() -> AsyncIterator[tuple[int, ConnectionGuard]]:
    guard = ConnectionGuard(header_timeout=30, max_connections=20)
    async for port, _ in serve(guard):
        yield port, guard


async def connect(port: int, data: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if data:
        writer.write(data)
        await writer.drain()
    return reader, writer


async def get(port: int) -> bytes:
    reader, writer = await connect(port, FULL)
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), within) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_half_sent_requests_are_closed_after_the_header_timeout(
        quick_timeout: tuple[int, ConnectionGuard]) -> None:
    port, guard = quick_timeout
    held = [await connect(port, HALF if i % 2 else b"") for i in range(200)]  # half-sent and silent
    await asyncio.sleep(0.05)
    assert guard.open == 200
    assert await get(port) == b"HTTP/1.1 200 OK\r\n"  # a complete request in time is served
    results = await asyncio.gather(*(closed_by_server(r, 3) for r, _ in held))
    assert all(results) and guard.timed_out == 200
    await asyncio.sleep(0.05)
    assert guard.open == 0
    for _, writer in held:
        writer.close()


async def test_a_request_that_completes_in_time_is_not_cut_by_the_timer(
        quick_timeout: tuple[int, ConnectionGuard]) -> None:
    port, guard = quick_timeout
    reader, writer = await connect(port, HALF)
    writer.write(b"\r\n")  # the headers complete well within 0.3 s
    await writer.drain()
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
    await asyncio.sleep(0.5)  # past the header timeout: the keep-alive connection is still usable
    writer.write(FULL)
    await writer.drain()
    assert await asyncio.wait_for(reader.readuntil(b"\r\n"), 5) == b"HTTP/1.1 200 OK\r\n"
    assert guard.timed_out == 0
    writer.close()


async def test_past_the_cap_new_connections_are_closed_and_existing_ones_work(
        small_cap: tuple[int, ConnectionGuard]) -> None:
    port, guard = small_cap
    held = [await connect(port) for _ in range(20)]
    await asyncio.sleep(0.05)
    assert guard.open == 20
    extra_reader, extra_writer = await connect(port, FULL)
    assert await closed_by_server(extra_reader, 3)
    assert guard.rejected == 1
    reader, writer = held[0]  # an existing connection is still served
    writer.write(FULL)
    await writer.drain()
    assert await asyncio.wait_for(reader.readuntil(b"\r\n"), 5) == b"HTTP/1.1 200 OK\r\n"
    for _, w in held:
        w.close()
    extra_writer.close()
    for _ in range(100):
        if guard.open == 0:
            break
        await asyncio.sleep(0.02)
    assert guard.open == 0
    assert await get(port) == b"HTTP/1.1 200 OK\r\n"  # room again


async def test_the_app_serves_through_the_guard(started: tuple[IvrServer, Path]) -> None:  # noqa: F811
    server, _ = started
    assert server.web_guard.header_timeout == server.settings.web.header_timeout == 10.0
    assert server.web_guard.max_connections == server.settings.web.max_connections == 2000
    with socket.create_connection(("127.0.0.1", server.web_port)) as held:
        held.sendall(HALF)
        await asyncio.sleep(0.05)
        assert server.web_guard.open >= 1
        assert b'ivrserver_web_connections' in (await asyncio.wait_for(get_body(server.web_port), 5))


async def get_body(port: int) -> bytes:
    reader, writer = await connect(port, FULL.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    try:
        return await reader.read()
    finally:
        writer.close()
