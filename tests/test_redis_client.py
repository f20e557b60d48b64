"""ivrserver.store.client: the server's Redis client, against a real redis-server."""

from __future__ import annotations

import os
import signal

import pytest
from redis.asyncio.connection import Connection as RedisPyConnection
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ivrserver.devstack.redis import LocalRedis
from ivrserver.store import client


async def test_commands_and_pipelines_work_over_the_timeout_bounded_connection(redis_url: str) -> None:
    r = client.connect(redis_url, decode_responses=True, socket_timeout=2)
    try:
        assert r.connection_pool.connection_class is client.Connection
        await r.set("client-test", "v", ex=10)
        async with r.pipeline(transaction=False) as pipe:
            pipe.get("client-test")
            pipe.incr("client-test-n")
            assert await pipe.execute() == ["v", 1]
    finally:
        await r.delete("client-test", "client-test-n")
        await r.aclose()


@pytest.mark.parametrize("args", [
    ("SET", "k", "välue ✓"), ("ZADD", "z", 1734567890.123456, "m"), ("SET", "k", 0.1), ("SET", "k", -0.0),
    ("SET", "k", 10**30), ("SET", "k", b"\x00\xffraw"), ("SET", "k", memoryview(b"view")), ("CONFIG GET", "maxmemory"),
    ("SET", "k", "x" * 100_000),
])
def test_commands_are_packed_byte_for_byte_as_redis_py_packs_them(args: tuple[object, ...]) -> None:
    ours, theirs = client.Connection(), RedisPyConnection()
    assert b"".join(ours.pack_command(*args)) == b"".join(bytes(c) for c in theirs.pack_command(*args))


@pytest.mark.parametrize("bad", [True, None, [1], {"a": 1}])
def test_an_argument_redis_cannot_take_is_refused_as_redis_py_refuses_it(bad: object) -> None:
    with pytest.raises(DataError):
        RedisPyConnection().pack_command("SET", "k", bad)
    with pytest.raises(DataError):
        client.Connection().pack_command("SET", "k", bad)


async def test_values_round_trip_through_hiredis_packing_and_parsing(redis_url: str) -> None:
    r = client.connect(redis_url, decode_responses=True, socket_timeout=2)
    try:
        async with r.pipeline(transaction=False) as pipe:
            pipe.set("client-test-u", "välue ✓\r\n*2")
            pipe.get("client-test-u")
            pipe.zadd("client-test-z", {"m": 1734567890.5})
            pipe.zscore("client-test-z", "m")
            pipe.hget("client-test-none", "f")
            assert await pipe.execute() == [True, "välue ✓\r\n*2", 1, 1734567890.5, None]
    finally:
        await r.delete("client-test-u", "client-test-z")
        await r.aclose()


async def test_a_write_to_a_stalled_redis_times_out_instead_of_hanging() -> None:
    """redis-server stopped (SIGSTOP): a large write fills the socket buffers and must give up after
    socket_timeout with redis-py's own TimeoutError, and the client works again once Redis does."""
    redis = LocalRedis()
    await redis.start()
    r = client.connect(redis.url, socket_timeout=0.5)
    proc = redis._proc
    assert proc is not None
    try:
        await r.ping()
        os.kill(proc.pid, signal.SIGSTOP)
        with pytest.raises(RedisTimeoutError, match="writing"):
            await r.set("big", b"x" * (64 * 1024 * 1024))
        os.kill(proc.pid, signal.SIGCONT)
        assert await r.ping() is True  # a fresh connection replaces the one dropped on the timeout
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        await r.aclose()
        await redis.stop()


def test_tls_and_unix_urls_keep_redis_py_connections() -> None:
    assert client.connect("unix:///tmp/none.sock").connection_pool.connection_class is not client.Connection
    assert client.connect("rediss://127.0.0.1:1").connection_pool.connection_class is not client.Connection
