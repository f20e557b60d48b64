"""The wallboard: services/wallboard.py + web/wallboard_ws.py on real Redis, real aiohttp servers on free
ports and real websocket clients. Two "instances" share one Redis, as two ivrserver processes do: each
folds the same AMI events (typed events parsed from real header dicts), the counters count once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from ivrserver.config import WallboardSettings
from ivrserver.domain import callbacks as cbm
from ivrserver.domain import incidents as inc
from ivrserver.domain import wallboard as wb
from ivrserver.pbx import ami_events as ev
from ivrserver.pbx.asterisk_conf import ivr_queue
from ivrserver.services.agent_state import AgentStateService
from ivrserver.services.incidents import IncidentService
from ivrserver.services.privacy import PrivacyService
from ivrserver.services.wallboard import WallboardService
from ivrserver.store.audit import AuditLog
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.incidents import IncidentStore
from ivrserver.store.keys import Keys
from ivrserver.store.pops import PopStore
from ivrserver.web.auth import AUTH, Authenticator, auth_middleware
from ivrserver.web.wallboard_ws import FORBIDDEN_CLOSE, WallboardHub
from tests.test_agent_ws import AGENTS, CREDENTIALS, TEST_COST

SETTINGS = WallboardSettings(service_level_seconds=20, timezone="UTC", refresh_interval=0.2)


@dataclass
class Instance:
    url: str
    service: WallboardService
    hub: WallboardHub
    agents: AgentStateService
    auth: Authenticator

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws/wallboard"


@contextlib.asynccontextmanager
async def instance(redis_url: str, keys: Keys, *, settings: WallboardSettings = SETTINGS,
                   queue_size: int = 512, auth_timeout: float = 2.0, session_check: float = 30.0,
                   clock: Any = time.time) -> AsyncIterator[Instance]:
    """One ivrserver instance's wallboard side, composed as app.py does (its loops as tasks here)."""
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    pubsub = aioredis.Redis.from_url(redis_url, decode_responses=True)
    auth = Authenticator(redis, keys, AGENTS, CREDENTIALS, privacy=PrivacyService(PopStore(redis, keys),
                                                                                  AuditLog(redis, keys)),
                         password_cost=TEST_COST)
    agents = AgentStateService(redis, keys, AGENTS, wrap_up_seconds=1.0)
    await agents.start()
    service = WallboardService(redis, pubsub, keys, settings, agents=AGENTS, queue_of=ivr_queue,
                               queues=("vip", "general"), callbacks=CallbackStore(redis, keys), clock=clock)
    agents.on_change(service.on_agent)
    service.start_agents(agents.records())
    hub = WallboardHub(service, auth, queue_size=queue_size, auth_timeout=auth_timeout, session_check=session_check)
    app = web.Application(middlewares=[auth_middleware()])
    app[AUTH] = auth
    hub.install(app)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    tasks = [asyncio.create_task(service.listen()), asyncio.create_task(service.tick())]
    try:
        await service.wait_loaded()
        yield Instance(f"http://{host}:{port}", service, hub, agents, auth)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        await redis.aclose()
        await pubsub.aclose()


def ami(name: str, uid: str = "1733300000.1", **headers: Any) -> Any:
    base = {"Event": name, "Channel": f"PJSIP/callers-{uid[-8:]}", "Uniqueid": uid, "Linkedid": uid}
    base.update({k: str(v) for k, v in headers.items()})
    return ev.parse_event(base)


async def token_for(auth: Authenticator, agent_id: str) -> str:
    session = await auth.login(agent_id, agent_id)
    assert session is not None
    return session.token


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    frame: dict[str, Any] = json.loads(msg.data)
    return frame


async def recv_until(ws: aiohttp.ClientWebSocketResponse, kind: str, check: Any = None,
                     timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws)
            if frame["type"] == kind and (check is None or check(frame)):
                return frame


def queue_of(frame: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((q for q in frame.get("queues", []) if q["name"] == name), None)


async def open_board(session: aiohttp.ClientSession, inst: Instance, token: str) -> tuple[
        aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await session.ws_connect(inst.ws_url, headers={"Authorization": f"Bearer {token}"})
    snapshot = await recv(ws)
    assert snapshot["type"] == "snapshot", snapshot
    return ws, snapshot


@pytest.fixture
async def pair(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[tuple[Instance, Instance]]:
    keys = Keys(prefix=f"wb{time.monotonic_ns()}")
    async with instance(redis_url, keys) as a, instance(redis_url, keys) as b:
        yield a, b


async def test_a_queue_event_on_both_instances_reaches_every_board_once_and_counts_once(
        pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    token = await token_for(a.auth, "sup1")
    async with aiohttp.ClientSession() as session:
        ws_a, snap = await open_board(session, a, token)
        ws_b, _ = await open_board(session, b, token)
        assert [q["name"] for q in snap["queues"]] == ["vip", "general"]
        assert {x["id"]: x["state"] for x in snap["agents"]} == dict.fromkeys(AGENTS, "logged_out")
        assert snap["service_level_seconds"] == 20 and snap["incidents"] == {"known": False, "items": []}
        assert snap["service_level_target"] == 80.0  # wallboard.service_level_target, as a percent

        join = ami("QueueCallerJoin", Queue="ivr-vip", Position=1, Count=1, ChanVariable="QUEUE_PRIO=5")
        started = time.time()
        # Both instances read the same AMI event; the first one counts and publishes it.
        assert await a.service.handle(join) == 1
        assert await b.service.handle(join) == 0
        for ws in (ws_a, ws_b):
            frame = await recv_until(ws, "queues")
            vip = queue_of(frame, "vip")
            assert vip is not None and (vip["waiting"], vip["offered"]) == (1, 1)
            assert abs(vip["oldest_joined_at"] / 1000 - started) < 2
            assert frame["totals"]["waiting"] == 1

        # The agent answers after 12 s of waiting: answered in the 20 s service level.
        connect = ami("AgentConnect", Queue="ivr-vip", Interface="PJSIP/agent1001",
                      DestChannel="PJSIP/agent1001-00000002", HoldTime=12)
        leave = ami("QueueCallerLeave", Queue="ivr-vip", Position=1, Count=0)
        for inst in (b, a):
            for event in (leave, connect):
                await inst.service.handle(event)
        assert a.service.published + b.service.published == 3  # join, leave, answered
        for ws in (ws_a, ws_b):
            frame = await recv_until(ws, "queues", lambda f: queue_of(f, "vip")["answered"] == 1)
            vip = queue_of(frame, "vip")
            assert (vip["waiting"], vip["oldest_joined_at"], vip["service_level"]) == (0, None, 100.0)
        # A late second copy of an event on one instance changes nothing anywhere.
        assert await a.service.handle(connect) == 0
        await ws_a.close()
        await ws_b.close()


async def test_abandon_and_hangup_and_counters_survive_a_restart(redis_url: str, redis_client: aioredis.Redis) -> None:
    keys = Keys(prefix=f"wb{time.monotonic_ns()}")
    async with instance(redis_url, keys) as a:
        for uid in ("1.1", "2.2", "3.3"):
            await a.service.handle(ami("QueueCallerJoin", uid, Queue="ivr-general"))
        await a.service.handle(ami("QueueCallerAbandon", "1.1", Queue="ivr-general", HoldTime=45))
        await a.service.handle(ami("AgentConnect", "2.2", Queue="ivr-general", Interface="PJSIP/agent1002",
                                   DestChannel="PJSIP/agent1002-00000009", HoldTime=50))  # answered late
        assert await a.service.handle(ami("Hangup", "3.3")) == 1  # hung up while waiting, no leave seen
        day, midnight = wb.day_of(time.time(), "UTC")
        ttl = await redis_client.ttl(keys.wallboard_day(day))
        assert 0 < ttl <= midnight - time.time() + 3600 + 5  # gone an hour after the day ends
    # A new instance (the restart) starts from what Redis holds.
    async with instance(redis_url, keys) as again:
        view = again.service.board.queue_view("general")
        assert (view["offered"], view["answered"], view["answered_in_sl"], view["abandoned"], view["waiting"]) == (
            3, 1, 0, 1, 0)
        assert view["service_level"] == 0.0


async def test_agent_states_from_the_fold_and_wrap_up_ends_by_time(pair: tuple[Instance, Instance]) -> None:
    a, _ = pair
    token = await token_for(a.auth, "sup1")
    async with aiohttp.ClientSession() as session:
        ws, _ = await open_board(session, a, token)
        status = ev.parse_event({"Event": "QueueMemberStatus", "Queue": "ivr-vip", "MemberName": "agent1001",
                                 "Interface": "PJSIP/agent1001", "Status": "1", "Paused": "0"})
        await a.agents.handle(status)
        frame = await recv_until(ws, "agent")
        assert (frame["agent"]["id"], frame["agent"]["state"], frame["totals"]["agent_counts"]["ready"]) == (
            "agent1001", "ready", 1)
        leg = "PJSIP/agent1001-0000000a"
        for event in (ami("AgentConnect", Queue="ivr-vip", Interface="PJSIP/agent1001", DestChannel=leg),
                      ami("AgentComplete", Queue="ivr-vip", Interface="PJSIP/agent1001", DestChannel=leg)):
            await a.agents.handle(event)
        assert (await recv_until(ws, "agent"))["agent"]["state"] == "on_call"
        wrap = await recv_until(ws, "agent")
        assert wrap["agent"]["state"] == "wrap_up"
        # wrap_up_seconds=1: no event ends it; the board's ticker does.
        ready = await recv_until(ws, "agent", timeout=3)
        assert ready["agent"]["state"] == "ready" and ready["agent"]["since"] > wrap["agent"]["since"]
        await ws.close()


async def test_callbacks_waiting_per_queue_reach_the_board(pair: tuple[Instance, Instance],
                                                           redis_client: aioredis.Redis) -> None:
    a, _ = pair
    token = await token_for(a.auth, "sup1")
    store = CallbackStore(redis_client, a.service.keys)
    now = time.time()

    def job(i: int, place: cbm.QueuePlace | None) -> cbm.Callback:
        return cbm.Callback(id=f"cb{i}", customer_id="c1", number="5551234", earliest=now, latest=now + 3600,
                            created_at=now, state=cbm.CallbackState.SCHEDULED, due_at=now + 600, queue_place=place)
    async with aiohttp.ClientSession() as session:
        ws, _ = await open_board(session, a, token)
        assert await store.create(job(1, cbm.QueuePlace("vip", now - 30, 2)))
        assert await store.create(job(2, cbm.QueuePlace("vip", now - 20, 2)))
        assert await store.create(job(3, None))  # a scheduled callback: in the total only
        frame = await recv_until(ws, "queues", lambda f: f["totals"]["callbacks_total"] == 3)
        assert queue_of(frame, "vip")["callbacks"] == 2
        # A scheduler leases them (looking at them, dialling): not placed yet, the counts stay.
        claims = await store.claim(now + 601, lease_seconds=60, limit=10, claimer="i1")
        assert len(claims) == 3
        await asyncio.sleep(0.6)  # three refreshes
        assert a.service.board.callbacks == {"vip": 2} and a.service.board.callbacks_total == 3
        [first] = [c for c in claims if c.callback_id == "cb1"]
        assert await store.complete(first, None)  # cb1 placed and done: off the scheduler's sets
        frame = await recv_until(ws, "queues", lambda f: f["totals"]["callbacks_total"] == 2)
        assert queue_of(frame, "vip")["callbacks"] == 1
        await ws.close()


async def test_active_incidents_from_the_incidents_service(pair: tuple[Instance, Instance],
                                                           redis_client: aioredis.Redis) -> None:
    a, _ = pair
    policy = inc.Policy(services={"mobile_data": inc.ServiceInfo({"en": "mobile data", "zh": "移动数据"})},
                        areas={"chaoyang-liaoning": {"en": "Chaoyang", "zh": "朝阳"}})
    incidents = IncidentService(IncidentStore(redis_client, a.service.keys), policy, instance="i1")
    a.service.attach_incidents(incidents.list, policy=lambda: incidents.policy)
    token = await token_for(a.auth, "sup1")
    async with aiohttp.ClientSession() as session:
        ws, _ = await open_board(session, a, token)
        assert (await recv_until(ws, "incidents"))["incidents"] == {"known": True, "items": []}
        fix = time.time() + 3600
        opened = await incidents.open("mobile_data", "chaoyang-liaoning", actor="supervisor:sup1", expected_fix_at=fix)
        frame = await recv_until(ws, "incidents", lambda f: f["incidents"]["items"])
        [shown] = frame["incidents"]["items"]
        assert (shown["id"], shown["service"], shown["area"], shown["state"]) == (
            opened.id, "mobile_data", opened.area, "open")
        # what the policy calls them, for the page's language (not "mobile_data · chaoyang-liaoning")
        assert (shown["service_names"], shown["area_names"]) == ({"en": "mobile data", "zh": "移动数据"},
                                                                 {"en": "Chaoyang", "zh": "朝阳"})
        assert shown["expected_fix_at"] == round(fix * 1000)
        await incidents.resolve(opened.id, actor="supervisor:sup1")
        assert (await recv_until(ws, "incidents"))["incidents"]["items"] == []
        await ws.close()


async def test_non_supervisors_are_refused(pair: tuple[Instance, Instance]) -> None:
    a, _ = pair
    agent_token = await token_for(a.auth, "agent1001")
    async with aiohttp.ClientSession() as session:
        # A session on the upgrade request: HTTP 403, no socket.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(a.ws_url, headers={"Authorization": f"Bearer {agent_token}"})
        assert refused.value.status == 403
        async with session.get(a.ws_url.replace("ws://", "http://"), headers={
                "Authorization": f"Bearer {agent_token}", "Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as resp:
            assert resp.status == 403 and await resp.json() == {"error": "supervisors only"}
        # The supervisor's cookie sent by a page of another site (cross-site websocket hijacking): 403.
        sup_token = await token_for(a.auth, "sup1")
        host = a.url.removeprefix("http://")
        with pytest.raises(aiohttp.WSServerHandshakeError) as hijack:
            await session.ws_connect(a.ws_url, headers={"Cookie": f"ivr_session={sup_token}",
                                                         "Origin": "https://evil.example"})
        assert hijack.value.status == 403
        ws = await session.ws_connect(a.ws_url, headers={"Cookie": f"ivr_session={sup_token}",
                                                          "Origin": f"http://{host}"})
        assert (await recv(ws))["type"] == "snapshot"  # the wallboard page itself
        await ws.close()
        # The token in the first message: an error frame then close 4403.
        ws = await session.ws_connect(a.ws_url)
        await ws.send_json({"type": "auth", "token": agent_token})
        error = await recv(ws)
        assert (error["code"], error["status"]) == ("forbidden", 403)
        assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE and ws.close_code == FORBIDDEN_CLOSE
        # No session at all, a wrong one, or none in time.
        for first in ({"type": "auth", "token": "x" * 40}, {"type": "ping"}, None):
            ws = await session.ws_connect(a.ws_url)
            if first is not None:
                await ws.send_json(first)
            error = await recv(ws, timeout=5)
            assert error["type"] == "error" and error["code"] in ("auth_failed", "auth_required", "auth_timeout")
            await ws.close()
        assert a.hub.connections() == 0


async def test_a_supervisor_socket_by_first_message_and_bad_messages(pair: tuple[Instance, Instance]) -> None:
    a, _ = pair
    token = await token_for(a.auth, "sup1")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(a.ws_url)
        await ws.send_json({"type": "auth", "token": token})
        assert (await recv(ws))["type"] == "snapshot"
        await ws.send_json({"type": "ping"})
        assert (await recv(ws)) == {"type": "pong"}
        await ws.send_str("<script>")
        assert (await recv(ws))["code"] == "bad_json"
        await ws.send_json({"type": "auth", "token": token})
        assert (await recv(ws))["code"] == "already_authenticated"
        await ws.close()


async def test_a_slow_socket_is_dropped_and_the_others_keep_up(redis_url: str, redis_client: aioredis.Redis) -> None:
    keys = Keys(prefix=f"wb{time.monotonic_ns()}")
    async with instance(redis_url, keys, queue_size=16) as a:
        token = await token_for(a.auth, "sup1")
        async with aiohttp.ClientSession() as session:
            stuck, _ = await open_board(session, a, token)
            live, _ = await open_board(session, a, token)
            got: list[int] = []

            async def read() -> None:
                while len(got) < 300:
                    got.append(json.loads((await live.receive(timeout=10)).data)["n"])
            reader = asyncio.create_task(read())
            # The stuck socket never reads: once the kernel's buffers are full its writer waits, its
            # queue (16 frames) fills and it is dropped; the reading one gets every frame, in order.
            padding = "x" * 65536
            for i in range(300):
                a.hub.broadcast(json.dumps({"type": "queues", "queues": [], "totals": {}, "n": i, "pad": padding}))
                await asyncio.sleep(0.001)
            await asyncio.wait_for(reader, 20)
            assert got == list(range(300))
            assert a.hub.slow_disconnects == 1 and a.hub.connections() == 1
            await live.close()
            await stuck.close()


async def test_a_new_day_starts_from_zero_and_a_logout_closes_the_socket(redis_url: str,
                                                                        redis_client: aioredis.Redis) -> None:
    keys = Keys(prefix=f"wb{time.monotonic_ns()}")
    day_end = wb.day_of(time.time(), "UTC")[1]
    now = [day_end - 1.5]  # 1.5 s before midnight UTC, on this instance's clock
    async with instance(redis_url, keys, session_check=0.2, clock=lambda: now[0]) as a:
        token = await token_for(a.auth, "sup1")
        async with aiohttp.ClientSession() as session:
            ws, _ = await open_board(session, a, token)
            await a.service.handle(ami("QueueCallerJoin", "1.1", Queue="ivr-vip"))
            await a.service.handle(ami("AgentConnect", "1.1", Queue="ivr-vip", Interface="PJSIP/agent1001",
                                       DestChannel="PJSIP/agent1001-00000001", HoldTime=3))
            await recv_until(ws, "queues", lambda f: queue_of(f, "vip")["answered"] == 1)
            now[0] = day_end + 0.5
            a.service._wake.set()  # what the ticker's own deadline (midnight) would do
            fresh = await recv_until(ws, "snapshot")
            assert fresh["day"] == wb.day_of(now[0], "UTC")[0]
            assert queue_of(fresh, "vip")["answered"] == 0 and queue_of(fresh, "vip")["offered"] == 0
            # Yesterday's counters are still in Redis until their expiry (an hour past midnight).
            yesterday = keys.wallboard_day(wb.day_of(day_end - 1.5, "UTC")[0])
            assert await redis_client.hget(yesterday, "vip|answered") == "1"
            await a.auth.logout(token)
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            assert a.hub.connections() == 0
