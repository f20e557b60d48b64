"""The wallboard socket: `/ws/wallboard`, supervisors only, a snapshot then live changes.

Protocol (JSON text frames; client → server messages at most 4 KiB):

    The upgrade request's session (cookie `ivr_session` or `Authorization: Bearer`) authenticates
    the socket; a session of an agent who is not a supervisor gets HTTP 403 (no upgrade), and so
    does an upgrade carrying a session whose Origin header names another host. Without a
    session on the upgrade, the first message must be, within a few seconds:
    client: {"type": "auth", "token": "<session token>"}
            → a non-supervisor gets {"type": "error", "code": "forbidden", "status": 403} and close 4403
    server: {"type": "snapshot", "now": ms, "day": "YYYY-MM-DD", "service_level_seconds": N,
             "service_level_target": percent, "queues": [queue…], "agents": [agent…], "totals": {…},
             "incidents": {"known", "items"}}
    server: {"type": "queues", "now": ms, "queues": [queue…], "totals": {…}}     changed queues
    server: {"type": "agent", "now": ms, "agent": agent, "totals": {…}}          one agent changed
    server: {"type": "incidents", "now": ms, "incidents": {"known", "items": [incident…]}}
    client: {"type": "ping"}  →  server: {"type": "pong"}
    server: {"type": "error", "code": "...", "message": "..."}                  for each bad message

    queue:    {"name", "waiting", "oldest_joined_at" (ms or null), "answered", "answered_in_sl",
               "abandoned", "offered", "service_level" (percent or null), "callbacks"}
    agent:    {"id", "name", "state" (ready|ringing|on_call|wrap_up|paused|logged_out), "since" (ms)}
    totals:   {"callbacks_total", "agent_counts": {state: n}, "waiting"}
    incident: {"id", "service", "area", "state", "opened_at" (ms), "expected_fix_at" (ms or null),
               "service_names", "area_names" ({language: name}, maybe empty)}

Every frame carries the server's `now`: the page ticks waits and times in state from it (no
polling). A later "snapshot" (after the server lost its pub/sub link, or at midnight) replaces
everything. Each socket has its own bounded queue; a socket that falls that far behind is
dropped (its page reconnects and starts from a snapshot). Too many bad messages or too fast →
closed (1008); a session that ends (logout, expiry) closes its sockets.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from aiohttp import web

from ivrserver.domain.model import Agent
from ivrserver.services.sessions import Authenticator
from ivrserver.services.wallboard import WallboardService
from ivrserver.web.auth import request_token
from ivrserver.web.ws_common import HubSocket, Problem, SocketHub, parse_message

PATH = "/ws/wallboard"
FORBIDDEN_CLOSE = 4403  # a websocket close code in the application range: "403 supervisors only"


class WallboardHub(SocketHub[HubSocket]):
    """This instance's wallboard sockets, fed by the service's frames."""

    kind = "wallboard"
    path = PATH
    status_in_errors = True

    def __init__(self, service: WallboardService, auth: Authenticator, *, queue_size: int = 512,
                 heartbeat: float = 15.0, auth_timeout: float = 5.0, session_check: float = 30.0) -> None:
        super().__init__(auth, queue_size=queue_size, heartbeat=heartbeat, auth_timeout=auth_timeout,
                         session_check=session_check)
        self.service = service
        self._conns: set[HubSocket] = set()
        service.add_sink(self.broadcast)

    def install(self, app: web.Application) -> None:
        app[WALLBOARD] = self
        super().install(app)

    def _sockets(self) -> list[HubSocket]:
        return list(self._conns)

    def _unregister(self, conn: HubSocket) -> None:
        self._conns.discard(conn)

    def connections(self) -> int:
        return len(self._conns)

    # ---- fan-out (never awaits) ---------------------------------------------------------
    def broadcast(self, frame: str) -> None:
        for conn in list(self._conns):
            conn.send(frame)

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
        ws = await self._upgrade(request)
        if agent is None:
            found = await self._authenticate(ws)
            if found is None:
                return ws
            agent, token = found
        assert token is not None
        conn = HubSocket(self, agent, token, ws, request, self.queue_size)
        # Registered and given the snapshot in one step: every later frame follows it, none is missed.
        self._conns.add(conn)
        conn.send(json.dumps(self.service.snapshot(), separators=(",", ":"), ensure_ascii=False))
        async with self._serving(conn):
            await self._read_loop(conn)
        return ws

    async def _authenticate(self, ws: web.WebSocketResponse) -> tuple[Agent, str] | None:
        body = await self._receive_auth(ws)
        if body is None:
            return None
        agent = await self.auth.resolve(body["token"])
        if agent is None:
            await self._refuse(ws, "auth_failed", "invalid or expired session")
            return None
        if not agent.supervisor:
            await self._refuse(ws, "forbidden", "supervisors only", status=403, close_code=FORBIDDEN_CLOSE)
            return None
        return agent, body["token"]

    async def _on_message(self, conn: HubSocket, text: str) -> Problem | None:
        body = parse_message(text)
        if body is None:
            return ("bad_json", "expected a JSON object")
        kind = body.get("type")
        if kind == "ping":
            conn.send('{"type":"pong"}')
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


WALLBOARD = web.AppKey("ivrserver_wallboard", WallboardHub)
