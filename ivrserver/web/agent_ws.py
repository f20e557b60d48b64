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
import logging
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from ivrserver.domain.model import Agent
from ivrserver.services.screen_pop import PopFeed, Replay, is_epoch
from ivrserver.services.sessions import Authenticator
from ivrserver.web.ws_common import HubSocket, Problem, SocketHub, parse_message

log = logging.getLogger(__name__)

MAX_SEQ = 2**53


class _Conn(HubSocket):
    """One authenticated socket: its queue, writer task and replay state."""

    def __init__(self, hub: AgentHub, agent: Agent, token: str, ws: web.WebSocketResponse,
                 request: web.Request, queue_size: int) -> None:
        super().__init__(hub, agent, token, ws, request, queue_size)
        self.last_seq = 0  # highest event number queued to this socket …
        self.epoch: str | None = None  # … in this numbering (None: none seen yet)
        self.ready = False  # False until hello: live events wait in `pending`
        self.pending: list[tuple[str, int, str]] = []
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
        self.send(frame)
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


class AgentHub(SocketHub[_Conn]):
    """Per-instance hub. `start()` subscribes to the pop channel; `close()` ends every task and socket."""

    kind = "agent"
    path = "/ws/agent"

    def __init__(self, redis: aioredis.Redis, feed: PopFeed, auth: Authenticator, *,
                 queue_size: int = 256, heartbeat: float = 15.0, auth_timeout: float = 5.0,
                 session_check: float = 30.0) -> None:
        super().__init__(auth, queue_size=queue_size, heartbeat=heartbeat, auth_timeout=auth_timeout,
                         session_check=session_check)
        self.redis = redis  # the pub/sub connection (blocks on reads: no socket timeout)
        self.store = feed
        self._conns: dict[str, set[_Conn]] = {}
        self._subscribed = asyncio.Event()

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._spawn("agent-hub-listener", self._listen)
        await super().start()
        async with asyncio.timeout(10):
            await self._subscribed.wait()

    def install(self, app: web.Application) -> None:
        """Put the hub on `app` (HUB key), own its lifecycle, and close sockets on shutdown."""
        app[HUB] = self
        super().install(app)

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
    def _sockets(self) -> list[_Conn]:
        return [c for group in self._conns.values() for c in group]

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
        for conn in [c for c in self.live() if c.ready]:
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

    # ---- one socket ---------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = await self._upgrade(request)
        auth = await self._authenticate(ws)
        if auth is None:
            return ws
        agent, token, last_seq, epoch = auth
        conn = _Conn(self, agent, token, ws, request, self.queue_size)
        self._register(conn)
        async with self._serving(conn):
            seq, current_epoch = await self.store.position(agent.id)
            conn.control({"type": "welcome", "seq": seq, "epoch": current_epoch,
                          "agent": {"id": agent.id, "name": agent.name, "supervisor": agent.supervisor}})
            if last_seq is not None:
                await self._hello(conn, last_seq, epoch)
            await self._read_loop(conn)
        return ws

    async def _authenticate(self, ws: web.WebSocketResponse) -> tuple[Agent, str, int | None, str | None] | None:
        body = await self._receive_auth(ws)
        if body is None:
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

    async def _on_message(self, conn: _Conn, text: str) -> Problem | None:
        body = parse_message(text)
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
