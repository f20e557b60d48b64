"""ivrserver end to end on real calls: SIPp caller → Asterisk 22 → ivrserver (FastAGI + AMI) →
Redis → SIPp agent phone / agent websocket. Nothing of ours is replaced by a double.

The menu is menus/hotline.yaml with its business hours removed (the test must not depend on the
hour CI runs at); the routing policy is the shipped default with a 3 s agent ring time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.devstack.asterisk import LocalAsterisk
from ivrserver.devstack.ports import StackPorts
from ivrserver.domain.identification import hash_pin
from ivrserver.domain.model import (
    AgentState,
    ContactPreferences,
    Customer,
    Outcome,
    Tier,
)
from ivrserver.store import agents as agent_store
from ivrserver.store import callpath, cases, customers
from ivrserver.store import contacts as contact_store
from ivrserver.store.keys import Keys
from tests.conftest import TEST_PEPPER, TEST_PEPPER_TEXT, free_port
from tests.integration.conftest import Phones

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ALL_DAY = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="23:59")


def write_menus(directory: Path, change: dict[str, Any] | None = None) -> None:
    """The shipped hotline menu without business hours (optionally with node changes)."""
    data = yaml.safe_load((REPO / "menus" / "hotline.yaml").read_text())
    data.pop("hours", None)
    data["entry"] = {"open": "main"}
    for node in ("after_hours", "closed_language"):  # the closed menu and its language choice
        data["nodes"].pop(node, None)
    for node, fields in (change or {}).items():
        data["nodes"][node].update(fields)
    directory.mkdir(exist_ok=True)
    (directory / "hotline.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write_routing(path: Path) -> None:
    data = yaml.safe_load((REPO / "ivrserver" / "defaults" / "routing.yaml").read_text())
    data["ring_seconds"] = 3
    path.write_text(yaml.safe_dump(data, sort_keys=False))


async def wait_until(predicate: Any, timeout: float = 15.0, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


class Ivr:
    """A running IvrServer on the session's Asterisk, plus what tests need to look at it."""

    def __init__(self, server: IvrServer, redis: aioredis.Redis, menus_dir: Path) -> None:
        self.server = server
        self.redis = redis
        self.keys: Keys = server.keys
        self.menus_dir = menus_dir
        self.base = f"http://127.0.0.1:{server.settings.web.port}"

    async def agent_ready(self, agent_id: str) -> None:
        async def ready() -> bool:
            states = await agent_store.statuses(self.redis, self.keys, [agent_id], time.time())
            return agent_id in states and states[agent_id].state is AgentState.READY
        await wait_until(ready, what=f"{agent_id} ready")

    async def contacts(self) -> list[Any]:
        ids = [k.rsplit(":", 1)[1] async for k in self.redis.scan_iter(f"{self.keys.prefix}:contact:*")]
        found = [await contact_store.get_contact(self.redis, self.keys, i) for i in ids]
        return [c for c in found if c is not None]

    async def finished_contact(self, **match: Any) -> Any:
        async def find() -> Any:
            for c in await self.contacts():
                if c.outcome is not Outcome.IN_PROGRESS and all(getattr(c, k) == v for k, v in match.items()):
                    return c
            return None
        return await wait_until(find, what=f"a finished contact with {match}")

    async def paths(self, count: int) -> list[Any]:
        """The recorded IVR paths once `count` calls have recorded theirs (written when the AGI ends)."""
        async def recorded() -> list[Any]:
            found = await callpath.recent_paths(self.redis, self.keys, "hotline", 0)
            return found if len(found) >= count else []
        if count == 0:
            await asyncio.sleep(1.0)
            return await callpath.recent_paths(self.redis, self.keys, "hotline", 0)
        return await wait_until(recorded, what=f"{count} recorded IVR paths")


def ivr_settings(asterisk: LocalAsterisk, redis_url: str, tmp_path: Path) -> config.Settings:
    """Settings for an IvrServer on `asterisk`: hours-free menus, 3 s agent ring, quick callbacks."""
    ports = asterisk.ports
    menus_dir = tmp_path / "menus"
    write_menus(menus_dir)
    write_routing(tmp_path / "routing.yaml")
    return config.from_mapping({
        "redis": {"url": redis_url, "prefix": f"it{free_port()}"},
        "ami": {"host": "127.0.0.1", "port": ports.ami_port, "secret": asterisk.ami_secret,
                "ping_interval": 1.0, "silence_timeout": 6.0, "reconnect_max_delay": 1.0},
        "agi": {"host": ports.agi_host, "port": ports.agi_port, "drain_timeout": 2.0},
        "web": {"port": free_port()},
        "asterisk": {"config_dir": str(asterisk.etc_dir), "sounds_dir": str(asterisk.sounds_dir)},
        "menus": {"dir": str(menus_dir), "watch": False},
        "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml"),
                    "policy_file": str(tmp_path / "routing.yaml")},
        "callbacks": {"poll_interval": 0.1, "calling_from": "00:00", "calling_until": "23:59",
                      "agent_ring_seconds": 10, "grace_seconds": 1},
        "instance": "it-a",
        "security": {"pepper": TEST_PEPPER_TEXT},  # the pepper the tests' PIN hashes are keyed with
    })


@contextlib.asynccontextmanager
async def running(settings: config.Settings) -> AsyncIterator[IvrServer]:
    """An IvrServer started in this event loop, logged in to AMI and serving; stopped (drained:
    FastAGI, web, AMI, Redis closed) on exit, also when it failed to come up."""
    server = IvrServer(settings)
    ready = asyncio.Event()
    task = asyncio.create_task(server.run(ready), name=f"ivrserver-{settings.instance}")
    try:
        await asyncio.wait_for(ready.wait(), 15)
        assert await server.ami.wait_logged_in(10), f"{settings.instance} did not log in to AMI"
        yield server
    finally:
        server.stopping.set()
        await asyncio.wait_for(task, 20)


def url_of(client: aioredis.Redis) -> str:
    return f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"


@pytest.fixture
async def ivr(fresh_asterisk: LocalAsterisk, redis_client: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Ivr]:
    settings = ivr_settings(fresh_asterisk, url_of(redis_client), tmp_path)
    async with running(settings) as server:
        yield Ivr(server, redis_client, Path(settings.menus.dir))


async def add_customer(ivr: Ivr, customer: Customer) -> Customer:
    await customers.save_customer(ivr.redis, ivr.keys, customer)
    return customer


async def test_unknown_caller_walks_the_menu_to_a_queue_and_the_call_is_recorded(ivr: Ivr, phones: Phones) -> None:
    agent = await phones.agent(1006, hold_ms=1000)  # faults queue, penalty 0
    await ivr.agent_ready("agent1006")
    result = await phones.call("31", number="15559999")  # 3 = report a fault, 1 = talk to the faults team
    assert result.ok, result.describe()
    assert (await agent.wait()).ok
    [path] = await ivr.paths(1)
    exit_ = [p for p in path.events if p.kind.value == "exit"][-1]
    assert (exit_.node, exit_.detail, exit_.target) == ("faults", "queue", "faults")
    assert [p.key for p in path.events if p.kind.value == "key"] == ["3", "1"]
    contact = await ivr.finished_contact(number="15559999")
    # Built from AMI events correlated by Linkedid plus what the FastAGI side reported.
    assert contact.outcome is Outcome.ANSWERED
    assert contact.agents == ("agent1006",)
    assert contact.queue == "ivr-faults" or contact.queue == "faults"
    assert "ivr exit queue at faults" in contact.routing_reason


async def test_keys_typed_over_the_entry_announcement_choose_in_the_menu(ivr: Ivr, phones: Phones) -> None:
    """A supervisor's entry announcement (ss-noservice, ~5 s) is on; a caller who knows the menu
    types 3 1 over it: the 3 stops it and is the main menu's choice (report a fault), the 1 the
    next menu's (the faults team) — not lost, which would have made the 1 "balance"."""
    await callpath.set_announcement(ivr.redis, ivr.keys, "hotline", ["ss-noservice"], 300)
    agent = await phones.agent(1006, hold_ms=1000)
    await ivr.agent_ready("agent1006")
    result = await phones.call("31", number="15559998")
    assert result.ok, result.describe()
    assert (await agent.wait()).ok
    [path] = await ivr.paths(1)
    kinds = [p.kind.value for p in path.events]
    assert kinds[:3] == ["start", "announcement", "enter"], kinds
    assert [p.key for p in path.events if p.kind.value == "key"] == ["3", "1"]
    exit_ = [p for p in path.events if p.kind.value == "exit"][-1]
    assert (exit_.node, exit_.detail, exit_.target) == ("faults", "queue", "faults")


async def test_self_service_balance_is_recorded_as_self_served(ivr: Ivr, phones: Phones) -> None:
    await add_customer(ivr, Customer(id="c-std-1", name="Li Lei", phones=("15550003",), attributes={"balance": "42"}))
    # 1 = balance, said from the caller's own data; the caller hangs up once they have heard it.
    result = await phones.call("1", number="15550003", hold_ms=5000)
    assert result.ok, result.describe()
    [path] = await ivr.paths(1)
    assert ("lookup", "balance", "found") in [(p.kind.value, p.node, p.detail) for p in path.events]
    assert path.events[-1].kind.value == "exit" and path.events[-1].detail == "caller_hangup"
    contact = await ivr.finished_contact(customer_id="c-std-1")
    assert contact.outcome is Outcome.SELF_SERVED
    timeline = await contact_store.list_timeline(ivr.redis, ivr.keys, "c-std-1")
    assert [c.id for c in timeline] == [contact.id]


async def test_vip_goes_straight_to_the_account_manager_and_the_pop_reaches_only_them(
        ivr: Ivr, phones: Phones) -> None:
    await add_customer(ivr, Customer(id="c-vip-1", name="Wang <b>Boss</b>", phones=("15550001",), tier=Tier.VIP,
                                     account_manager="agent1001"))
    async with aiohttp.ClientSession() as http:
        sockets = {}
        for agent_id in ("agent1001", "agent1002"):
            async with http.post(f"{ivr.base}/api/v1/login", json={"agent": agent_id, "password": agent_id}) as r:
                assert r.status == 200, await r.text()
                token = (await r.json())["token"]
            ws = await http.ws_connect(f"{ivr.base}/ws/agent")
            await ws.send_json({"type": "auth", "token": token, "last_seq": 0})
            sockets[agent_id] = ws
        manager = await phones.agent(1001, ring_ms=800, hold_ms=1000)
        await ivr.agent_ready("agent1001")
        caller = await phones.caller("", number="15550001")

        async def pop_for(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
            while True:
                msg = await asyncio.wait_for(ws.receive(), 15)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                frame = json.loads(msg.data)
                if frame.get("type") == "event" and frame["data"].get("type") == "pop":
                    return frame["data"]

        pop = await pop_for(sockets["agent1001"])
        assert (await manager.wait()).ok
        assert (await caller.wait()).ok
        assert pop["phase"] == "ringing"
        assert pop["customer"]["name"] == "Wang <b>Boss</b>"  # data, never markup: the page renders text
        assert "account manager" in pop["routing"]["reason"] or "agent1001" in json.dumps(pop)
        # agent1002 got no pop for this call: only non-pop frames (welcome/replay) arrived.
        frames = []
        while True:
            try:
                msg = await asyncio.wait_for(sockets["agent1002"].receive(), 1.0)
            except TimeoutError:
                break
            frames.append(json.loads(msg.data))
        assert not [f for f in frames if f.get("type") == "event"], frames
        for ws in sockets.values():
            await ws.close()
    assert await ivr.paths(0) == []  # the menu was skipped
    contact = await ivr.finished_contact(customer_id="c-vip-1")
    assert contact.outcome is Outcome.ANSWERED and contact.agents == ("agent1001",)
    assert "agent1001" in contact.routing_reason


async def test_open_case_goes_to_its_owner_and_falls_back_to_the_queue_when_unanswered(
        ivr: Ivr, phones: Phones) -> None:
    customer = await add_customer(ivr, Customer(id="c-rep-1", name="Zhao Min", phones=("15550002",)))
    await cases.open_case(ivr.redis, ivr.keys, customer_id=customer.id, summary="premium SMS charge",
                            now=time.time(), owner_agent="agent1005", still_needed="first charge date")
    owner = await phones.agent(1005, answer=False)
    general = await phones.agent(1004, hold_ms=1000)
    await ivr.agent_ready("agent1005")
    await ivr.agent_ready("agent1004")
    result = await phones.call("", number="15550002")
    assert result.ok, result.describe()
    assert (await general.wait()).ok
    await owner.kill()
    contact = await ivr.finished_contact(customer_id="c-rep-1")
    assert contact.outcome is Outcome.ANSWERED
    assert contact.agents[-1] == "agent1004"
    assert "agent1005" in contact.routing_reason and "case" in contact.routing_reason


async def test_a_reload_during_a_live_call_keeps_that_call_on_its_version(ivr: Ivr, phones: Phones) -> None:
    await phones.agent(1006, hold_ms=500)
    await phones.agent(1008, hold_ms=500)  # faults overflow / sales
    await ivr.agent_ready("agent1006")
    first = await phones.caller("31", number="15559001")
    await wait_until(lambda: asyncio.sleep(0, ivr.server.fastagi.active_calls == 1), what="first call in the IVR")
    old = ivr.server.menus.current.version
    # v2: key 3 now opens the plans menu instead of faults.
    write_menus(ivr.menus_dir, {"main": {"options": {"1": {"goto": "balance"}, "2": {"goto": "topup"},
                                                     "3": {"goto": "plans"}, "4": {"goto": "faults"},
                                                     "9": {"goto": "language"}}}})
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{ivr.base}/api/v1/login", json={"agent": "agent1010", "password": "agent1010"}) as r:
            token = (await r.json())["token"]
        async with http.post(f"{ivr.base}/api/v1/menus/reload", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200, await r.text()
    new = ivr.server.menus.current.version
    assert new != old
    assert (await first.wait()).ok
    second = await phones.call("3", number="15559002", hold_ms=1500)
    assert second.ok, second.describe()
    paths = {p.version: p for p in await ivr.paths(2)}
    assert set(paths) == {old, new}
    assert [p.node for p in paths[old].events if p.kind.value == "enter"][:2] == ["main", "faults"]
    assert [p.node for p in paths[new].events if p.kind.value == "enter"][:2] == ["main", "plans"]


async def test_callback_rings_the_agent_first_then_the_customer_exactly_once(ivr: Ivr, phones: Phones) -> None:
    await add_customer(ivr, Customer(id="c-cb-1", name="Sun Li", phones=("15550007",), preferences=ALL_DAY))
    agent = await phones.agent(1003, ring_ms=300, hold_ms=1500)
    customer_phone = await phones.customer(ring_ms=300, hold_ms=1000)
    await ivr.agent_ready("agent1003")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{ivr.base}/api/v1/login", json={"agent": "agent1003", "password": "agent1003"}) as r:
            token = (await r.json())["token"]
        body = {"customer_id": "c-cb-1", "number": "15550007", "earliest": time.time() + 2,
                "reason": "refund decision", "context": "promised to call with the refund result"}
        async with http.post(f"{ivr.base}/api/v1/callbacks", json=body,
                             headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status in (200, 201), await r.text()
            callback_id = (await r.json())["id"]
    assert (await agent.wait()).ok
    assert (await customer_phone.wait()).ok

    async def settled() -> Any:
        cb = await ivr.server.callbacks.get(callback_id)
        return cb if cb.state.value in ("done", "connected", "failed") else None
    cb = await wait_until(settled, timeout=30, what="callback settled")
    assert cb.state.value in ("done", "connected"), cb
    assert cb.attempts == 1
    assert [a.outcome.value for a in cb.history if a.outcome] == ["answered"]
    frames = [json.loads(raw) for _, raw in (await ivr.server.pops.since("agent1003", 0)).frames]
    pops = [f["data"] for f in frames if f.get("data", {}).get("type") == "pop"]
    assert pops and pops[0]["kind"] == "callback"


async def test_account_and_pin_identify_an_unknown_number_over_sip_info_dtmf(ivr: Ivr, phones: Phones) -> None:
    await add_customer(ivr, Customer(id="c-acct-1", name="Qian Yu", phones=("15550021",), account_number="80010009",
                                     pin_hash=hash_pin("1357", b"0123456789abcdef", TEST_PEPPER),
                                     attributes={"balance": "17"}))
    # From an unknown number: 1 = balance → account 80010009# → PIN 1357# → identified → balance said.
    result = await phones.call("180010009#1357#", mode="info", number="15559100", hold_ms=6000)
    assert result.ok, result.describe()
    [path] = await ivr.paths(1)
    steps = [(p.kind.value, p.node, p.detail) for p in path.events]
    assert ("identified", "identify", "ok") in steps
    assert ("lookup", "balance_identified", "found") in steps
    assert not any("1357" in f"{p.key}{p.detail}{p.target}" for p in path.events)  # the PIN is never recorded
    contact = await ivr.finished_contact(number="15559100")
    assert contact.customer_id == "c-acct-1"
    assert contact.outcome is Outcome.SELF_SERVED


async def test_wrong_pins_lock_the_account_and_the_caller_reaches_a_human(ivr: Ivr, phones: Phones) -> None:
    await add_customer(ivr, Customer(id="c-acct-2", name="Feng Bo", phones=("15550022",), account_number="80010010",
                                     pin_hash=hash_pin("2468", b"fedcba9876543210", TEST_PEPPER)))
    for attempt in range(3):  # a wrong PIN goes to billing too; nobody answers, the caller gives up
        result = await phones.call("180010010#9999#", number="15559200", hold_ms=2500)
        assert result.ok, (attempt, result.describe())
    agent = await phones.agent(1004, hold_ms=500)  # billing queue
    await ivr.agent_ready("agent1004")
    paths = await ivr.paths(3)
    details = [p.detail for path in paths for p in path.events if p.kind.value == "identified"]
    assert details == ["failed", "failed", "locked"]
    # Locked out: the right PIN is refused too, and the caller is sent to the billing queue (a human).
    result = await phones.call("180010010#2468#", number="15559200")
    assert result.ok, result.describe()
    assert (await agent.wait()).ok
    last = (await ivr.paths(4))[-1]
    assert [p.detail for p in last.events if p.kind.value == "identified"] == ["locked"]
    assert last.events[-1].target == "billing"


async def test_invalid_key_and_timeouts_then_a_human(ivr: Ivr, phones: Phones) -> None:
    # A short top level (one prompt, 1 s to answer, 2 tries) keeps the test fast.
    write_menus(ivr.menus_dir, {"main": {"prompts": ["beep"], "timeout": 1, "tries": 2}})
    assert ivr.server.menus.reload().ok
    agent = await phones.agent(1005, hold_ms=500)  # general queue
    await ivr.agent_ready("agent1005")
    # 7 is not offered at the top level; then no key at all: a timeout uses up the tries.
    result = await phones.call("7", number="15559300", timeout=30)
    assert result.ok, result.describe()
    assert (await agent.wait()).ok
    [path] = await ivr.paths(1)
    kinds = [p.kind.value for p in path.events]
    assert kinds.count("invalid") == 1 and kinds.count("timeout") >= 1 and "failure" in kinds
    assert path.events[-1].target == "general"


async def test_caller_hanging_up_in_the_queue_is_recorded_as_abandoned(ivr: Ivr, phones: Phones) -> None:
    await add_customer(ivr, Customer(id="c-ab-1", name="Ma Li", phones=("15550031",)))
    result = await phones.call("0", number="15550031", hold_ms=3000)  # 0 = human; nobody answers
    assert result.ok, result.describe()
    contact = await ivr.finished_contact(customer_id="c-ab-1")
    assert contact.outcome is Outcome.ABANDONED
    assert contact.queue in ("general", "ivr-general")


async def test_shutdown_hands_running_calls_back_to_the_dialplan(ivr: Ivr, phones: Phones) -> None:
    agent = await phones.agent(1007, hold_ms=500)  # general queue
    await ivr.agent_ready("agent1007")
    caller = await phones.caller("", number="15559400")
    await wait_until(lambda: asyncio.sleep(0, ivr.server.fastagi.active_calls == 1), what="call in the IVR")
    ivr.server.stopping.set()  # drain_timeout is 2 s: the caller is still in the menu then
    assert (await agent.wait()).ok  # the dialplan's fallback sent the caller to the general queue
    assert (await caller.wait()).ok


async def test_ami_reconnects_after_asterisk_restarts(redis_client: aioredis.Redis, tmp_path: Path) -> None:
    # An Asterisk of its own: restarting the session's would disturb the other tests.
    pbx = LocalAsterisk(StackPorts.free(), name=f"reconnect-{os.getpid()}")
    await pbx.start()
    try:
        async with running(ivr_settings(pbx, url_of(redis_client), tmp_path)) as server:
            await pbx.restart()
            await wait_until(lambda: asyncio.sleep(0, server.ami.logged_in and
                                                   server.metrics.ami_reconnects._value.get() >= 1),
                             timeout=20, what="AMI logged in again")
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{server.settings.web.port}/healthz") as r:
                body = await r.json()
            assert r.status == 200 and body["checks"]["ami"]["ok"], body
    finally:
        await pbx.stop()
        pbx.remove()


async def test_a_vip_identified_by_pin_is_routed_to_their_account_manager(ivr: Ivr, phones: Phones) -> None:
    await add_customer(ivr, Customer(id="c-vip-pin", name="Tang Wei", phones=("15550041",), tier=Tier.VIP,
                                     account_manager="agent1002", account_number="80010041",
                                     pin_hash=hash_pin("8642", b"abcdefabcdef0123", TEST_PEPPER)))
    manager = await phones.agent(1002, hold_ms=500)
    await ivr.agent_ready("agent1002")
    # Calling from an unknown number: balance → account + PIN → no balance on file → the menu
    # sends the caller to billing, and routing takes over for the identified VIP.
    result = await phones.call("180010041#8642#", number="15559500")
    assert result.ok, result.describe()
    assert (await manager.wait()).ok
    contact = await ivr.finished_contact(number="15559500")
    assert contact.customer_id == "c-vip-pin"
    assert contact.agents == ("agent1002",)
    assert "identified by account" in contact.routing_reason and "agent1002" in contact.routing_reason
