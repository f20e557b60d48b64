"""The wallboard socket: `/ws/wallboard`, supervisors only, a snapshot then live changes.

Protocol (JSON text frames; client → server messages at most 4 KiB):

    The upgrade request's session (cookie `ivr_session` or `Authorization: Bearer`) authenticates
    the socket; a session of an agent who is not a supervisor gets HTTP 403 (no upgrade), and so
    does an upgrade carrying a session whose Origin header names another host. Without a
    session on the upgrade, the first message must be, within a few seconds:
    client: {"type": "auth", "token": "<session token>"}
            → a non-supervisor gets {"type": "error", "code": "forbidden", "status": 403} and close 4403
    server: {"type": "snapshot", "now": ms, "day": "YYYY-MM-DD", "service_level_seconds": N,
             "queues": [queue…], "agents": [agent…], "totals": {…}, "incidents": {"known", "items"}}
    server: {"type": "queues", "now": ms, "queues": [queue…], "totals": {…}}     changed queues
    server: {"type": "agent", "now": ms, "agent": agent, "totals": {…}}          one agent changed
    server: {"type": "incidents", "now": ms, "incidents": {"known", "items": [incident…]}}
    client: {"type": "ping"}  →  server: {"type": "pong"}
    server: {"type": "error", "code": "...", "message": "..."}                  for each bad message

    queue:    {"name", "waiting", "oldest_joined_at" (ms or null), "answered", "answered_in_sl",
               "abandoned", "offered", "service_level" (percent or null), "callbacks"}
    agent:    {"id", "name", "state" (ready|ringing|on_call|wrap_up|paused|logged_out), "since" (ms)}
    totals:   {"callbacks_total", "agent_counts": {state: n}, "waiting"}
    incident: {"id", "service", "area", "state", "opened_at" (ms), "expected_fix_at" (ms or null)}

Every frame carries the server's `now`: the page ticks waits and times in state from it (no
polling). A later "snapshot" (after the server lost its pub/sub link, or at midnight) replaces
everything. Each socket has its own bounded queue; a socket that falls that far behind is
dropped (its page reconnects and starts from a snapshot). Too many bad messages or too fast →
closed (1008); a session that ends (logout, expiry) closes its sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from ivrserver.domain.model import Agent
from ivrserver.services.sessions import Authenticator
from ivrserver.services.wallboard import WallboardService
from ivrserver.web import bodies
from ivrserver.web.auth import request_token

log = logging.getLogger(__name__)

PATH = "/ws/wallboard"
MAX_MESSAGE = 4096
MAX_ERRORS = 5
MAX_MESSAGES_PER_10S = 50
FORBIDDEN_CLOSE = 4403  # a websocket close code in the application range: "403 supervisors only"


class _Conn:
    def __init__(self, hub: WallboardHub, agent: Agent, token: str, ws: web.WebSocketResponse,
                 request: web.Request) -> None:
        self.hub = hub
        self.agent = agent
        self.token = token
        self.ws = ws
        self.request = request
        self.queue: asyncio.Queue[str] = asyncio.Queue(hub.queue_size)
        self.dead = False

    def put(self, frame: str) -> None:
        if self.dead:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.hub.slow_disconnects += 1
            self.kill("slow consumer")

    def kill(self, reason: str) -> None:
        if self.dead:
            return
        self.dead = True
        log.info("wallboard socket dropped", extra={"agent": self.agent.id, "reason": reason})
        self.hub._conns.discard(self)
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def write_loop(self) -> None:
        while True:
            frame = await self.queue.get()
            await self.ws.send_str(frame)
            self.hub.delivered += 1


class WallboardHub:
    """This instance's wallboard sockets, fed by the service's frames."""

    def __init__(self, service: WallboardService, auth: Authenticator, *, queue_size: int = 512,
                 heartbeat: float = 15.0, auth_timeout: float = 5.0, session_check: float = 30.0) -> None:
        self.service = service
        self.auth = auth
        self.queue_size = queue_size
        self.heartbeat = heartbeat
        self.auth_timeout = auth_timeout
        self.session_check = session_check
        self._conns: set[_Conn] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.delivered = 0
        self.slow_disconnects = 0
        service.add_sink(self.broadcast)

    # ---- lifecycle ----------------------------------------------------------------------
    def install(self, app: web.Application) -> None:
        app[WALLBOARD] = self
        app.cleanup_ctx.append(self._cleanup_ctx)
        app.on_shutdown.append(self._on_shutdown)
        app.router.add_routes(self.routes())

    def routes(self) -> list[web.RouteDef]:
        return [web.get(PATH, self.handle)]

    async def _cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        self._tasks.append(asyncio.create_task(self._sweep_sessions(), name="wallboard-sessions"))
        yield
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.close_sockets()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close_sockets()

    async def close_sockets(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
            conn.kill("shutdown")

    def connections(self) -> int:
        return len(self._conns)

    # ---- fan-out (never awaits) ---------------------------------------------------------
    def broadcast(self, frame: str) -> None:
        for conn in list(self._conns):
            conn.put(frame)

    async def _sweep_sessions(self) -> None:
        while True:
            await asyncio.sleep(self.session_check)
            conns = [c for c in self._conns if not c.dead]
            try:
                alive = await self.auth.alive([c.token for c in conns])
            except Exception:
                log.warning("wallboard: sessions not checked", exc_info=True)
                continue
            for conn, ok in zip(conns, alive, strict=True):
                if not ok:
                    conn.kill("session ended")

    # ---- one socket ---------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        token = request_token(request)
        if token and _cross_site(request):
            # A page of another site opening this socket in a supervisor's browser would carry their
            # cookie (cross-site websocket hijacking): only this origin's pages may use the cookie.
            return web.json_response({"error": "cross-origin websocket refused"}, status=403)
        agent = await self.auth.resolve(token) if token else None
        if agent is not None and not agent.supervisor:
            return web.json_response({"error": "supervisors only"}, status=403)
        ws = web.WebSocketResponse(heartbeat=self.heartbeat, max_msg_size=MAX_MESSAGE)
        await ws.prepare(request)
        if agent is None:
            found = await self._authenticate(ws)
            if found is None:
                return ws
            agent, token = found
        assert token is not None
        conn = _Conn(self, agent, token, ws, request)
        # Registered and given the snapshot in one step: every later frame follows it, none is missed.
        self._conns.add(conn)
        conn.put(json.dumps(self.service.snapshot(), separators=(",", ":"), ensure_ascii=False))
        writer = asyncio.create_task(conn.write_loop(), name=f"wallboard-writer-{agent.id}")
        try:
            await self._read_loop(conn)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self._conns.discard(conn)
            conn.dead = True
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await ws.close()
        return ws

    async def _authenticate(self, ws: web.WebSocketResponse) -> tuple[Agent, str] | None:
        try:
            async with asyncio.timeout(self.auth_timeout):
                msg = await ws.receive()
        except TimeoutError:
            await self._refuse(ws, "auth_timeout", "authenticate within a few seconds")
            return None
        body = _parse(msg.data) if msg.type == WSMsgType.TEXT else None
        if body is None or body.get("type") != "auth" or not isinstance(body.get("token"), str):
            await self._refuse(ws, "auth_required", "first message must be {type: auth, token}")
            return None
        agent = await self.auth.resolve(body["token"])
        if agent is None:
            await self._refuse(ws, "auth_failed", "invalid or expired session")
            return None
        if not agent.supervisor:
            await self._refuse(ws, "forbidden", "supervisors only", status=403, close_code=FORBIDDEN_CLOSE)
            return None
        return agent, body["token"]

    async def _refuse(self, ws: web.WebSocketResponse, code: str, message: str, *, status: int = 401,
                      close_code: int = WSCloseCode.POLICY_VIOLATION) -> None:
        with contextlib.suppress(Exception):
            await ws.send_str(json.dumps({"type": "error", "code": code, "status": status, "message": message}))
            await ws.close(code=close_code, message=code.encode())

    async def _read_loop(self, conn: _Conn) -> None:
        errors = 0
        window_start = time.monotonic()
        count = 0
        async for msg in conn.ws:
            if conn.dead:
                break
            now = time.monotonic()
            if now - window_start > 10:
                window_start, count = now, 0
            count += 1
            if count > MAX_MESSAGES_PER_10S:
                await self._refuse(conn.ws, "too_fast", "too many messages", status=429)
                break
            problem = self._on_message(conn, msg.data) if msg.type == WSMsgType.TEXT else (
                ("bad_frame", "text JSON frames only") if msg.type != WSMsgType.ERROR else None)
            if msg.type == WSMsgType.ERROR:
                break
            if problem is not None:
                errors += 1
                conn.put(json.dumps({"type": "error", "code": problem[0], "message": problem[1]}))
                if errors >= MAX_ERRORS:
                    await self._refuse(conn.ws, "too_many_errors", "too many bad messages", status=400)
                    break

    def _on_message(self, conn: _Conn, text: str) -> tuple[str, str] | None:
        body = _parse(text)
        if body is None:
            return ("bad_json", "expected a JSON object")
        kind = body.get("type")
        if kind == "ping":
            conn.put('{"type":"pong"}')
            return None
        if kind == "auth":
            return ("already_authenticated", "this socket is already authenticated")
        return ("unknown_type", "type must be ping")


def _cross_site(request: web.Request) -> bool:
    """The upgrade was sent by a browser page of another origin than this server's (its Origin
    header names another host); non-browser clients send no Origin."""
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc.lower() != request.host.lower()


def _parse(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or len(text) > MAX_MESSAGE:
        return None
    try:
        body = bodies.parse_json(text)
    except bodies.BodyError:
        return None
    return body if isinstance(body, dict) else None


WALLBOARD = web.AppKey("ivrserver_wallboard", WallboardHub)
