"""The /ws/agent hub: real aiohttp servers on free ports, real aiohttp websocket clients, real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from ivrserver.domain.hashing import Cost
from ivrserver.domain.model import Agent, Contact, ContactKind
from ivrserver.services.agent_prefs import AgentPrefsService
from ivrserver.services.customers import CustomerService
from ivrserver.services.privacy import PrivacyService
from ivrserver.services.screen_pop import PopFeed
from ivrserver.store import cases as case_store
from ivrserver.store import contacts
from ivrserver.store.audit import AuditLog
from ivrserver.store.keys import Keys
from ivrserver.store.pops import PopStore
from ivrserver.web import api_customers, api_prefs
from ivrserver.web.agent_ws import HUB, AgentHub
from ivrserver.web.api_agents import AgentApiContext, page_routes, routes
from ivrserver.web.auth import AUTH, Authenticator, agent_id_of, auth_middleware, authorize_hook, hash_password
from tests.conftest import free_port

AGENTS = {
    "agent1001": Agent(id="agent1001", name="Alice", endpoint="PJSIP/agent1001", tiers=("vip",)),
    "agent1002": Agent(id="agent1002", name="Bob", endpoint="PJSIP/agent1002"),
    "sup1": Agent(id="sup1", name="Sue", endpoint="PJSIP/agent1010", supervisor=True),
}
# Demo scheme: each agent's password is its own id. Hashed once per test session (scrypt is slow).
# A cheap cost keeps each test login fast; production uses hashing.PASSWORD_COST (tests/test_auth.py).
TEST_COST = Cost(10)
CREDENTIALS = {agent_id: hash_password(agent_id, cost=TEST_COST) for agent_id in AGENTS}


@dataclass
class Desk:
    """One ivrserver instance's agent-facing web side, as the lead composes it."""

    url: str
    hub: AgentHub
    auth: Authenticator
    store: PopStore
    audit: AuditLog
    redis: aioredis.Redis
    keys: Keys
    cases: dict[str, str] = field(default_factory=dict)  # seeded case ids by customer
    paused: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws/agent"


@contextlib.asynccontextmanager
async def make_desk(redis_url: str, keys: Keys, *, queue_size: int = 256, heartbeat: float = 15.0,
                    backlog_seconds: int = 3600, auth_timeout: float = 2.0, session_check: float = 30.0,
                    clock: Callable[[], float] = time.time, seed: bool = True,
                    static_tokens: dict[str, str] | None = None, credentials: dict[str, str] | None = None,
                    real_customers: bool = False, default_language: str = "auto",
                    **auth_options: Any) -> AsyncIterator[Desk]:
    """`real_customers`: serve the real customers REST routes (api_customers behind the privacy
    gate) instead of the two stand-ins below. `default_language`: the web.default_language setting
    behind GET/PUT /api/v1/me/preferences."""
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    store = PopStore(redis, keys, backlog_seconds=backlog_seconds)
    audit = AuditLog(redis, keys)
    privacy = PrivacyService(store, audit, clock=clock)
    auth = Authenticator(redis, keys, AGENTS, CREDENTIALS if credentials is None else credentials,
                         privacy=privacy, clock=clock, static_tokens=static_tokens,
                         **{"password_cost": TEST_COST, **auth_options})
    hub = AgentHub(redis, PopFeed(store, keys), auth, queue_size=queue_size, heartbeat=heartbeat,
                   auth_timeout=auth_timeout, session_check=session_check)
    desk = Desk(url="", hub=hub, auth=auth, store=store, audit=audit, redis=redis, keys=keys)
    if seed:
        # Contact records and cases as the hotline / customers streams write them (store/contacts.py, store/cases.py).
        now = time.time()
        for contact_id, customer_id in (("T1", "C1"), ("T2", "C2"), ("T-browser", "C1")):
            await contacts.save_contact(redis, keys, Contact(id=contact_id, kind=ContactKind.INBOUND,
                                                            number="13800000001", started_at=now,
                                                            customer_id=customer_id), now=now)
        for customer_id in ("C1", "C2"):
            case = await case_store.open_case(redis, keys, customer_id=customer_id, summary="premium SMS", now=now)
            desk.cases[customer_id] = case.id

    async def set_paused(agent_id: str, paused: bool) -> None:
        desk.paused.append((agent_id, paused))

    async def read_customer(request: web.Request) -> web.Response:
        # What api_customers does before returning a record (its Authorize hook).
        customer_id = request.match_info["customer_id"]
        await authorize_hook(request, customer_id, "customer.read")
        return web.json_response({"id": customer_id})

    async def list_customers(request: web.Request) -> web.Response:
        await authorize_hook(request, None, "customer.list")
        return web.json_response({"customers": []})

    async def whoami(request: web.Request) -> web.Response:
        # api_callbacks takes a synchronous CurrentAgent: agent_id_of after auth_middleware.
        return web.json_response({"agent": agent_id_of(request)})

    app = web.Application(middlewares=[auth_middleware()])
    app[AUTH] = auth
    hub.install(app)
    customers = CustomerService(redis, keys, clock=clock)
    app.add_routes(routes(AgentApiContext(auth=auth, hub=hub, privacy=privacy, customers=customers,
                                          set_paused=set_paused, clock=clock)))
    app.add_routes(page_routes())
    app.add_routes(api_prefs.routes(AgentPrefsService(redis, keys, default_language=default_language)))
    if real_customers:
        app.add_routes(api_customers.routes(customers, authorize_hook))
    else:
        app.router.add_get("/api/v1/customers/{customer_id}", read_customer)
        app.router.add_get("/api/v1/customers", list_customers)
    app.router.add_get("/api/v1/whoami", whoami)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    desk.url = f"http://{host}:{port}"
    try:
        assert app[HUB] is hub
        yield desk
    finally:
        await runner.cleanup()
        await redis.aclose()


async def token_for(desk: Desk, agent_id: str) -> str:
    session = await desk.auth.login(agent_id, agent_id)
    assert session is not None
    return session.token


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    return json.loads(msg.data)


async def recv_until(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws)
            if frame["type"] == kind:
                return frame


async def open_agent(session: aiohttp.ClientSession, desk: Desk, token: str, last_seq: int | None = 0,
                     ) -> aiohttp.ClientWebSocketResponse:
    """Connect, authenticate, say hello; returns after the replay header."""
    ws = await session.ws_connect(desk.ws_url)
    await ws.send_json({"type": "auth", "token": token})
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    if last_seq is not None:
        await ws.send_json({"type": "hello", "last_seq": last_seq})
        assert (await recv(ws))["type"] == "replay"
    return ws


async def assert_silent(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Nothing queued for this socket: a ping's pong is the very next frame."""
    await ws.send_json({"type": "ping"})
    assert (await recv(ws)) == {"type": "pong"}


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


@pytest.fixture
async def desk(redis_url: str, redis_client: aioredis.Redis, keys: Keys) -> AsyncIterator[Desk]:
    async with make_desk(redis_url, keys, auth_timeout=0.5) as d:
        yield d


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


POP = {"type": "pop", "phase": "ringing", "call_id": "ctx-1", "contact_id": "T1", "number": "13800000001",
       "customer": {"id": "C1", "name": "Wang Wei"}}


# ---- authentication ------------------------------------------------------------------------------
async def test_no_auth_in_time_is_closed(desk: Desk, http: aiohttp.ClientSession) -> None:
    ws = await http.ws_connect(desk.ws_url)
    frame = await recv(ws)
    assert frame["code"] == "auth_timeout"
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == aiohttp.WSCloseCode.POLICY_VIOLATION


@pytest.mark.parametrize(("first", "code"), [
    ({"type": "hello", "last_seq": 0}, "auth_required"),
    ({"type": "auth"}, "auth_required"),
    ({"type": "auth", "token": 123}, "auth_required"),
    ({"type": "auth", "token": "x" * 40}, "auth_failed"),
    ({"type": "auth", "token": "short"}, "auth_failed"),
    ({"type": "auth", "token": "<script>alert(1)</script>"}, "auth_failed"),
    ([1, 2], "auth_required"),
    ("not json", "auth_required"),
])
async def test_first_message_must_authenticate(desk: Desk, http: aiohttp.ClientSession, first: Any,
                                               code: str) -> None:
    ws = await http.ws_connect(desk.ws_url)
    await ws.send_str(first if isinstance(first, str) else json.dumps(first))
    assert (await recv(ws))["code"] == code
    assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
    assert desk.hub.connections() == 0


async def test_welcome_binds_socket_to_agent(desk: Desk, http: aiohttp.ClientSession) -> None:
    ws = await http.ws_connect(desk.ws_url)
    await ws.send_json({"type": "auth", "token": await token_for(desk, "agent1001")})
    welcome = await recv(ws)
    assert welcome == {"type": "welcome", "seq": 0, "epoch": None,
                       "agent": {"id": "agent1001", "name": "Alice", "supervisor": False}}
    assert desk.hub.connections("agent1001") == 1
    # A second auth on the same socket cannot rebind it to another agent.
    await ws.send_json({"type": "auth", "token": await token_for(desk, "agent1002")})
    assert (await recv(ws))["code"] == "already_authenticated"
    assert desk.hub.connections("agent1002") == 0
    await ws.close()


# ---- delivery -------------------------------------------------------------------------------------
async def test_pop_reaches_only_its_agent(desk: Desk, http: aiohttp.ClientSession) -> None:
    alice = await open_agent(http, desk, await token_for(desk, "agent1001"))
    bob = await open_agent(http, desk, await token_for(desk, "agent1002"))
    seq = await desk.hub.publish("agent1001", POP)
    frame = await recv(alice)
    assert frame["type"] == "event" and frame["seq"] == seq == 1
    assert frame["data"] == POP
    await assert_silent(bob)
    # Bob cannot ask for Alice's events: hello only replays Bob's own stream.
    bob2 = await open_agent(http, desk, await token_for(desk, "agent1002"), last_seq=None)
    await bob2.send_json({"type": "hello", "last_seq": 0, "agent": "agent1001"})
    replay = await recv(bob2)
    assert replay == {"type": "replay", "after": 0, "count": 0, "lost": False, "epoch": None, "reset": False}
    await assert_silent(bob2)
    for ws in (alice, bob, bob2):
        await ws.close()


async def test_ack_clears_unacked(desk: Desk, http: aiohttp.ClientSession) -> None:
    alice = await open_agent(http, desk, await token_for(desk, "agent1001"))
    bob = await open_agent(http, desk, await token_for(desk, "agent1002"))
    seq = await desk.hub.publish("agent1001", POP)
    await recv(alice)
    assert [(u["agent"], u["seq"]) for u in await desk.store.unacked(now=time.time())] == [("agent1001", seq)]
    # Bob acking Alice's number touches only Bob's (non-existent) pop.
    await bob.send_json({"type": "ack", "seq": seq})
    assert await recv(bob) == {"type": "acked", "seq": seq, "pending": False}
    assert len(await desk.store.unacked(now=time.time())) == 1
    await alice.send_json({"type": "ack", "seq": seq})
    assert await recv(alice) == {"type": "acked", "seq": seq, "pending": True}
    assert await desk.store.unacked(now=time.time()) == []
    await alice.close()
    await bob.close()


async def test_reconnect_replays_missed_pops(desk: Desk, http: aiohttp.ClientSession) -> None:
    token = await token_for(desk, "agent1001")
    ws = await open_agent(http, desk, token)
    await desk.hub.publish("agent1001", {**POP, "call_id": "c1"})
    assert (await recv(ws))["seq"] == 1
    await ws.close()
    # Mid-call the browser drops; two events happen while it is away.
    await desk.hub.publish("agent1001", {**POP, "call_id": "c2"})
    await desk.hub.publish("agent1001", {"type": "pop_phase", "call_id": "c2", "phase": "answered"})
    ws = await open_agent(http, desk, token, last_seq=None)
    await ws.send_json({"type": "hello", "last_seq": 1})
    epoch = (await desk.store.position("agent1001"))[1]
    assert await recv(ws) == {"type": "replay", "after": 1, "count": 2, "lost": False, "epoch": epoch,
                              "reset": False}
    missed = [await recv(ws), await recv(ws)]
    assert [(f["seq"], f["data"]["call_id"]) for f in missed] == [(2, "c2"), (3, "c2")]
    await desk.hub.publish("agent1001", {**POP, "call_id": "c3"})
    assert (await recv(ws))["seq"] == 4
    await assert_silent(ws)
    await ws.close()


async def test_auth_with_last_seq_replays_at_once(desk: Desk, http: aiohttp.ClientSession) -> None:
    for i in range(3):
        await desk.hub.publish("agent1001", {**POP, "call_id": f"c{i}"})
    ws = await http.ws_connect(desk.ws_url)
    await ws.send_json({"type": "auth", "token": await token_for(desk, "agent1001"), "last_seq": 2})
    assert (await recv(ws))["type"] == "welcome"
    assert (await recv(ws))["count"] == 1
    assert (await recv(ws))["seq"] == 3
    await ws.send_json({"type": "hello", "last_seq": 0})
    assert (await recv(ws))["code"] == "duplicate_hello"
    await ws.close()


async def test_events_between_welcome_and_hello_are_kept_once(desk: Desk, http: aiohttp.ClientSession) -> None:
    ws = await open_agent(http, desk, await token_for(desk, "agent1001"), last_seq=None)
    await desk.hub.publish("agent1001", {**POP, "call_id": "early"})
    await asyncio.sleep(0.2)  # the live copy is now held for this socket, and it is in the backlog too
    await ws.send_json({"type": "hello", "last_seq": 0})
    assert (await recv(ws))["count"] == 1
    assert (await recv(ws))["data"]["call_id"] == "early"
    await assert_silent(ws)  # delivered once, not twice
    await ws.close()


async def test_slow_socket_is_dropped_fast_one_keeps_receiving(redis_url: str, redis_client: aioredis.Redis,
                                                               keys: Keys) -> None:
    async with make_desk(redis_url, keys, queue_size=8) as desk, aiohttp.ClientSession() as http:
        token = await token_for(desk, "agent1001")
        slow = await open_agent(http, desk, token)
        fast = await open_agent(http, desk, token)
        other = await open_agent(http, desk, await token_for(desk, "agent1002"))
        assert desk.hub.connections("agent1001") == 2
        big = "x" * 64_000
        n = 300
        received: list[int] = []

        async def read_fast() -> None:
            while len(received) < n:
                frame = await recv(fast, timeout=20)
                received.append(frame["seq"])

        reader = asyncio.create_task(read_fast())
        try:
            for i in range(n):
                await desk.hub.publish("agent1001", {"type": "state", "i": i, "pad": big})
                if i % 50 == 0:
                    await desk.hub.publish("agent1002", {"type": "state", "i": i})
            async with asyncio.timeout(30):
                await reader
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        assert received == list(range(1, n + 1))
        assert desk.hub.connections("agent1001") == 1
        assert desk.hub.slow_disconnects == 1
        # The other agent was never stalled either.
        assert [(await recv(other))["data"]["i"] for _ in range(6)] == [0, 50, 100, 150, 200, 250]
        # The slow socket, once it finally reads, finds the connection gone.
        async with asyncio.timeout(20):
            while True:
                msg = await slow.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
        for ws in (slow, fast, other):
            await ws.close()


async def test_pop_crosses_instances(redis_url: str, redis_client: aioredis.Redis, keys: Keys) -> None:
    async with make_desk(redis_url, keys) as a, make_desk(redis_url, keys, seed=False) as b, \
            aiohttp.ClientSession() as http:
        on_b = await open_agent(http, b, await token_for(a, "agent1001"))  # session made on A works on B
        bob_on_a = await open_agent(http, a, await token_for(b, "agent1002"))
        seq = await a.hub.publish("agent1001", POP)
        frame = await recv(on_b)
        assert frame["seq"] == seq and frame["data"]["call_id"] == "ctx-1"
        await assert_silent(bob_on_a)
        # and back: published on B, read on A
        await b.hub.publish("agent1002", {**POP, "call_id": "back"})
        assert (await recv(bob_on_a))["data"]["call_id"] == "back"
        await on_b.close()
        await bob_on_a.close()


# ---- hostile input --------------------------------------------------------------------------------
@pytest.mark.parametrize(("message", "code"), [
    ("{not json", "bad_json"),
    ("[1,2,3]", "bad_json"),
    ('"hello"', "bad_json"),
    ('{"type": "subscribe", "agent": "agent1002"}', "unknown_type"),
    ('{"no": "type"}', "unknown_type"),
    ('{"type": "ack", "seq": "1"}', "bad_field"),
    ('{"type": "ack", "seq": true}', "bad_field"),
    ('{"type": "ack", "seq": 0}', "bad_field"),
    ('{"type": "ack", "seq": 1.5}', "bad_field"),
    ('{"type": "ack", "seq": 99999999999999999999999}', "bad_field"),
    ('{"type": "hello", "last_seq": -1}', "bad_field"),
    ('{"type": "hello", "last_seq": null}', "bad_field"),
])
async def test_malformed_messages_get_error_frames(desk: Desk, http: aiohttp.ClientSession, message: str,
                                                   code: str) -> None:
    ws = await open_agent(http, desk, await token_for(desk, "agent1001"), last_seq=None)
    await ws.send_str(message)
    frame = await recv(ws)
    assert frame["type"] == "error" and frame["code"] == code
    await assert_silent(ws)  # still connected and usable
    await ws.close()


async def test_binary_frame_is_an_error(desk: Desk, http: aiohttp.ClientSession) -> None:
    ws = await open_agent(http, desk, await token_for(desk, "agent1001"))
    await ws.send_bytes(b"\x00\x01")
    assert (await recv(ws))["code"] == "bad_frame"
    await ws.close()


async def test_repeated_abuse_closes(desk: Desk, http: aiohttp.ClientSession) -> None:
    ws = await open_agent(http, desk, await token_for(desk, "agent1001"))
    codes = []
    for _ in range(5):
        await ws.send_str("garbage")
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            codes.append(json.loads(msg.data)["code"])
    assert codes == ["bad_json"] * 5 + ["too_many_errors"]
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.POLICY_VIOLATION


async def test_oversized_message_closes(desk: Desk, http: aiohttp.ClientSession) -> None:
    ws = await open_agent(http, desk, await token_for(desk, "agent1001"))
    await ws.send_str(json.dumps({"type": "ping", "pad": "x" * 10_000}))
    async with asyncio.timeout(5):
        msg = await ws.receive()
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await ws.receive()
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_flooding_closes(desk: Desk, http: aiohttp.ClientSession) -> None:
    ws = await open_agent(http, desk, await token_for(desk, "agent1001"))
    for _ in range(60):
        await ws.send_json({"type": "ping"})
    codes = []
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            codes.append(json.loads(msg.data).get("code"))
    assert codes[-1] == "too_fast"
    assert msg.type == aiohttp.WSMsgType.CLOSE


# ---- lifecycle ------------------------------------------------------------------------------------
async def test_logout_closes_open_sockets(redis_url: str, redis_client: aioredis.Redis, keys: Keys) -> None:
    async with make_desk(redis_url, keys, session_check=0.2) as desk, aiohttp.ClientSession() as http:
        token = await token_for(desk, "agent1001")
        ws = await open_agent(http, desk, token)
        await desk.auth.logout(token)
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert desk.hub.connections() == 0


async def test_heartbeat_keeps_a_live_socket(redis_url: str, redis_client: aioredis.Redis, keys: Keys) -> None:
    async with make_desk(redis_url, keys, heartbeat=0.2) as desk, aiohttp.ClientSession() as http:
        ws = await open_agent(http, desk, await token_for(desk, "agent1001"))
        # Several ping/pong rounds: an aiohttp client answers pings while it is inside receive().
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await ws.receive()
        await desk.hub.publish("agent1001", POP)
        assert (await recv(ws))["seq"] == 1


async def test_heartbeat_drops_a_dead_socket(redis_url: str, redis_client: aioredis.Redis, keys: Keys) -> None:
    async with make_desk(redis_url, keys, heartbeat=0.2) as desk, aiohttp.ClientSession() as http:
        # autoping=False: this client never answers pings, like a browser whose network vanished.
        ws = await http.ws_connect(desk.ws_url, autoping=False)
        await ws.send_json({"type": "auth", "token": await token_for(desk, "agent1001")})
        await ws.send_json({"type": "hello", "last_seq": 0})
        await eventually(lambda: desk.hub.connections() == 1)
        await eventually(lambda: desk.hub.connections() == 0)
        await ws.close()


async def test_close_ends_sockets_and_tasks(redis_url: str, redis_client: aioredis.Redis, keys: Keys) -> None:
    async with make_desk(redis_url, keys) as desk, aiohttp.ClientSession() as http:
        ws = await open_agent(http, desk, await token_for(desk, "agent1001"))
        await desk.hub.close()
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.GOING_AWAY
        assert desk.hub.connections() == 0
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("agent-hub")]


STATIC_TOKEN = "static-token-agent1001-0123456789abcdef"


# ---- numbering epochs: Redis lost its data --------------------------------------------------------
async def test_open_socket_resyncs_when_redis_lost_the_counter(desk: Desk, http: aiohttp.ClientSession,
                                                               redis_client: aioredis.Redis) -> None:
    ws = await open_agent(http, desk, await token_for(desk, "agent1001"))
    for i in range(9):
        await desk.hub.publish("agent1001", {**POP, "call_id": f"old{i}"})
    seen = [await recv(ws) for _ in range(9)]
    assert [f["seq"] for f in seen] == list(range(1, 10)) and len({f["epoch"] for f in seen}) == 1
    old_epoch = seen[0]["epoch"]

    await redis_client.flushall()  # Redis restarted without persistence: the counter is gone
    seq = await desk.hub.publish("agent1001", {**POP, "call_id": "after-flush"})
    assert seq == 1
    # The socket is told the numbering restarted, then gets the new pop (before: nothing at all).
    header = await recv(ws)
    new_epoch = header["epoch"]
    assert header == {"type": "replay", "after": 0, "count": 1, "lost": True, "epoch": new_epoch, "reset": True}
    assert new_epoch != old_epoch
    event = await recv(ws)
    assert (event["epoch"], event["seq"], event["data"]["call_id"]) == (new_epoch, 1, "after-flush")
    await desk.hub.publish("agent1001", {**POP, "call_id": "next"})
    event = await recv(ws)
    assert (event["epoch"], event["seq"], event["data"]["call_id"]) == (new_epoch, 2, "next")
    # An ack naming the lost numbering touches nothing; one of the current numbering clears the pop.
    await ws.send_json({"type": "ack", "seq": 2, "epoch": old_epoch})
    assert await recv(ws) == {"type": "acked", "seq": 2, "pending": False}
    await ws.send_json({"type": "ack", "seq": 2, "epoch": new_epoch})
    assert await recv(ws) == {"type": "acked", "seq": 2, "pending": True}
    await assert_silent(ws)
    await ws.close()


async def test_reconnect_with_a_lost_epoch_replays_the_new_numbering_from_zero(
        desk: Desk, http: aiohttp.ClientSession, redis_client: aioredis.Redis) -> None:
    ws = await open_agent(http, desk, await token_for(desk, "agent1001"))
    for i in range(3):
        await desk.hub.publish("agent1001", {**POP, "call_id": f"old{i}"})
    old_epoch = [await recv(ws) for _ in range(3)][-1]["epoch"]
    await ws.close()
    # While the page is away Redis loses everything (the session too: log in again), and the new
    # numbering already counts past what the page saw.
    await redis_client.flushall()
    for i in range(5):
        await desk.hub.publish("agent1001", {**POP, "call_id": f"new{i}"})
    token = await token_for(desk, "agent1001")
    ws = await http.ws_connect(desk.ws_url)
    await ws.send_json({"type": "auth", "token": token, "last_seq": 3, "epoch": old_epoch})
    welcome = await recv(ws)
    assert (welcome["type"], welcome["seq"]) == ("welcome", 5) and welcome["epoch"] != old_epoch
    header = await recv(ws)
    assert (header["after"], header["count"], header["reset"], header["epoch"]) == (0, 5, True, welcome["epoch"])
    frames = [await recv(ws) for _ in range(5)]
    assert [(f["seq"], f["data"]["call_id"]) for f in frames] == [(i + 1, f"new{i}") for i in range(5)]
    await assert_silent(ws)
    await ws.close()
    # The same page on the current epoch resumes where it was, without a reset.
    ws = await http.ws_connect(desk.ws_url)
    await ws.send_json({"type": "auth", "token": token, "last_seq": 4, "epoch": welcome["epoch"]})
    assert (await recv(ws))["type"] == "welcome"
    assert (await recv(ws))["reset"] is False
    assert (await recv(ws))["seq"] == 5
    await ws.close()


@pytest.mark.parametrize("message", [
    {"type": "hello", "last_seq": 0, "epoch": 5},
    {"type": "hello", "last_seq": 0, "epoch": "<script>"},
    {"type": "hello", "last_seq": 0, "epoch": "a" * 33},
    {"type": "ack", "seq": 1, "epoch": ["x"]},
])
async def test_bad_epochs_are_refused(desk: Desk, http: aiohttp.ClientSession, message: dict[str, Any]) -> None:
    ws = await open_agent(http, desk, await token_for(desk, "agent1001"), last_seq=None)
    await ws.send_json(message)
    assert await recv(ws) == {"type": "error", "code": "bad_field",
                              "message": "epoch must be null or the epoch string the server sent"}
    await ws.close()


async def test_bad_epoch_in_auth_is_refused(desk: Desk, http: aiohttp.ClientSession) -> None:
    ws = await http.ws_connect(desk.ws_url)
    await ws.send_json({"type": "auth", "token": await token_for(desk, "agent1001"), "epoch": "zz top"})
    assert (await recv(ws))["code"] == "bad_field"
    assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE


# ---- deleting a customer ends every grant to it ---------------------------------------------------
async def test_deleted_customer_leaves_me_and_access(redis_url: str, redis_client: aioredis.Redis, keys: Keys,
                                                     http: aiohttp.ClientSession) -> None:
    async with make_desk(redis_url, keys, real_customers=True) as desk:
        sup = {"Authorization": "Bearer " + await token_for(desk, "sup1")}
        alice = {"Authorization": "Bearer " + await token_for(desk, "agent1001")}
        for cid in ("C7", "C8"):
            async with http.post(desk.url + "/api/v1/customers", headers=sup,
                                 json={"id": cid, "name": "Wang " + cid, "phones": []}) as resp:
                assert resp.status == 201, await resp.text()
        # Alice is handling both customers' calls (the pops granted her access).
        await desk.hub.publish("agent1001", {**POP, "call_id": "k7", "contact_id": "T7",
                                             "customer": {"id": "C7", "name": "Wang C7"}})
        await desk.hub.publish("agent1001", {**POP, "call_id": "k8", "contact_id": "T8",
                                             "customer": {"id": "C8", "name": "Wang C8"}})
        async with http.get(desk.url + "/api/v1/me", headers=alice) as resp:
            assert (await resp.json())["customers"] == ["C7", "C8"]
        async with http.get(desk.url + "/api/v1/customers/C7", headers=alice) as resp:
            assert resp.status == 200

        async with http.delete(desk.url + "/api/v1/customers/C7", headers=sup) as resp:
            assert resp.status == 204

        async with http.get(desk.url + "/api/v1/me", headers=alice) as resp:
            assert (await resp.json())["customers"] == ["C8"]
        now = time.time()
        assert not await desk.store.has_access("agent1001", "C7", now=now)
        assert not await desk.store.has_access("agent1001", "contact:T7", now=now)
        assert await desk.store.has_access("agent1001", "contact:T8", now=now)
        # A customer created again under the same id is not readable through the old grant.
        async with http.post(desk.url + "/api/v1/customers", headers=sup,
                             json={"id": "C7", "name": "Someone else", "phones": []}) as resp:
            assert resp.status == 201
        async with http.get(desk.url + "/api/v1/customers/C7", headers=alice) as resp:
            assert resp.status == 403


async def _start_redis(port: int, workdir: str) -> asyncio.subprocess.Process:
    """A redis-server that keeps nothing on disk (as a restart without persistence finds it)."""
    exe = shutil.which("redis-server")
    assert exe is not None, "redis-server is not installed"
    proc = await asyncio.create_subprocess_exec(
        exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return proc
            except OSError:
                await asyncio.sleep(0.05)


async def test_open_socket_resyncs_after_a_redis_restart_without_persistence(
        http: aiohttp.ClientSession, tmp_path: Path) -> None:
    # Its own redis-server: this test restarts it.
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    keys = Keys(prefix="restart")
    proc = await _start_redis(port, str(tmp_path))
    try:
        async with make_desk(url, keys, seed=False, static_tokens={"agent1001": STATIC_TOKEN}) as desk:
            ws = await open_agent(http, desk, STATIC_TOKEN)
            for i in range(4):
                await desk.hub.publish("agent1001", {**POP, "call_id": f"old{i}"})
            old = [await recv(ws) for _ in range(4)]
            proc.terminate()
            await proc.wait()
            proc = await _start_redis(port, str(tmp_path))  # empty: no counter, no backlog

            async def publish() -> int:
                async with asyncio.timeout(10):
                    while True:
                        try:
                            return await desk.hub.publish("agent1001", {**POP, "call_id": "after-restart"})
                        except (aioredis.ConnectionError, OSError):
                            await asyncio.sleep(0.1)
            assert await publish() == 1
            # Whether the pop came through the resubscribed channel or the catch-up that follows a
            # resubscription, the socket is told the numbering restarted and gets the pop.
            header = await recv_until(ws, "replay", timeout=15)
            assert header["reset"] is True and header["after"] == 0 and header["epoch"] != old[0]["epoch"]
            event = await recv_until(ws, "event")
            assert (event["seq"], event["epoch"], event["data"]["call_id"]) == (1, header["epoch"], "after-restart")
            await ws.close()
    finally:
        proc.terminate()
        await proc.wait()
