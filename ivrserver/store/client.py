"""The Redis client of the server's hot paths.

redis-py (6.x) bounds every command *write* with `asyncio.wait_for` when `socket_timeout` is set,
which wraps each send in a new Task: about 6 % of ivrserver's CPU per call in the end-to-end
benchmark. Its reads are already bounded with `asyncio.timeout`; `Connection` here bounds the
write the same way, with the same errors and disconnect-on-failure as redis-py's own code, and
only when the command did not leave at once (a backlog in the socket buffer).

Replies are parsed by hiredis (redis-py picks its parser when hiredis is installed), and
`Connection` packs commands with `hiredis.pack_command` as redis-py's synchronous client does:
redis-py's asyncio client packs in Python, one encode call per argument (~60 per call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ivrserver.config import RedisSettings, parse_sentinels


class Connection(aioredis.Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        """redis-py's HiredisRespSerializer.pack: same splitting of the command name, same DataError."""
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # bool, None, a list ...: what redis-py's Encoder refuses too
            raise DataError(str(exc)) from exc

    async def send_packed_command(self, command: bytes | str | Iterable[bytes], check_health: bool = True) -> None:
        if not self.socket_timeout:
            await super().send_packed_command(command, check_health)
            return
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()
        if isinstance(command, str):
            command = command.encode()
        chunks = [command] if isinstance(command, bytes) else command
        try:
            self._writer.writelines(chunks)
            # A command almost always leaves in that call: only a backlog needs drain() and its timer.
            if self._writer.transport.get_write_buffer_size() or self._writer.transport.is_closing():
                async with asyncio.timeout(self.socket_timeout):
                    await self._writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # a send cut off half-way (cancellation): the connection cannot be reused
            await self.disconnect(nowait=True)
            raise


class SentinelConnection(SentinelManagedConnection, Connection):
    """A connection to whichever server the sentinels name primary, with `Connection`'s packing."""


class SentinelClient(aioredis.Redis):
    """The primary's client; closing it also closes its connections to the sentinels."""

    sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            for client in self.sentinel.sentinels:
                await client.aclose()


def connect(url: str, **options: Any) -> aioredis.Redis:
    """A client for `url`; plain TCP connections use `Connection` (TLS and unix sockets keep redis-py's)."""
    if url.startswith("redis://"):
        options.setdefault("connection_class", Connection)
    return aioredis.Redis.from_url(url, **options)


def connect_to(redis: RedisSettings, **options: Any) -> aioredis.Redis:
    """The client every part of ivrserver uses: `redis.url`, or through Redis Sentinel when
    `redis.sentinels` is set (the primary of `redis.sentinel_master`, found again after a failover;
    the database number and password still come from `redis.url`)."""
    if not redis.sentinels:
        return connect(redis.url, **options)
    parsed = urlparse(redis.url)
    db = int(parsed.path.strip("/") or 0) if parsed.path.strip("/").isdigit() else 0
    sentinel = Sentinel(parse_sentinels(redis.sentinels),
                        sentinel_kwargs={"socket_timeout": options.get("socket_timeout", 2.0),
                                         "socket_connect_timeout": options.get("socket_connect_timeout", 2.0)})
    if parsed.password:
        options.setdefault("password", unquote(parsed.password))
    options.setdefault("connection_class", SentinelConnection)
    client = sentinel.master_for(redis.sentinel_master, redis_class=SentinelClient, db=db, **options)
    client.sentinel = sentinel
    return client


def connect_for_command(redis: RedisSettings, url: str | None = None, **options: Any) -> aioredis.Redis:
    """A CLI command's client: `--redis-url URL` when given, else as the server connects (Sentinel too)."""
    return connect(url, **options) if url else connect_to(redis, **options)


async def wait_for_replica(client: aioredis.Redis, redis: RedisSettings) -> bool:
    """After a write that must survive a failover (a callback attempt's placed mark): with
    Sentinel, wait up to `redis.replica_wait_ms` for one replica to hold it (WAIT 1). True when it
    does, or when there is no replica to wait for (no sentinels, or replica_wait_ms 0)."""
    if not redis.sentinels or not redis.replica_wait_ms:
        return True
    return int(await client.execute_command("WAIT", 1, redis.replica_wait_ms)) >= 1
