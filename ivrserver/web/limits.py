"""Connection limits of the web server: a header timeout and a connection cap.

aiohttp (3.14) has no request-header timeout: a connection that sends half a request line is only
closed by the keep-alive timer (`keepalive_timeout`, 3,630 s by default), so 3,000 half-sent
requests held 3,000 descriptors for an hour; it has no connection cap either. Both are added here
at the protocol level, the only place they can be: `GuardedRequestHandler` is aiohttp's own
`RequestHandler` with a timer from `connection_made` until its parser has produced the first
request (closed with no answer past `web.header_timeout`), and `GuardedSite` is a `TCPSite` whose
server makes those handlers and closes a new connection at once while `web.max_connections` are
open (existing ones keep working). Idle keep-alive connections (and a half-sent second request on
one) are closed by aiohttp's keep-alive timer, set to `KEEPALIVE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ivrserver.metrics import Metrics

log = logging.getLogger("ivrserver.web")

KEEPALIVE_TIMEOUT = 75.0  # aiohttp's default before 3.10; idle browsers reconnect in milliseconds


class ConnectionGuard:
    def __init__(self, *, header_timeout: float, max_connections: int, metrics: Metrics | None = None) -> None:
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.metrics = metrics
        self.open = 0
        self.rejected = 0
        self.timed_out = 0
        self._warned = False

    def admit(self) -> bool:
        if self.open >= self.max_connections:
            self.rejected += 1
            if self.metrics is not None:
                self.metrics.web_rejected.inc()
            if not self._warned:  # one line per overload episode, not one per connection
                self._warned = True
                log.warning("web.max_connections (%d) reached: new connections are closed", self.max_connections)
            return False
        self.open += 1
        self._gauge()
        return True

    def release(self) -> None:
        self.open -= 1
        if self.open < self.max_connections * 0.9:
            self._warned = False
        self._gauge()

    def header_timed_out(self) -> None:
        self.timed_out += 1
        if self.metrics is not None:
            self.metrics.web_header_timeouts.inc()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.web_connections.set(self.open)


class GuardedRequestHandler(RequestHandler):
    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._admitted = False
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._guard.admit():
            transport.abort()  # connection_lost follows and cleans up as for any closed connection
            return
        self._admitted = True
        self._header_timer = self._loop.call_later(self._guard.header_timeout, self._headers_late, transport)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self._request_count > 0:  # the parser produced a request
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self, transport: asyncio.BaseTransport) -> None:
        self._header_timer = None
        if self._request_count == 0:
            self._guard.header_timed_out()
            transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._admitted:
            self._admitted = False
            self._guard.release()
        super().connection_lost(exc)


class GuardedSite(web.TCPSite):
    """`web.TCPSite` whose connections are `GuardedRequestHandler`s (same server, same shutdown)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, guard: ConnectionGuard,
                 **handler_args: Any) -> None:
        super().__init__(runner, host, port)
        self.guard = guard
        self._handler_args = {"keepalive_timeout": KEEPALIVE_TIMEOUT, **handler_args}

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner, as TCPSite.start does
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        def handler() -> GuardedRequestHandler:
            return GuardedRequestHandler(server, guard=self.guard, loop=loop, **self._handler_args)

        self._server = await loop.create_server(handler, self._host, self._port, backlog=self._backlog,
                                                reuse_address=self._reuse_address, reuse_port=self._reuse_port)

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])
