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

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError


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


def connect(url: str, **options: Any) -> aioredis.Redis:
    """A client for `url`; plain TCP connections use `Connection` (TLS and unix sockets keep redis-py's)."""
    if url.startswith("redis://"):
        options.setdefault("connection_class", Connection)
    return aioredis.Redis.from_url(url, **options)
