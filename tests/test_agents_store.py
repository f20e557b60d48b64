"""Agents' live state in a real Redis: store round trips, the AMI-fed service, routing on top of it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from ivrserver.config import RoutingSettings
from ivrserver.domain.agent_state import AgentLive, DeviceStatus, Leg
from ivrserver.domain.model import AgentState, AgentStatus, CallerSnapshot, Customer, Tier
from ivrserver.domain.routing import Action
from ivrserver.files.routing import load_routing
from ivrserver.pbx.ami_events import parse_event
from ivrserver.pbx.fastagi import AgiChannel, FastAgiServer
from ivrserver.services.agent_state import AgentStateService
from ivrserver.services.routing import RoutingService, channel_variables
from ivrserver.store import agents as store
from ivrserver.store.keys import Keys

POLICY, AGENTS_CONFIG = load_routing(RoutingSettings())
AGENTS = AGENTS_CONFIG.agents
T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
VIP = CallerSnapshot(number="13800000001", customer=Customer(id="c1", name="Zhou Xun", phones=("13800000001",),
                                                             tier=Tier.VIP, account_manager="agent1002"))
UNKNOWN = CallerSnapshot(number="13900000009")


class CountingConnection(Connection):
    """Counts writes to the socket: one per command, one per pipeline — i.e. round trips."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sent += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def counted(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[aioredis.Redis]:
    pool = aioredis.ConnectionPool.from_url(redis_url, decode_responses=True, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    await client.ping()  # connect (HELLO/SETINFO/SELECT) before anything is counted
    yield client
    await client.aclose()
    await pool.aclose()


async def round_trips(coro: Any) -> tuple[Any, int]:
    before = CountingConnection.sent
    result = await coro
    return result, CountingConnection.sent - before


RECORDS = [
    AgentLive("agent1001", logged_in=True, device=DeviceStatus.NOT_INUSE, since=1.5),
    AgentLive("agent1002", logged_in=True, paused=True, device=DeviceStatus.INUSE,
              legs=(("PJSIP/agent1002-00000001", Leg.UP), ("PJSIP/agent1002-00000002", Leg.RINGING)),
              wrap_up_until=0.0, since=1732330000.25),
    AgentLive("agent1003", logged_in=True, device=DeviceStatus.NOT_INUSE, wrap_up_until=110.0, since=100.0),
    AgentLive("agent1004"),
]


async def test_records_round_trip(redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save(redis_client, keys, RECORDS)
    assert await store.load(redis_client, keys, [r.agent_id for r in RECORDS]) == {r.agent_id: r for r in RECORDS}
    assert await store.load_all(redis_client, keys) == {r.agent_id: r for r in RECORDS}
    assert await redis_client.get("t:agentstate:agent1002") == (
        '{"logged_in":true,"paused":true,"device":2,"legs":[["PJSIP/agent1002-00000001","up"],'
        '["PJSIP/agent1002-00000002","ringing"]],"wrap_up_until":0.0,"since":1732330000.25}')
    assert await redis_client.smembers("t:agentstates") == {r.agent_id for r in RECORDS}


async def test_an_unreadable_record_is_skipped_not_fatal(redis_client: aioredis.Redis, keys: Keys,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    await store.save(redis_client, keys, RECORDS[:2])
    await redis_client.set("t:agentstate:agent1002", '{"logged_in": true}')
    assert await store.load(redis_client, keys, ["agent1001", "agent1002"]) == {"agent1001": RECORDS[0]}
    assert "unreadable agent state of agent1002 skipped" in caplog.text


async def test_unknown_agents_are_left_out(redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save(redis_client, keys, RECORDS[:1])
    assert await store.load(redis_client, keys, ["agent1001", "agent1009"]) == {"agent1001": RECORDS[0]}
    assert await store.load(redis_client, keys, []) == {}


async def test_statuses_apply_wrap_up_expiry(redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save(redis_client, keys, RECORDS)
    ids = ["agent1002", "agent1003", "agent1004"]
    assert await store.statuses(redis_client, keys, ids, 105.0) == {
        "agent1002": AgentStatus("agent1002", AgentState.ON_CALL, 1732330000.25),
        "agent1003": AgentStatus("agent1003", AgentState.WRAP_UP, 100.0),
        "agent1004": AgentStatus("agent1004", AgentState.LOGGED_OUT, 0.0),
    }
    later = await store.statuses(redis_client, keys, ["agent1003"], 111.0)
    assert later == {"agent1003": AgentStatus("agent1003", AgentState.READY, 110.0)}


async def test_forget(redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save(redis_client, keys, RECORDS)
    await store.forget(redis_client, keys, ["agent1001", "agent1004"])
    assert sorted(await store.load_all(redis_client, keys)) == ["agent1002", "agent1003"]
    assert await redis_client.exists("t:agentstate:agent1001") == 0


async def test_round_trips(counted: aioredis.Redis, keys: Keys) -> None:
    _, n = await round_trips(store.save(counted, keys, RECORDS))
    assert n == 1
    _, n = await round_trips(store.statuses(counted, keys, [r.agent_id for r in RECORDS], 1.0))
    assert n == 1
    _, n = await round_trips(store.statuses(counted, keys, [], 1.0))
    assert n == 0
    routing = RoutingService(counted, keys, POLICY, AGENTS, clock=lambda: T0)
    vip, n = await round_trips(routing.route(VIP))
    assert (vip.reason, n) == ("VIP caller: account manager agent1002 busy → vip queue", 1)
    unknown, n = await round_trips(routing.route(UNKNOWN))
    assert (unknown.action, n) == (Action.MENU, 0)


def member_status(agent: str, status: int, paused: int = 0) -> Any:
    return parse_event({"Event": "QueueMemberStatus", "Queue": "vip", "MemberName": agent,
                        "Interface": f"PJSIP/{agent}", "Status": str(status), "Paused": str(paused)})


def queue_event(event: str, agent: str, leg: str) -> Any:
    return parse_event({"Event": event, "Channel": "PJSIP/callers-00000001", "Uniqueid": "1.1", "Linkedid": "1.1",
                        "DestChannel": leg, "DestUniqueid": "1.2", "Queue": "vip", "MemberName": agent,
                        "Interface": f"PJSIP/{agent}"})


def hangup(channel: str) -> Any:
    return parse_event({"Event": "Hangup", "Channel": channel, "Uniqueid": "1.2", "Linkedid": "1.1",
                        "Cause": "16"})


async def test_ami_events_to_routing_across_instances(redis_url: str, redis_client: aioredis.Redis,
                                                       keys: Keys) -> None:
    """Instance A folds AMI events into Redis; instance B (its own client) routes from Redis."""
    clock = [T0]
    tracker = AgentStateService(redis_client, keys, AGENTS, wrap_up_seconds=AGENTS_CONFIG.wrap_up_seconds,
                                clock=lambda: clock[0].timestamp())
    await tracker.start()
    events: asyncio.Queue[object] = asyncio.Queue()
    consumer = asyncio.create_task(tracker.run(events))
    other = aioredis.Redis.from_url(redis_url, decode_responses=True)
    routing = RoutingService(other, keys, POLICY, AGENTS, clock=lambda: clock[0])
    leg = "PJSIP/agent1002-0000000a"

    async def feed(*items: Any, at: float) -> str:
        clock[0] = T0 + timedelta(seconds=at)
        for item in items:
            events.put_nowait(item)
        await events.join()
        return (await routing.route(VIP)).reason

    try:
        assert await feed(at=0) == "VIP caller: account manager agent1002 logged out → vip queue"
        assert await feed(member_status("agent1002", 1), at=1) == (
            "VIP caller → account manager agent1002, then vip queue")
        assert await feed(queue_event("AgentCalled", "agent1002", leg), at=2) == (
            "VIP caller: account manager agent1002 ringing → vip queue")
        assert await feed(queue_event("AgentConnect", "agent1002", leg), member_status("agent1002", 2), at=5) == (
            "VIP caller: account manager agent1002 busy → vip queue")
        assert await feed(hangup(leg), member_status("agent1002", 1), at=100) == (
            "VIP caller: account manager agent1002 in wrap-up → vip queue")
        assert await feed(at=110) == "VIP caller → account manager agent1002, then vip queue"
        assert await feed(member_status("agent1002", 1, paused=1), at=120) == (
            "VIP caller: account manager agent1002 paused → vip queue")
        assert await feed(member_status("agent1002", 5), at=130) == (
            "VIP caller: account manager agent1002 logged out → vip queue")
        # a restarted instance picks up where the last one left off
        again = AgentStateService(redis_client, keys, AGENTS, wrap_up_seconds=10, clock=lambda: 131.0)
        await again.start()
        assert again.statuses()["agent1002"] == AgentStatus("agent1002", AgentState.LOGGED_OUT, T0.timestamp() + 130)
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await other.aclose()


async def test_a_bad_event_does_not_stop_the_consumer(redis_client: aioredis.Redis, keys: Keys) -> None:
    tracker = AgentStateService(redis_client, keys, AGENTS, wrap_up_seconds=10, clock=lambda: 5.0)
    events: asyncio.Queue[object] = asyncio.Queue()
    consumer = asyncio.create_task(tracker.run(events))
    broken = type("QueueMemberStatus", (), {"interface": "PJSIP/agent1001"})()  # no status field
    events.put_nowait(broken)
    events.put_nowait(member_status("agent1001", 1))
    await events.join()
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    assert (await store.statuses(redis_client, keys, ["agent1001"], 6.0))["agent1001"].state is AgentState.READY


# --- channel variables, over a real FastAGI connection


@pytest.mark.parametrize(("snapshot", "live", "expected"), [
    (VIP, {"agent1002": AgentLive("agent1002", logged_in=True, device=DeviceStatus.NOT_INUSE)}, [
        'SET VARIABLE "IVR_CONTEXT_ID" "ctx-1"',
        'SET VARIABLE "IVR_REASON" "VIP caller -> account manager agent1002, then vip queue"',
        'SET VARIABLE "IVR_QUEUE" "vip"',
        'SET VARIABLE "IVR_PRIORITY" "10"',
        'SET VARIABLE "IVR_AGENT" "PJSIP/agent1002"',
        'SET VARIABLE "IVR_AGENT_TIMEOUT" "20"',
        'SET VARIABLE "IVR_ACTION" "agent"',
    ]),
    (VIP, {}, [
        'SET VARIABLE "IVR_CONTEXT_ID" "ctx-1"',
        'SET VARIABLE "IVR_REASON" "VIP caller: account manager agent1002 logged out -> vip queue"',
        'SET VARIABLE "IVR_QUEUE" "vip"',
        'SET VARIABLE "IVR_PRIORITY" "10"',
        'SET VARIABLE "IVR_ACTION" "queue"',
    ]),
    (UNKNOWN, {}, [
        'SET VARIABLE "IVR_CONTEXT_ID" "ctx-1"',  # the menu's exit sets the rest
    ]),
])
async def test_apply_route_sets_the_dialplan_variables(redis_client: aioredis.Redis, keys: Keys,
                                                       snapshot: CallerSnapshot, live: dict[str, AgentLive],
                                                       expected: list[str]) -> None:
    await store.save(redis_client, keys, live.values())
    routing = RoutingService(redis_client, keys, POLICY, AGENTS, clock=lambda: T0)
    decision = await routing.route(snapshot)
    assert channel_variables(decision, "ctx-1")[0] == ("IVR_CONTEXT_ID", "ctx-1")

    # Asterisk's side of one FastAGI call: the header block, then 200 to every command.
    received: list[str] = []
    done = asyncio.Event()

    async def handler(channel: AgiChannel) -> None:
        try:
            await routing.apply_route(channel, decision, "ctx-1")
        finally:
            done.set()

    server = FastAgiServer("127.0.0.1", 0, command_timeout=5.0)
    server.route("hotline", handler)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"agi_network: yes\nagi_network_script: hotline\n\n")
        while line := await asyncio.wait_for(reader.readline(), 5):
            received.append(line.decode().rstrip("\n"))
            writer.write(b"200 result=1\n")
        assert done.is_set()
    finally:
        writer.close()
        await writer.wait_closed()
        await server.stop(drain_timeout=1.0)
    assert received == expected
