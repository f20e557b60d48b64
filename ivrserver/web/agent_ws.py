"""The screen-pop hub: `/ws/agent`, one websocket per agent browser tab.

Protocol (JSON text frames; client → server messages at most 4 KiB):

    client: {"type": "auth", "token": "<session token>", "last_seq"?: N, "epoch"?: E}   first, within auth_timeout
    server: {"type": "welcome", "agent": {"id", "name", "supervisor"}, "seq": <agent's current number>,
             "epoch": <current numbering id, or null before the agent's first event>}
    client: {"type": "hello", "last_seq": N, "epoch"?: E}   once (unless auth carried last_seq);
                                                    N = last number seen (0 = fresh page), E = its epoch
    server: {"type": "replay", "after": N', "count": k, "lost": bool, "epoch": E', "reset": bool}
            then k × {"type": "event", "epoch": E', "seq": n, "ts": <ms>, "data": {...pop / pop_phase / state...}}
            then live events, in order, never duplicated
    client: {"type": "ack", "seq": n, "epoch"?: E}  the pop n is on screen
    server: {"type": "acked", "seq": n, "pending": bool}
    client: {"type": "ping"}  →  server: {"type": "pong"}
    server: {"type": "error", "code": "...", "message": "..."}   for each bad message

Epochs: an agent's events are numbered 1, 2, 3 … within an epoch, a random id created with the
counter. If Redis loses the counter (FLUSHALL, a restart without persistence) the next event starts
a new epoch at 1. A client that names another epoch (or a number above the counter) gets a replay
from 0 with `reset: true` (N' = 0). On an open socket the hub notices the new epoch on the first
event of it and sends, unasked, `{"type": "replay", "after": 0, …, "reset": true}` followed by the
new epoch's backlog: the client adopts E' and numbers from 0 instead of discarding what follows.

Live events reach the socket between "welcome" and "hello" are held and delivered after the
replay, so nothing is lost or repeated. A socket only ever gets its own agent's events: it is bound
at auth and no message can name another agent. Too many bad messages or too fast → closed (1008);
no auth in time → closed (1008); a socket whose bounded queue fills (slow browser) is aborted.

Fan-out: `publish` stores + numbers the event in Redis and PUBLISHes it (one Lua call); every
instance's listener puts the ready-made frame into each local socket's own bounded queue without
awaiting; one writer task per socket drains it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import redis.asyncio as aioredis
from aiohttp import WSCloseCode, WSMsgType, web

from ivrserver.domain.model import Agent
from ivrserver.services.screen_pop import PopFeed, Replay, is_epoch
from ivrserver.services.sessions import Authenticator
from ivrserver.web import bodies

log = logging.getLogger(__name__)

MAX_MESSAGE = 4096
MAX_ERRORS = 5
MAX_MESSAGES_PER_10S = 50
MAX_SEQ = 2**53



class _Conn:
    """One authenticated socket: its queue, writer task and replay state."""

    def __init__(self, hub: AgentHub, agent: Agent, token: str, ws: web.WebSocketResponse,
                 request: web.Request, queue_size: int) -> None:
        self.hub = hub
        self.agent = agent
        self.token = token
        self.ws = ws
        self.request = request
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.last_seq = 0  # highest event number queued to this socket …
        self.epoch: str | None = None  # … in this numbering (None: none seen yet)
        self.ready = False  # False until hello: live events wait in `pending`
        self.pending: list[tuple[str, int, str]] = []
        self.dead = False
        self.said_hello = False
        self.sync = asyncio.Lock()  # one replay (hello, catch-up, resync) at a time

    def offer(self, epoch: str, seq: int, frame: str) -> bool:
        """Queue one numbered event frame; never awaits (called from the listener). False: the
        frame is of another epoch than this socket's, which needs a resync (`AgentHub._resync`)."""
        if self.dead:
            return True
        if not self.ready:
            if len(self.pending) >= self.queue.maxsize:
                self.kill("too many events before hello")
            else:
                self.pending.append((epoch, seq, frame))
            return True
        if epoch != self.epoch:
            if self.epoch is not None or seq != self.last_seq + 1:
                return False
            self.epoch = epoch  # the first numbered event this agent ever had, in order
        if seq <= self.last_seq:
            return True
        self.last_seq = seq
        self._put(frame)
        return True

    def replayed(self, replay: Replay) -> None:
        """Adopt a replay's numbering and queue its frames (the caller holds `sync`)."""
        if self.ready and not replay.reset and replay.epoch == self.epoch:
            # Live events may have been queued while the backlog was read: never go back.
            self.last_seq = max(self.last_seq, replay.after)
        else:
            self.last_seq = replay.after
        self.epoch = replay.epoch
        self.ready = True
        for seq, frame in replay.frames:
            self.offer(replay.epoch or "", seq, frame)

    def control(self, message: Mapping[str, Any]) -> None:
        if not self.dead:
            self._put(json.dumps(message, separators=(",", ":")))

    def _put(self, frame: str) -> None:
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.hub.slow_disconnects += 1
            self.kill("slow consumer")

    def kill(self, reason: str) -> None:
        """Drop the socket now (no close handshake: its buffers are what is stuck)."""
        if self.dead:
            return
        self.dead = True
        log.info("agent socket dropped", extra={"agent": self.agent.id, "reason": reason})
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

    async def refuse(self, code: str, message: str) -> None:
        """Send a last error after whatever is queued, then close with 1008."""
        self.control({"type": "error", "code": code, "message": message})
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await self.queue.join()
            await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=code.encode())


class AgentHub:
    """Per-instance hub. `start()` subscribes to the pop channel; `close()` ends every task and socket."""

    def __init__(self, redis: aioredis.Redis, feed: PopFeed, auth: Authenticator, *,
                 queue_size: int = 256, heartbeat: float = 15.0, auth_timeout: float = 5.0,
                 session_check: float = 30.0) -> None:
        self.redis = redis  # the pub/sub connection (blocks on reads: no socket timeout)
        self.store = feed
        self.auth = auth
        self.queue_size = queue_size
        self.heartbeat = heartbeat
        self.auth_timeout = auth_timeout
        self.session_check = session_check
        self._conns: dict[str, set[_Conn]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._closing = False
        self.delivered = 0
        self.slow_disconnects = 0

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._listen(), name="agent-hub-listener"))
        self._tasks.append(asyncio.create_task(self._sweep_sessions(), name="agent-hub-sessions"))
        async with asyncio.timeout(10):
            await self._subscribed.wait()

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.close_sockets()

    async def close_sockets(self) -> None:
        conns = [c for group in self._conns.values() for c in group]
        for conn in conns:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
            conn.kill("shutdown")

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing = True
        await self.close_sockets()

    def install(self, app: web.Application) -> None:
        """Put the hub on `app` (HUB key), own its lifecycle, and close sockets on shutdown."""
        app[HUB] = self
        app.cleanup_ctx.append(self.cleanup_ctx)
        app.on_shutdown.append(self._on_shutdown)
        app.router.add_routes(self.routes())

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/ws/agent", self.handle)]

    # ---- publishing ---------------------------------------------------------------------
    async def publish(self, agent_id: str, event: Mapping[str, Any], *, customer_id: str | None = None,
                      now: float | None = None) -> int:
        """Store, number and fan out one event for one agent on every instance (`PopFeed.publish`:
        a pop waits for its ack and grants access for its phase). Returns the event's number."""
        return await self.store.publish(agent_id, event, customer_id=customer_id, now=now)

    async def unacked(self, *, now: float) -> list[dict[str, Any]]:
        """Pops no browser has acknowledged yet (supervisors' view), oldest first."""
        return await self.store.unacked(now=now)

    # ---- local fan-out ------------------------------------------------------------------
    def _register(self, conn: _Conn) -> None:
        self._conns.setdefault(conn.agent.id, set()).add(conn)

    def _unregister(self, conn: _Conn) -> None:
        group = self._conns.get(conn.agent.id)
        if group is not None:
            group.discard(conn)
            if not group:
                del self._conns[conn.agent.id]

    def connections(self, agent_id: str | None = None) -> int:
        if agent_id is not None:
            return len(self._conns.get(agent_id, ()))
        return sum(len(g) for g in self._conns.values())

    def _dispatch(self, message: str) -> list[_Conn]:
        """Offer one channel message to the agent's local sockets; returns those that saw a new
        epoch and need a resync."""
        agent_id, _, rest = message.partition(" ")
        group = self._conns.get(agent_id)
        if not group:
            return []
        epoch, _, rest = rest.partition(" ")
        seq_text, _, frame = rest.partition(" ")
        try:
            seq = int(seq_text)
        except ValueError:
            log.warning("malformed pop channel message")
            return []
        return [conn for conn in list(group) if not conn.offer(epoch, seq, frame)]

    async def _listen(self) -> None:
        delay = 0.1
        first = True
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.store.channel)
                if not first:
                    await self._catch_up()
                first = False
                self._subscribed.set()
                delay = 0.1
                while True:
                    msg = await pubsub.get_message(timeout=None)
                    if msg is not None and msg.get("type") == "message":
                        data = msg["data"]
                        for conn in self._dispatch(data if isinstance(data, str) else data.decode()):
                            await self._resync_or_drop(conn)
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                log.warning("pop channel lost, resubscribing", extra={"error": str(exc)})
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _catch_up(self) -> None:
        """After a pub/sub outage, fetch what each ready local socket missed from the backlog (and
        notice a numbering that restarted meanwhile: Redis came back empty)."""
        for conn in [c for g in self._conns.values() for c in g if c.ready and not c.dead]:
            await self._resync_or_drop(conn)

    async def _resync_or_drop(self, conn: _Conn) -> None:
        """`_resync` from the listener: a socket that cannot be brought up to date is dropped (its
        page reconnects and replays), never the listener. Redis errors go to the listener's retry."""
        try:
            await self._resync(conn)
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            raise
        except Exception:
            log.exception("agent socket resync failed", extra={"agent": conn.agent.id})
            conn.kill("resync failed")

    async def _resync(self, conn: _Conn) -> None:
        """Bring one ready socket up to date from the backlog. When the agent's numbering is no
        longer the socket's (Redis lost its data), tell the client with a `replay` frame that
        has `reset: true`, then send the new numbering's events from 1."""
        async with conn.sync:
            if conn.dead or not conn.ready:
                return
            replay = await self.store.since(conn.agent.id, conn.last_seq, epoch=conn.epoch)
            if conn.dead:
                return
            if replay.reset:
                log.info("agent event numbering restarted; resyncing socket",
                         extra={"agent": conn.agent.id, "replayed": len(replay.frames)})
                conn.control(_replay_header(replay))
            conn.replayed(replay)

    async def _sweep_sessions(self) -> None:
        """Sockets whose session ended (logout, expiry) are closed."""
        while True:
            await asyncio.sleep(self.session_check)
            conns = [c for g in self._conns.values() for c in g if not c.dead]
            try:
                alive = await self.auth.alive([c.token for c in conns])
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
                continue
            for conn, ok in zip(conns, alive, strict=True):
                if not ok:
                    conn.kill("session ended")

    # ---- one socket ---------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=self.heartbeat, max_msg_size=MAX_MESSAGE, autoping=True)
        if self._closing:
            raise web.HTTPServiceUnavailable()
        await ws.prepare(request)
        auth = await self._authenticate(ws)
        if auth is None:
            return ws
        agent, token, last_seq, epoch = auth
        conn = _Conn(self, agent, token, ws, request, self.queue_size)
        writer = asyncio.create_task(conn.write_loop(), name=f"agent-ws-writer-{agent.id}")
        self._register(conn)
        try:
            seq, current_epoch = await self.store.position(agent.id)
            conn.control({"type": "welcome", "seq": seq, "epoch": current_epoch,
                          "agent": {"id": agent.id, "name": agent.name, "supervisor": agent.supervisor}})
            if last_seq is not None:
                await self._hello(conn, last_seq, epoch)
            await self._read_loop(conn)
        finally:
            conn.dead = True
            self._unregister(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await ws.close()
        return ws

    async def _authenticate(self, ws: web.WebSocketResponse) -> tuple[Agent, str, int | None, str | None] | None:
        try:
            async with asyncio.timeout(self.auth_timeout):
                msg = await ws.receive()
        except TimeoutError:
            await self._refuse(ws, "auth_timeout", "authenticate within a few seconds")
            return None
        if msg.type != WSMsgType.TEXT:
            await self._refuse(ws, "auth_required", "first message must be auth")
            return None
        body = _parse(msg.data)
        if body is None or body.get("type") != "auth" or not isinstance(body.get("token"), str):
            await self._refuse(ws, "auth_required", "first message must be {type: auth, token}")
            return None
        last_seq = body.get("last_seq")
        if last_seq is not None and not _is_seq(last_seq, allow_zero=True):
            await self._refuse(ws, "bad_field", "last_seq must be a whole number >= 0")
            return None
        epoch = body.get("epoch")
        if not _is_epoch(epoch):
            await self._refuse(ws, "bad_field", EPOCH_MESSAGE)
            return None
        agent = await self.auth.resolve(body["token"])
        if agent is None:
            await self._refuse(ws, "auth_failed", "invalid or expired session")
            return None
        return agent, body["token"], last_seq, epoch

    async def _refuse(self, ws: web.WebSocketResponse, code: str, message: str) -> None:
        with contextlib.suppress(Exception):
            await ws.send_str(json.dumps({"type": "error", "code": code, "message": message}))
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=code.encode())

    async def _hello(self, conn: _Conn, last_seq: int, epoch: str | None) -> None:
        conn.said_hello = True
        async with conn.sync:
            replay = await self.store.since(conn.agent.id, last_seq, epoch=epoch)
            if conn.dead:
                return
            conn.control(_replay_header(replay))
            conn.replayed(replay)
            pending, conn.pending = conn.pending, []
            stale = [seq for e, seq, frame in pending if not conn.offer(e, seq, frame)]
        if stale:
            await self._resync(conn)  # the numbering restarted between the backlog read and now

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
                await conn.refuse("too_fast", "too many messages")
                break
            if msg.type == WSMsgType.TEXT:
                problem = await self._on_message(conn, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
            else:
                problem = ("bad_frame", "text JSON frames only")
            if problem is not None:
                errors += 1
                conn.control({"type": "error", "code": problem[0], "message": problem[1]})
                if errors >= MAX_ERRORS:
                    await conn.refuse("too_many_errors", "too many bad messages")
                    break

    async def _on_message(self, conn: _Conn, text: str) -> tuple[str, str] | None:
        body = _parse(text)
        if body is None:
            return ("bad_json", "expected a JSON object")
        kind = body.get("type")
        if kind == "ping":
            conn.control({"type": "pong"})
            return None
        if kind == "hello":
            last_seq = body.get("last_seq", 0)
            if not _is_seq(last_seq, allow_zero=True):
                return ("bad_field", "last_seq must be a whole number >= 0")
            epoch = body.get("epoch")
            if not _is_epoch(epoch):
                return ("bad_field", EPOCH_MESSAGE)
            if conn.said_hello:
                return ("duplicate_hello", "hello was already received")
            await self._hello(conn, last_seq, epoch)
            return None
        if kind == "ack":
            seq = body.get("seq")
            if not _is_seq(seq, allow_zero=False):
                return ("bad_field", "seq must be a whole number >= 1")
            epoch = body.get("epoch")
            if not _is_epoch(epoch):
                return ("bad_field", EPOCH_MESSAGE)
            if epoch is not None and conn.epoch is not None and epoch != conn.epoch:
                pending = False  # a number of a lost numbering: it names no pop of the current one
            else:
                pending = await self.store.ack(conn.agent.id, seq)
            conn.control({"type": "acked", "seq": seq, "pending": pending})
            return None
        if kind == "auth":
            return ("already_authenticated", "this socket is already bound to an agent")
        return ("unknown_type", "type must be one of hello, ack, ping")


def _parse(text: str) -> dict[str, Any] | None:
    if len(text) > MAX_MESSAGE:
        return None
    try:
        body = bodies.parse_json(text)
    except bodies.BodyError:
        return None
    return body if isinstance(body, dict) else None


def _replay_header(replay: Replay) -> dict[str, Any]:
    return {"type": "replay", "after": replay.after, "count": len(replay.frames), "lost": replay.lost,
            "epoch": replay.epoch, "reset": replay.reset}


EPOCH_MESSAGE = "epoch must be null or the epoch string the server sent"


def _is_epoch(value: Any) -> bool:
    """Absent/null, or an epoch as the server makes them (the client echoes what it was sent)."""
    return value is None or is_epoch(value)


def _is_seq(value: Any, *, allow_zero: bool) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and (0 if allow_zero else 1) <= value <= MAX_SEQ)


HUB = web.AppKey("ivrserver_agent_hub", AgentHub)
