"""The wallboard on REAL calls: SIPp caller → Asterisk 22 → ivrserver (FastAGI menu → queue) → SIPp agent.

Two IvrServer instances on one Redis and one Asterisk (as in test_screen_pop_calls): only A owns the
FastAGI port, both read the same AMI. The supervisor's wallboard socket is on B. A caller who walks the
menu to the faults queue shows as one caller waiting (with the join time the page ticks from); when
agent1006's phone answers, the queue shows nobody waiting, one answered, and agent1006 on call. The
counters in Redis count the call once although both instances folded its events.

"Within 1 s of the AMI event" is measured from the event itself: the test logs in to the AMI too
(`AmiWatch`, a raw TCP client) and takes each queue event's `Timestamp:` — Asterisk's clock when it
emitted the event (manager.conf `timestampevents = yes`; same host, same clock) — and compares it
with the time the supervisor's socket received the frame that shows it. A slow fold, a slow Lua
call or a slow pub/sub hop between the instances all count (the frame's own `now` is stamped when
the frame leaves, so comparing with it would not).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivrserver.devstack.asterisk import LocalAsterisk
from ivrserver.domain import wallboard as wb
from tests.conftest import free_port
from tests.integration.conftest import Phones
from tests.integration.test_ivrserver_calls import Ivr, running, wait_until
from tests.integration.test_screen_pop_calls import server_settings

pytestmark = pytest.mark.integration

SUPERVISOR = "agent1010"  # scripts/demo-agents.yaml: supervisor, password = its id


class AmiWatch:
    """The test's own AMI login (raw TCP, as the manager protocol is: `Key: value` lines, a blank line
    ends a message): every event, with the wall time it arrived (`seen`)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.reader: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def start(self, asterisk: LocalAsterisk) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", asterisk.ports.ami_port)
        await reader.readline()  # "Asterisk Call Manager/…"
        self.writer.write(f"Action: Login\r\nUsername: ivrserver\r\nSecret: {asterisk.ami_secret}\r\n"
                          "Events: on\r\n\r\n".encode())
        await self.writer.drain()
        self.reader = asyncio.create_task(self._read(reader))
        await wait_until(self._logged_in, what="the test's AMI login")

    async def _logged_in(self) -> bool:
        return any(m.get("Response") == "Success" for m in self.events)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        message: dict[str, Any] = {}
        while line := await reader.readline():
            text = line.decode(errors="replace").rstrip("\r\n")
            if text:
                key, _, value = text.partition(": ")
                message[key] = value
            elif message:
                message["seen"] = time.time()
                self.events.append(message)
                message = {}

    async def first(self, event: str, queue: str) -> dict[str, Any]:
        async def found() -> dict[str, Any] | None:
            return next((m for m in self.events if m.get("Event") == event and m.get("Queue") == queue), None)
        return await wait_until(found, what=f"{event} of {queue} on the AMI")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)


def emitted(event: dict[str, Any]) -> float:
    """Asterisk's own time of an event (`Timestamp: 1733300000.123456`), checked against our clock."""
    stamp = float(event["Timestamp"])
    assert abs(event["seen"] - stamp) < 1.0, "Asterisk's clock and ours disagree: the latency check means nothing"
    return stamp


@dataclass
class Board:
    """One wallboard socket: every frame, and the board as the page would draw it."""

    ws: aiohttp.ClientWebSocketResponse
    frames: list[dict[str, Any]] = field(default_factory=list)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            frame["received"] = time.time()
            self.frames.append(frame)
            if frame["type"] == "snapshot":
                self.queues = {q["name"]: q for q in frame["queues"]}
                self.agents = {a["id"]: a for a in frame["agents"]}
            for q in frame.get("queues", []) if frame["type"] == "queues" else []:
                self.queues[q["name"]] = q
            if frame["type"] == "agent":
                self.agents[frame["agent"]["id"]] = frame["agent"]

    async def until(self, predicate: Any, what: str, timeout: float = 20.0) -> Any:
        async def check() -> Any:
            return predicate()
        return await wait_until(check, timeout=timeout, interval=0.05, what=what)


@pytest.fixture
async def pair(fresh_asterisk: LocalAsterisk, redis_url: str, redis_client: aioredis.Redis,
               tmp_path: Path) -> AsyncIterator[tuple[Ivr, Ivr]]:
    prefix = f"wbi{free_port()}"
    a_settings = server_settings(fresh_asterisk, redis_url, tmp_path, prefix=prefix, instance="wb-a",
                                 agi_port=fresh_asterisk.ports.agi_port)
    b_settings = server_settings(fresh_asterisk, redis_url, tmp_path, prefix=prefix, instance="wb-b",
                                 agi_port=free_port())  # listens, but Asterisk never calls it
    async with running(a_settings) as a, running(b_settings) as b:
        yield Ivr(a, redis_client, tmp_path / "menus"), Ivr(b, redis_client, tmp_path / "menus")


async def open_board(session: aiohttp.ClientSession, ivr: Ivr) -> Board:
    async with session.post(f"{ivr.base}/api/v1/login", json={"agent": SUPERVISOR, "password": SUPERVISOR}) as r:
        assert r.status == 200, await r.text()
        token = (await r.json())["token"]
    ws = await session.ws_connect(ivr.base.replace("http://", "ws://") + "/ws/wallboard",
                                  headers={"Authorization": f"Bearer {token}"})
    board = Board(ws)
    board.reader = asyncio.create_task(board._read())
    await board.until(lambda: board.frames and board.frames[0]["type"] == "snapshot", "the snapshot")
    return board


async def test_a_caller_waiting_then_answered_shows_on_the_other_instances_wallboard(
        pair: tuple[Ivr, Ivr], phones: Phones, fresh_asterisk: LocalAsterisk) -> None:
    a, b = pair
    ami = AmiWatch()
    await ami.start(fresh_asterisk)
    async with aiohttp.ClientSession() as session:
        board = await open_board(session, b)
        try:
            assert "faults" in board.queues and board.queues["faults"]["waiting"] == 0
            # Every member starts paused (tests/integration/conftest.py): the caller waits.
            await board.until(lambda: board.agents["agent1006"]["state"] == "paused", "agent1006 paused")
            before = time.time()
            caller = await phones.caller("31", number="15559999", timeout=60)  # 3 = fault, 1 = the faults team
            await board.until(lambda: board.queues["faults"]["waiting"] == 1, "one caller waiting in faults")
            waiting = board.queues["faults"]
            assert before - 1 < waiting["oldest_joined_at"] / 1000 < time.time() + 1
            assert waiting["offered"] == 1 and waiting["answered"] == 0
            joined = next(f for f in board.frames if f["type"] == "queues"
                          and any(q["name"] == "faults" and q["waiting"] == 1 for q in f["queues"]))
            # on the supervisor's socket (instance B) within 1 s of Asterisk emitting QueueCallerJoin
            join_latency = joined["received"] - emitted(await ami.first("QueueCallerJoin", "ivr-faults"))
            assert 0 <= join_latency < 1.0, join_latency

            # agent1006 (faults, penalty 0) takes the call: ready, ringing, on call.
            agent = await phones.agent(1006, ring_ms=500, hold_ms=2000)
            await board.until(lambda: board.agents["agent1006"]["state"] == "on_call", "agent1006 on call")
            await board.until(lambda: board.queues["faults"]["waiting"] == 0
                              and board.queues["faults"]["answered"] == 1, "the call answered")
            faults = board.queues["faults"]
            assert (faults["offered"], faults["answered_in_sl"], faults["abandoned"], faults["service_level"]) == (
                1, 1, 0, 100.0)
            answered = next(f for f in board.frames if f["type"] == "queues"
                            and any(q["name"] == "faults" and q["answered"] == 1 for q in f["queues"]))
            answer_latency = answered["received"] - emitted(await ami.first("AgentConnect", "ivr-faults"))
            assert 0 <= answer_latency < 1.0, answer_latency
            print(f"wallboard latency from the AMI event: join {join_latency * 1000:.0f} ms, "
                  f"answer {answer_latency * 1000:.0f} ms")
            seen = [f["agent"]["state"] for f in board.frames if f["type"] == "agent"
                    and f["agent"]["id"] == "agent1006"]
            assert seen[-1] == "on_call" and "ready" in seen, seen
            assert (await agent.wait()).ok
            assert (await caller.wait()).ok
            await board.until(lambda: board.agents["agent1006"]["state"] in ("wrap_up", "ready", "paused"),
                              "agent1006 off the call")
            # Both instances folded the call's events; Redis counted it once.
            day, _ = wb.day_of(time.time(), "UTC")
            counted = await a.redis.hgetall(a.keys.wallboard_day(day))
            assert {k: v for k, v in counted.items() if k.startswith("faults|")} == {
                "faults|offered": "1", "faults|answered": "1", "faults|answered_in_sl": "1"}
            assert await a.redis.hlen(a.keys.wallboard_waiting()) == 0
        finally:
            await ami.close()
            await board.ws.close()
            if board.reader is not None:
                await asyncio.gather(board.reader, return_exceptions=True)


async def test_a_restart_reconciles_waiting_callers_with_asterisk(fresh_asterisk: LocalAsterisk, phones: Phones,
                                                                  redis_url: str, redis_client: aioredis.Redis,
                                                                  tmp_path: Path) -> None:
    """Redis lost a caller's join and kept a caller who left while no instance listened: at its AMI
    login a restarted instance asks Asterisk (QueueStatus) and its board shows the truth."""
    settings = server_settings(fresh_asterisk, redis_url, tmp_path, prefix=f"wbr{free_port()}", instance="wb-r",
                               agi_port=fresh_asterisk.ports.agi_port)
    async with running(settings) as first:
        ivr = Ivr(first, redis_client, tmp_path / "menus")
        caller = await phones.caller("31", number="15559998", timeout=60)

        async def waiting() -> dict[str, str]:
            return await redis_client.hgetall(ivr.keys.wallboard_waiting())
        [uid] = list(await wait_until(waiting, what="the caller waiting in Redis"))
    joined = time.time()
    # What no instance saw: the join lost, and someone who left long ago still stored.
    await redis_client.hdel(ivr.keys.wallboard_waiting(), uid)
    await redis_client.hset(ivr.keys.wallboard_waiting(), "1700000000.99",
                            json.dumps({"q": "faults", "at": time.time() - 3600, "p": 0}))
    async with running(settings) as second:
        async def reconciled() -> bool:
            return set(await redis_client.hkeys(ivr.keys.wallboard_waiting())) == {uid}
        await wait_until(reconciled, what="the waiting callers reconciled at the AMI login")
        async with aiohttp.ClientSession() as session:
            board = await open_board(session, Ivr(second, redis_client, tmp_path / "menus"))
            try:
                faults = board.queues["faults"]
                assert faults["waiting"] == 1
                assert abs(faults["oldest_joined_at"] / 1000 - joined) < 5  # from Asterisk's Wait
            finally:
                await board.ws.close()
                if board.reader is not None:
                    await asyncio.gather(board.reader, return_exceptions=True)
    await fresh_asterisk.hangup_all()
    await caller.wait()
