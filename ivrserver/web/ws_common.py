"""What the two websocket hubs (`/ws/agent`, `/ws/wallboard`) share: one socket's bounded queue
and writer, the message rate window, the read loop with its error budget, the session sweep and
shutdown. Each hub adds its own protocol (`_on_message`) and its own index of sockets.

A socket is fed without awaiting (`HubSocket.send` from a listener or a sink); a socket whose
queue fills is aborted (its page reconnects), never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from ivrserver.domain.model import Agent
from ivrserver.services.sessions import Authenticator
from ivrserver.web import bodies

if TYPE_CHECKING:
    from ivrserver.supervision import Supervisor

log = logging.getLogger(__name__)

MAX_MESSAGE = 4096  # client → server frames, bytes
MAX_ERRORS = 5  # bad messages before the socket is closed
MAX_MESSAGES_PER_10S = 50
RATE_WINDOW = 10.0

Problem = tuple[str, str]  # (code, message) of one bad client message


class RateWindow:
    """At most `limit` messages per fixed window of `window` seconds (time passed in)."""

    def __init__(self, start: float, *, limit: int = MAX_MESSAGES_PER_10S, window: float = RATE_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self.start = start
        self.count = 0

    def allow(self, now: float) -> bool:
        """Count one message at `now`; False once the window holds more than `limit`."""
        if now - self.start > self.window:
            self.start, self.count = now, 0
        self.count += 1
        return self.count <= self.limit


def parse_message(text: Any) -> dict[str, Any] | None:
    """A client text frame as a JSON object, or None (not text, too long, not JSON, not an object)."""
    if not isinstance(text, str) or len(text) > MAX_MESSAGE:
        return None
    try:
        body = bodies.parse_json(text)
    except bodies.BodyError:
        return None
    return body if isinstance(body, dict) else None


def error_frame(code: str, message: str, status: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code}
    if status is not None:
        frame["status"] = status
    frame["message"] = message
    return frame


async def refuse_socket(ws: web.WebSocketResponse, code: str, message: str, *, status: int | None = None,
                        close_code: int = WSCloseCode.POLICY_VIOLATION) -> None:
    """Say why and close a socket that has no queue yet (during authentication)."""
    with contextlib.suppress(Exception):
        await ws.send_str(json.dumps(error_frame(code, message, status)))
        await ws.close(code=close_code, message=code.encode())


class HubSocket:
    """One authenticated socket: its bounded queue and the writer task that drains it."""

    def __init__(self, hub: SocketHub[Any], agent: Agent, token: str, ws: web.WebSocketResponse,
                 request: web.Request, queue_size: int) -> None:
        self.hub = hub
        self.agent = agent
        self.token = token
        self.ws = ws
        self.request = request
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.dead = False

    def send(self, frame: str) -> None:
        """Queue one ready-made frame; never awaits. A full queue drops the socket."""
        if self.dead:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.hub.slow_disconnects += 1
            self.kill("slow consumer")

    def control(self, message: Mapping[str, Any]) -> None:
        self.send(json.dumps(message, separators=(",", ":")))

    def kill(self, reason: str) -> None:
        """Drop the socket now (no close handshake: its buffers are what is stuck)."""
        if self.dead:
            return
        self.dead = True
        log.info("%s socket dropped", self.hub.kind, extra={"agent": self.agent.id, "reason": reason})
        self.hub._unregister(self)
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def write_loop(self) -> None:
        while True:
            frame = await self.queue.get()
            try:
                await self.ws.send_str(frame)
            finally:
                self.queue.task_done()
            self.hub.delivered += 1

    async def refuse(self, code: str, message: str, status: int | None = None) -> None:
        """Send a last error after whatever is queued, then close with 1008."""
        self.control(error_frame(code, message, status))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await self.queue.join()
            await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=code.encode())


S = TypeVar("S", bound=HubSocket)


class SocketHub(Generic[S]):
    """A hub of one instance's sockets of one kind. Subclasses keep the index of sockets
    (`_sockets`, `_unregister`), answer client messages (`_on_message`) and serve `handle`."""

    kind: ClassVar[str]  # names logs and tasks
    path: ClassVar[str]
    status_in_errors: ClassVar[bool] = False  # the closing error frames carry an HTTP-like status

    def __init__(self, auth: Authenticator, *, queue_size: int, heartbeat: float, auth_timeout: float,
                 session_check: float) -> None:
        self.auth = auth
        self.queue_size = queue_size
        self.heartbeat = heartbeat
        self.auth_timeout = auth_timeout
        self.session_check = session_check
        self._tasks: list[asyncio.Task[None]] = []
        self.supervisor: Supervisor | None = None  # the app's: its loops are restarted and counted
        self._closing = False
        self.delivered = 0
        self.slow_disconnects = 0

    # ---- what a hub adds ----------------------------------------------------------------
    def _sockets(self) -> list[S]:
        raise NotImplementedError

    def _unregister(self, conn: S) -> None:
        raise NotImplementedError

    async def _on_message(self, conn: S, text: str) -> Problem | None:
        raise NotImplementedError

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    # ---- lifecycle ----------------------------------------------------------------------
    def install(self, app: web.Application) -> None:
        """Own the hub's lifecycle on `app`, close sockets on shutdown, serve `path`."""
        app.cleanup_ctx.append(self.cleanup_ctx)
        app.on_shutdown.append(self._on_shutdown)
        app.router.add_routes(self.routes())

    def routes(self) -> list[web.RouteDef]:
        return [web.get(self.path, self.handle)]

    async def start(self) -> None:
        self._spawn(f"{self.kind}-sessions", self._sweep_sessions)

    def _spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """A loop of the hub for its whole life: under the app's supervisor when it has one (a crash is
        logged, counted and restarted, never a hub that silently stops), else a plain task (a hub on
        its own, as in tests)."""
        if self.supervisor is not None:
            self._tasks.append(self.supervisor.start(name, loop))
        else:
            self._tasks.append(asyncio.create_task(loop(), name=name))

    async def close(self) -> None:
        """End every task, then every socket."""
        self._closing = True
        for task in self._tasks:
            if self.supervisor is not None and task.get_name() in self.supervisor.tasks:
                await self.supervisor.stop_task(task.get_name())
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.close_sockets()

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing = True
        await self.close_sockets()

    async def close_sockets(self) -> None:
        for conn in self._sockets():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
            conn.kill("shutdown")

    def live(self) -> list[S]:
        return [c for c in self._sockets() if not c.dead]

    async def _sweep_sessions(self) -> None:
        """Sockets whose session ended (logout, expiry) are closed."""
        while True:
            await asyncio.sleep(self.session_check)
            conns = self.live()
            try:
                alive = await self.auth.alive([c.token for c in conns])
            except Exception:
                log.warning("%s: sessions not checked", self.kind, exc_info=True)
                continue
            for conn, ok in zip(conns, alive, strict=True):
                if not ok:
                    conn.kill("session ended")

    # ---- one socket ---------------------------------------------------------------------
    async def _upgrade(self, request: web.Request) -> web.WebSocketResponse:
        if self._closing:
            raise web.HTTPServiceUnavailable()
        ws = web.WebSocketResponse(heartbeat=self.heartbeat, max_msg_size=MAX_MESSAGE)
        await ws.prepare(request)
        return ws

    async def _receive_auth(self, ws: web.WebSocketResponse) -> dict[str, Any] | None:
        """The first message, `{type: auth, token, …}`, within `auth_timeout`; None: refused and closed."""
        try:
            async with asyncio.timeout(self.auth_timeout):
                msg = await ws.receive()
        except TimeoutError:
            await self._refuse(ws, "auth_timeout", "authenticate within a few seconds")
            return None
        body = parse_message(msg.data) if msg.type == WSMsgType.TEXT else None
        if body is None or body.get("type") != "auth" or not isinstance(body.get("token"), str):
            await self._refuse(ws, "auth_required", "first message must be {type: auth, token}")
            return None
        return body

    async def _refuse(self, ws: web.WebSocketResponse, code: str, message: str, *, status: int = 401,
                      close_code: int = WSCloseCode.POLICY_VIOLATION) -> None:
        await refuse_socket(ws, code, message, status=status if self.status_in_errors else None,
                            close_code=close_code)

    @contextlib.asynccontextmanager
    async def _serving(self, conn: S) -> AsyncIterator[None]:
        """Run the socket's writer while the body runs; then unregister it and close it."""
        writer = asyncio.create_task(conn.write_loop(), name=f"{self.kind}-writer-{conn.agent.id}")
        try:
            yield
        finally:
            conn.dead = True
            self._unregister(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await conn.ws.close()

    async def _read_loop(self, conn: S) -> None:
        """Answer the client's messages until it goes, is too fast or sends too many bad ones."""
        errors = 0
        rate = RateWindow(time.monotonic())
        async for msg in conn.ws:
            if conn.dead:
                break
            if not rate.allow(time.monotonic()):
                await self._refuse_conn(conn, "too_fast", "too many messages", 429)
                break
            if msg.type == WSMsgType.TEXT:
                problem = await self._on_message(conn, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
            else:
                problem = ("bad_frame", "text JSON frames only")
            if problem is not None:
                errors += 1
                conn.control(error_frame(*problem))
                if errors >= MAX_ERRORS:
                    await self._refuse_conn(conn, "too_many_errors", "too many bad messages", 400)
                    break

    async def _refuse_conn(self, conn: S, code: str, message: str, status: int) -> None:
        await conn.refuse(code, message, status if self.status_in_errors else None)
