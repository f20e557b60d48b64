"""Screen-pops on real calls: SIPp caller → Asterisk 22 → ivrserver routing → SIPp agent phone.

- A socket that drops mid-call and comes back with its last number gets what it missed (the
  `answered` update); a socket coming back with last_seq=0 gets the pop replayed.
- Two IvrServer instances on one Redis (same prefix, different `instance` and web ports) and one
  Asterisk: only instance A owns the FastAGI port Asterisk calls, both read the same AMI. An agent
  whose browser is on B gets the pop of the call A handled; the agent gets ONE ringing pop per ring
  (not one per instance) and the call gets ONE contact record (not one per instance).

The menu is the shipped one without business hours and the routing policy the shipped default,
as in test_ivrserver_calls: nothing depends on the hour the tests run at.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.devstack.asterisk import LocalAsterisk
from ivrserver.domain.model import Customer, Outcome, Tier
from ivrserver.store import contacts as contact_store
from ivrserver.store import customers
from tests.conftest import free_port
from tests.integration.conftest import Phones
from tests.integration.test_ivrserver_calls import REPO, Ivr, running, wait_until, write_menus, write_routing

pytestmark = pytest.mark.integration

VIP_NUMBER = "15550011"
VIP = Customer(id="c-vip-pop", name="Qian Duoduo", phones=(VIP_NUMBER,), tier=Tier.VIP,
               account_manager="agent1001")


# ---------------------------------------------------------------------------------- servers

def server_settings(asterisk: LocalAsterisk, redis_url: str, workdir: Path, *, prefix: str, instance: str,
                    agi_port: int) -> config.Settings:
    """Settings of one IvrServer on the session's Asterisk. Only the instance whose `agi_port` is the
    stack's FastAGI port gets calls from the dialplan; every instance logs in to the same AMI."""
    menus_dir = workdir / "menus"
    if not menus_dir.exists():
        write_menus(menus_dir)
        write_routing(workdir / "routing.yaml")
    ports = asterisk.ports
    return config.from_mapping({
        "redis": {"url": redis_url, "prefix": prefix},
        "ami": {"host": "127.0.0.1", "port": ports.ami_port, "secret": asterisk.ami_secret,
                "ping_interval": 1.0, "silence_timeout": 6.0, "reconnect_max_delay": 1.0},
        "agi": {"host": ports.agi_host, "port": agi_port, "drain_timeout": 2.0},
        "web": {"port": free_port()},
        "asterisk": {"config_dir": str(asterisk.etc_dir), "sounds_dir": str(asterisk.sounds_dir)},
        "menus": {"dir": str(menus_dir), "watch": False},
        "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml"),
                    "policy_file": str(workdir / "routing.yaml")},
        "callbacks": {"enabled": False},
        "instance": instance,
    })


def agi_calls(server: IvrServer) -> float:
    """FastAGI connections this instance handled (all scripts and results)."""
    return sum(sample.value for metric in server.metrics.registry.collect() if metric.name == "ivrserver_agi_calls"
               for sample in metric.samples if sample.name.endswith("_total"))


@pytest.fixture
async def one(fresh_asterisk: LocalAsterisk, redis_url: str, redis_client: aioredis.Redis,
              tmp_path: Path) -> AsyncIterator[Ivr]:
    settings = server_settings(fresh_asterisk, redis_url, tmp_path, prefix=f"sp{free_port()}", instance="sp-a",
                               agi_port=fresh_asterisk.ports.agi_port)
    async with running(settings) as server:
        yield Ivr(server, redis_client, tmp_path / "menus")


@dataclass
class Pair:
    """Instance A (owns the FastAGI port the dialplan calls) and instance B (web only, for its agents)."""

    a: Ivr
    b: Ivr


@pytest.fixture
async def pair(fresh_asterisk: LocalAsterisk, redis_url: str, redis_client: aioredis.Redis,
               tmp_path: Path) -> AsyncIterator[Pair]:
    prefix = f"mi{free_port()}"
    a_settings = server_settings(fresh_asterisk, redis_url, tmp_path, prefix=prefix, instance="mi-a",
                                 agi_port=fresh_asterisk.ports.agi_port)
    b_settings = server_settings(fresh_asterisk, redis_url, tmp_path, prefix=prefix, instance="mi-b",
                                 agi_port=free_port())  # listens, but Asterisk never calls it
    async with running(a_settings) as a, running(b_settings) as b:
        yield Pair(Ivr(a, redis_client, tmp_path / "menus"), Ivr(b, redis_client, tmp_path / "menus"))


# ---------------------------------------------------------------------------------- agent sockets

@dataclass
class AgentSocket:
    """One agent websocket (a browser tab): every frame it received, in order."""

    ws: aiohttp.ClientWebSocketResponse
    frames: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(msg.data))

    def events(self, call_id: str | None = None) -> list[dict[str, Any]]:
        """The event frames (pops and phase updates), optionally of one call."""
        return [f for f in self.frames if f.get("type") == "event"
                and (call_id is None or f["data"].get("call_id") == call_id)]

    def ringing(self) -> list[dict[str, Any]]:
        return [f for f in self.events() if f["data"].get("type") == "pop" and f["data"].get("phase") == "ringing"]

    def phases(self, call_id: str, phase: str) -> list[dict[str, Any]]:
        return [f for f in self.events(call_id) if f["data"].get("type") == "pop_phase"
                and f["data"].get("phase") == phase]

    async def wait_for(self, predicate: Any, what: str, timeout: float = 15.0) -> Any:
        async def found() -> Any:
            return predicate()
        return await wait_until(found, timeout=timeout, interval=0.05, what=what)

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.reader, 5)


async def login(http: aiohttp.ClientSession, ivr: Ivr, agent_id: str) -> str:
    async with http.post(f"{ivr.base}/api/v1/login", json={"agent": agent_id, "password": agent_id}) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["token"])


async def open_socket(http: aiohttp.ClientSession, ivr: Ivr, token: str, last_seq: int) -> AgentSocket:
    """Connect, authenticate with `last_seq` and wait for the replay header (what came after it)."""
    ws = await http.ws_connect(f"{ivr.base}/ws/agent")
    await ws.send_json({"type": "auth", "token": token, "last_seq": last_seq})
    sock = AgentSocket(ws)
    sock.reader = asyncio.create_task(sock._read(), name="agent-socket-reader")
    await sock.wait_for(lambda: any(f.get("type") == "replay" for f in sock.frames), "replay header")
    return sock


async def vip_call_to_agent1001(ivr: Ivr, phones: Phones, *, ring_ms: int, hold_ms: int) -> Any:
    """agent1001's phone up and ready, then the VIP (account manager agent1001) calls; returns the caller."""
    await customers.save_customer(ivr.redis, ivr.keys, VIP)
    manager = await phones.agent(1001, ring_ms=ring_ms, hold_ms=hold_ms)
    await ivr.agent_ready("agent1001")
    caller = await phones.caller("", number=VIP_NUMBER)
    return manager, caller


# ---------------------------------------------------------------------------------- one instance

async def test_a_socket_that_drops_mid_call_gets_the_missed_update_and_a_fresh_one_the_pop(
        one: Ivr, phones: Phones) -> None:
    async with aiohttp.ClientSession() as http:
        token = await login(http, one, "agent1001")
        first = await open_socket(http, one, token, last_seq=0)
        manager, caller = await vip_call_to_agent1001(one, phones, ring_ms=800, hold_ms=3000)

        [ring] = await first.wait_for(first.ringing, "the ringing pop")
        pop = ring["data"]
        call_id = pop["call_id"]
        assert pop["customer"]["id"] == VIP.id and pop["number"] == VIP_NUMBER
        await first.close()  # the browser drops while the phone still rings

        # The agent answers while no socket is connected: the update is numbered and kept.
        async def answered_stored() -> bool:
            frames = [json.loads(raw) for _, raw in (await one.server.pops.since("agent1001", ring["seq"])).frames]
            return any(f["data"].get("phase") == "answered" for f in frames)
        await wait_until(answered_stored, what="the answered update stored")
        assert await phones.asterisk.active_channels() > 0, "the call must still be up: a mid-call reconnect"

        # Same tab comes back with the last number it saw: exactly what it missed, nothing before.
        again = await open_socket(http, one, token, last_seq=ring["seq"])
        replay = next(f for f in again.frames if f.get("type") == "replay")
        assert replay["after"] == ring["seq"] and replay["lost"] is False
        [answered] = await again.wait_for(lambda: again.phases(call_id, "answered"), "the missed answered update")
        assert answered["seq"] == ring["seq"] + 1
        assert answered["data"]["contact_id"] == pop["contact_id"]
        assert all(f["seq"] > ring["seq"] for f in again.events()), "nothing already seen is sent again"
        assert again.ringing() == []

        # A fresh page (last_seq=0) gets the pop replayed, then the update, in number order.
        fresh = await open_socket(http, one, token, last_seq=0)
        await fresh.wait_for(lambda: fresh.phases(call_id, "answered"), "replayed answered update")
        [replayed] = fresh.ringing()
        assert replayed["seq"] == ring["seq"] and replayed["data"] == pop
        seqs = [f["seq"] for f in fresh.events()]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))

        assert (await manager.wait()).ok
        assert (await caller.wait()).ok
        # The live socket gets the end of the call as it happens.
        await again.wait_for(lambda: again.phases(call_id, "ended"), "ended update on the reconnected socket")
        for sock in (again, fresh):
            await sock.close()


# ---------------------------------------------------------------------------------- two instances

async def test_an_agent_on_instance_b_gets_the_pop_of_a_call_instance_a_handled(pair: Pair, phones: Phones) -> None:
    async with aiohttp.ClientSession() as http:
        on_b = await open_socket(http, pair.b, await login(http, pair.b, "agent1001"), last_seq=0)
        manager, caller = await vip_call_to_agent1001(pair.a, phones, ring_ms=500, hold_ms=500)
        [ring, *_] = await on_b.wait_for(on_b.ringing, "a ringing pop on instance B")
        assert (await manager.wait()).ok
        assert (await caller.wait()).ok
        await on_b.close()
    pop = ring["data"]
    assert pop["customer"]["id"] == VIP.id and pop["customer"]["tier"] == "vip"
    assert "agent1001" in pop["routing"]["reason"]  # the reason A's routing stored in the call context
    assert (agi_calls(pair.a.server), agi_calls(pair.b.server)) == (1, 0), "the call ran on A's FastAGI only"


async def test_two_instances_give_the_agent_exactly_one_pop_per_ring(pair: Pair, phones: Phones) -> None:
    async with aiohttp.ClientSession() as http:
        # Two tabs of the same agent, one on each instance: each tab sees the same single pop.
        tabs = [await open_socket(http, ivr, await login(http, ivr, "agent1001"), last_seq=0)
                for ivr in (pair.a, pair.b)]
        manager, caller = await vip_call_to_agent1001(pair.a, phones, ring_ms=500, hold_ms=500)
        for tab in tabs:
            await tab.wait_for(tab.ringing, "a ringing pop")
        assert (await manager.wait()).ok
        assert (await caller.wait()).ok
        call_id = tabs[0].ringing()[0]["data"]["call_id"]
        for tab in tabs:
            await tab.wait_for(lambda t=tab: t.phases(call_id, "ended"), "the ended update")
        await asyncio.sleep(0.5)  # let any duplicate from the slower instance arrive
        for tab in tabs:
            await tab.close()
    stored = [json.loads(raw)["data"] for _, raw in (await pair.a.server.pops.since("agent1001", 0)).frames]
    summary = [(d["type"], d.get("phase")) for d in stored]
    assert summary.count(("pop", "ringing")) == 1, f"one ringing pop per ring, agent1001's backlog: {summary}"
    assert summary.count(("pop_phase", "answered")) == 1, summary
    assert summary.count(("pop_phase", "ended")) == 1, summary
    a_tab, b_tab = tabs
    assert [f["seq"] for f in a_tab.events()] == [f["seq"] for f in b_tab.events()] == [1, 2, 3]


async def test_two_instances_record_exactly_one_contact_per_call(pair: Pair, phones: Phones) -> None:
    async with aiohttp.ClientSession() as http:
        on_b = await open_socket(http, pair.b, await login(http, pair.b, "agent1001"), last_seq=0)
        manager, caller = await vip_call_to_agent1001(pair.a, phones, ring_ms=500, hold_ms=500)
        await on_b.wait_for(on_b.ringing, "a ringing pop on instance B")
        assert (await manager.wait()).ok
        assert (await caller.wait()).ok
        await on_b.close()
    contact = await pair.a.finished_contact(customer_id=VIP.id)
    await asyncio.sleep(1.0)  # both trackers have seen the Hangup by now

    async def records() -> list[Any]:
        return [c for c in await pair.a.contacts() if c.number == VIP_NUMBER or c.customer_id == VIP.id]
    found = await records()
    seen = [(c.id, c.routing_reason) for c in found]
    assert [c.id for c in found] == [contact.id], f"one contact per call, found {seen}"
    assert contact.outcome is Outcome.ANSWERED and contact.agents == ("agent1001",)
    assert "agent1001" in contact.routing_reason  # A's FastAGI facts are in the one record
    timeline = await contact_store.list_timeline(pair.a.redis, pair.a.keys, VIP.id)
    assert [c.id for c in timeline] == [contact.id]
    # Every pop the agent got names that record, so notes written from the page land on it.
    named = {f["data"].get("contact_id") for f in on_b.events()}
    assert named == {contact.id}, named


# ---------------------------------------------------------------------------------- write-back during the call

async def test_notes_saved_during_the_call_survive_the_hang_up(one: Ivr, phones: Phones) -> None:
    async with aiohttp.ClientSession() as http:
        token = await login(http, one, "agent1001")
        sock = await open_socket(http, one, token, last_seq=0)
        manager, caller = await vip_call_to_agent1001(one, phones, ring_ms=300, hold_ms=2000)
        [ring] = await sock.wait_for(sock.ringing, "the ringing pop")
        call_id, contact_id = ring["data"]["call_id"], ring["data"]["contact_id"]
        await sock.wait_for(lambda: sock.phases(call_id, "answered"), "the answered update")
        # The agent types while talking, as the page lets them.
        body = {"notes": "wants the refund by Friday", "disposition": "follow_up"}
        async with http.post(f"{one.base}/api/v1/contacts/{contact_id}/notes", json=body,
                             headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200, await r.text()
        assert await phones.asterisk.active_channels() > 0, "the notes must be written mid-call"
        assert (await manager.wait()).ok
        assert (await caller.wait()).ok
        await sock.close()
    contact = await one.finished_contact(customer_id=VIP.id)
    assert contact.id == contact_id
    assert (contact.notes, contact.disposition) == ("wants the refund by Friday", "follow_up")
