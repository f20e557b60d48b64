"""Callbacks on real calls: Asterisk 22 + SIPp agent and customer phones + Redis + ivrserver.

What each test proves (nothing of ours is replaced by a double):
- a customer who does not answer: attempt recorded `no_answer`, the callback waits in retry_wait
  with its next attempt later (short backoff), and that retry then rings agent and customer again;
- an instance SIGKILLed before the due time: another instance places the callback, once;
- an instance SIGKILLed while its call is ringing: the call goes on in Asterisk, the survivor
  re-queues the dead lease and does not dial again (attempt ends `unknown`, never a second call);
- two instances running: exactly one call (agent legs and customer legs counted on AMI);
- outside the customer's allowed hours: not dialed, due time moved to the window's opening;
- "press 2 to be called back" in the hotline's faults menu: a virtual-hold callback keeping the
  caller's place, placed agent-first to the free faults agent, then the customer's phone rings.

Calling hours are 00:00-24:00 (company and customer) everywhere except the allowed-hours test,
whose window is chosen relative to now: no test depends on the hour it runs at.

Instances of ivrserver are real processes (`python -m ivrserver -c FILE run`) when the test is about
several of them, and an in-process IvrServer otherwise (so a test can shorten the retry backoff,
which `config.CallbackSettings` does not expose).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.config import AmiSettings
from ivrserver.devstack.asterisk import LocalAsterisk
from ivrserver.devstack.sipp import SippProcess
from ivrserver.domain import callbacks as cbm
from ivrserver.domain.callbacks import AttemptOutcome, Callback, CallbackState
from ivrserver.domain.model import AgentState, Contact, ContactKind, ContactPreferences, Customer, Outcome
from ivrserver.pbx import ami_events as ev
from ivrserver.pbx.ami import AmiClient
from ivrserver.services.callbacks import CallbackService
from ivrserver.store import agents as agent_store
from ivrserver.store import callpath, contacts, customers
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.keys import Keys
from tests.conftest import free_port
from tests.integration.conftest import Phones
from tests.integration.test_ivrserver_calls import running, wait_until, write_menus, write_routing

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# 24:00 rather than 23:59: a run at 23:59 UTC must not wait a minute for the window.
ALL_DAY = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")
SETTLED = ("connected", "done", "failed", "cancelled")


# ----------------------------------------------------------------------------- AMI witness

class AmiWatch:
    """An AMI session of the test's own: every event Asterisk sent while the test ran.

    Counts what really happened on the PBX (channels created per endpoint, per uniqueid),
    independently of what ivrserver believes it did.
    """

    def __init__(self, asterisk: LocalAsterisk) -> None:
        self.client = AmiClient(AmiSettings(host="127.0.0.1", port=asterisk.ports.ami_port,
                                            secret=asterisk.ami_secret, ping_interval=1.0,
                                            silence_timeout=6.0, reconnect_max_delay=1.0))
        self.events: list[tuple[float, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.start()
        assert await self.client.wait_logged_in(10), "the test's AMI session did not log in"
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        while True:
            event = await self.client.events.get()
            self.events.append((time.time(), event))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.close()

    def channels(self, prefix: str) -> list[ev.Newchannel]:
        """Channels created whose name starts with `prefix` (e.g. "PJSIP/agent1004-")."""
        return [e for _, e in self.events if isinstance(e, ev.Newchannel) and e.channel.startswith(prefix)]

    def agent_legs(self, agent: str) -> list[ev.Newchannel]:
        return self.channels(f"PJSIP/{agent}-")

    def customer_legs(self) -> list[ev.Newchannel]:
        return self.channels("PJSIP/customers-")


@pytest.fixture
async def watch(fresh_asterisk: LocalAsterisk) -> AsyncIterator[AmiWatch]:
    w = AmiWatch(fresh_asterisk)
    await w.start()
    try:
        yield w
    finally:
        await w.close()


class CallbackPhones(Phones):
    async def customer_noanswer(self, *, timeout: float = 20.0) -> SippProcess:
        """The customers' phone ringing until Asterisk gives up (CANCEL → 487). The agent's
        never-answering scenario is a plain UAS that rings and takes the CANCEL: it fits as is."""
        return await self._start("agent_noanswer", local_port=self.ports.customer_port, timeout=timeout)


@pytest.fixture
async def cb_phones(fresh_asterisk: LocalAsterisk) -> AsyncIterator[CallbackPhones]:
    phones = CallbackPhones(fresh_asterisk)
    try:
        yield phones
    finally:
        await phones.close()


# ----------------------------------------------------------------------------- settings

@dataclasses.dataclass
class Stack:
    asterisk: LocalAsterisk
    redis: aioredis.Redis
    redis_url: str
    prefix: str
    tmp: Path

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    @property
    def store(self) -> CallbackStore:
        return CallbackStore(self.redis, self.keys)

    def service(self, policy: cbm.CallbackPolicy | None = None) -> CallbackService:
        """The callbacks API as any instance runs it, on the shared Redis (what REST would call),
        with the customer's profile preferences looked up as IvrServer does."""

        async def preferences(customer_id: str) -> ContactPreferences | None:
            found = await customers.get_customer(self.redis, self.keys, customer_id)
            return found.preferences if found else None

        return CallbackService(self.store, policy or cbm.CallbackPolicy(calling_from="00:00", calling_until="24:00"),
                               preferences=preferences)

    def settings(self, instance: str, *, agi_port: int | None = None, lease_seconds: float = 60.0,
                 hotline: str = "1860") -> dict[str, Any]:
        ports = self.asterisk.ports
        return {
            "redis": {"url": self.redis_url, "prefix": self.prefix},
            "ami": {"host": "127.0.0.1", "port": ports.ami_port, "secret": self.asterisk.ami_secret,
                    "ping_interval": 1.0, "silence_timeout": 6.0, "reconnect_max_delay": 1.0},
            "agi": {"host": ports.agi_host, "port": agi_port or free_port(), "drain_timeout": 1.0},
            "web": {"port": free_port()},
            "asterisk": {"config_dir": str(self.asterisk.etc_dir), "sounds_dir": str(self.asterisk.sounds_dir),
                         "hotline": hotline},
            "menus": {"dir": str(self.tmp / "menus"), "watch": False},
            "routing": {"agents_file": str(self.tmp / "agents.yaml"), "policy_file": str(self.tmp / "routing.yaml")},
            "callbacks": {"poll_interval": 0.1, "calling_from": "00:00", "calling_until": "24:00",
                          "agent_ring_seconds": 10, "grace_seconds": 1, "lease_seconds": lease_seconds},
            "instance": instance,
        }

    async def add_customer(self, customer: Customer) -> Customer:
        await customers.save_customer(self.redis, self.keys, customer)
        return customer

    async def agent_ready(self, agent_id: str) -> None:
        async def ready() -> bool:
            states = await agent_store.statuses(self.redis, self.keys, [agent_id], time.time())
            return agent_id in states and states[agent_id].state is AgentState.READY
        await wait_until(ready, what=f"{agent_id} ready")

    async def settled(self, callback_id: str, states: tuple[str, ...] = SETTLED, timeout: float = 30.0) -> Callback:
        async def get() -> Callback | None:
            cb = await self.store.get(callback_id)
            return cb if cb is not None and cb.state.value in states else None
        return await wait_until(get, timeout=timeout, what=f"callback {callback_id} in {states}")

    async def markers(self, callback_id: str) -> dict[int, str]:
        """Attempt number → holder of the `placed` marker (who dialed it)."""
        found: dict[int, str] = {}
        async for key in self.redis.scan_iter(self.keys.callback_placed(callback_id, 0)[:-1] + "*"):
            found[int(key.rsplit(":", 1)[1])] = await self.redis.get(key) or ""
        return found


@pytest.fixture
async def stack(fresh_asterisk: LocalAsterisk, redis_client: aioredis.Redis, redis_url: str,
                tmp_path: Path) -> Stack:
    write_menus(tmp_path / "menus")
    write_routing(tmp_path / "routing.yaml")
    agents = yaml.safe_load((REPO / "scripts" / "demo-agents.yaml").read_text())
    agents["wrap_up_seconds"] = 1  # a retry may ring the same agent a few seconds later
    (tmp_path / "agents.yaml").write_text(yaml.safe_dump(agents, sort_keys=False))
    return Stack(fresh_asterisk, redis_client, redis_url, f"cbit{free_port()}", tmp_path)


@contextlib.asynccontextmanager
async def in_process(stack: Stack, instance: str = "it-cb", **kwargs: Any) -> AsyncIterator[IvrServer]:
    async with running(config.from_mapping(stack.settings(instance, **kwargs))) as server:
        yield server


@dataclasses.dataclass
class Instance:
    name: str
    proc: asyncio.subprocess.Process
    log: Path
    web_port: int

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


class Instances:
    """ivrserver processes (`python -m ivrserver -c FILE run`); every one is killed at teardown."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.running: dict[str, Instance] = {}

    async def start(self, name: str, **kwargs: Any) -> Instance:
        settings = self.stack.settings(name, **kwargs)
        path = self.stack.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        log = self.stack.tmp / f"{name}.log"
        # IVRSERVER_* variables of the test run would become settings of the child: drop them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("IVRSERVER_")}
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ivrserver", "-c", str(path), "run", cwd=REPO, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT)
        inst = Instance(name, proc, log, settings["web"]["port"])
        self.running[name] = inst
        await self._healthy(inst)
        return inst

    async def _healthy(self, inst: Instance, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if inst.proc.returncode is not None:
                    raise AssertionError(f"instance {inst.name} exited {inst.proc.returncode}:\n{inst.tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"http://127.0.0.1:{inst.web_port}/healthz",
                                        timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(f"instance {inst.name} not healthy after {timeout:g}s:\n{inst.tail()}")
                await asyncio.sleep(0.1)

    async def kill9(self, name: str) -> None:
        inst = self.running[name]
        inst.proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(inst.proc.wait(), 10) == -signal.SIGKILL

    async def close(self) -> None:
        for inst in self.running.values():
            if inst.proc.returncode is None:
                inst.proc.terminate()
        for inst in self.running.values():
            try:
                await asyncio.wait_for(inst.proc.wait(), 15)
            except TimeoutError:
                inst.proc.kill()
                await inst.proc.wait()


@pytest.fixture
async def instances(stack: Stack) -> AsyncIterator[Instances]:
    group = Instances(stack)
    try:
        yield group
    finally:
        await group.close()


async def request(stack: Stack, customer: Customer, *, in_seconds: float, window: float | None = None,
                  **extra: Any) -> Callback:
    """A callback request as the REST API takes it: due in `in_seconds` (window: its length)."""
    start = time.time() + in_seconds
    when = {"at": start} if window is None else {"earliest": start, "latest": start + window}
    return await stack.service().request({"customer_id": customer.id, "number": customer.phones[0], **when, **extra},
                                         requested_by="agent1004")


def assert_one_call(watch: AmiWatch, cb: Callback, agent: str) -> None:
    """Asterisk created exactly one agent leg (uniqueid = the attempt's ChannelId) and one customer leg."""
    legs = watch.agent_legs(agent)
    assert [leg.uniqueid for leg in legs] == [f"{cb.id}-1"], legs
    assert len(watch.customer_legs()) == 1, watch.customer_legs()


# ----------------------------------------------------------------------------- tests

async def test_customer_no_answer_is_recorded_and_retried_later(
        stack: Stack, cb_phones: CallbackPhones, watch: AmiWatch) -> None:
    customer = await stack.add_customer(Customer(id="c-na-1", name="Qian Yu", phones=("15550021",),
                                                 preferences=ALL_DAY))
    # The customer leg rings CB_RING_TIMEOUT seconds (a [globals] value, 30 s): 3 s for this test.
    await stack.asterisk.cli("dialplan set global CB_RING_TIMEOUT 3")
    try:
        async with in_process(stack) as server:
            # CallbackSettings has no retry backoff: shorten it on the running placer.
            placer = server.scheduler.placer
            placer.policy = dataclasses.replace(placer.policy, retry_base={
                AttemptOutcome.NO_ANSWER: 4.0, AttemptOutcome.BUSY: 4.0, AttemptOutcome.FAILED: 4.0,
                AttemptOutcome.AGENT_UNAVAILABLE: 2.0})
            agent = await cb_phones.agent(1004, ring_ms=300, hold_ms=10000)
            ringing = await cb_phones.customer_noanswer()
            await stack.agent_ready("agent1004")
            cb = await request(stack, customer, in_seconds=1, preferred_agent="agent1004")

            assert (r := await ringing.wait()).ok, r.describe()  # rang, then cancelled by Asterisk
            assert (r := await agent.wait()).ok, r.describe()  # answered; hung up by the dialplan
            waiting = await stack.settled(cb.id, ("retry_wait", "connected", "done", "failed"))
            now = time.time()
            assert waiting.state is CallbackState.RETRY_WAIT, waiting
            [first] = waiting.history
            assert (first.number, first.agent_id, first.outcome) == (1, "agent1004", AttemptOutcome.NO_ANSWER)
            assert "NOANSWER" in first.detail
            assert waiting.attempts == 1
            assert waiting.due_at is not None and first.ended_at is not None
            assert waiting.due_at == pytest.approx(first.ended_at + 4.0, abs=0.01)  # backoff from the outcome
            assert waiting.due_at > now - 1.0
            assert list(await stack.markers(cb.id)) == [1]
            assert await stack.redis.zscore(stack.keys.callbacks_due(), cb.id) == pytest.approx(waiting.due_at)

            # The retry: the same agent again (wrap-up 1 s), and this time the customer answers.
            agent2 = await cb_phones.agent(1004, ring_ms=300, hold_ms=3000)
            answering = await cb_phones.customer(ring_ms=300, hold_ms=1000)
            assert (r := await answering.wait()).ok, r.describe()
            assert (r := await agent2.wait()).ok, r.describe()
            final = await stack.settled(cb.id, ("connected", "done", "failed"))
    finally:
        await stack.asterisk.cli("dialplan set global CB_RING_TIMEOUT 30")
    assert final.state.value in ("connected", "done"), final
    assert [a.outcome for a in final.history] == [AttemptOutcome.NO_ANSWER, AttemptOutcome.ANSWERED]
    assert final.history[1].started_at >= waiting.due_at - 0.01  # not before the backoff
    assert sorted(await stack.markers(cb.id)) == [1, 2]
    assert [leg.uniqueid for leg in watch.agent_legs("agent1004")] == [f"{cb.id}-1", f"{cb.id}-2"]
    assert len(watch.customer_legs()) == 2


async def test_instance_killed_before_the_due_time_another_places_it_once(
        stack: Stack, instances: Instances, cb_phones: CallbackPhones, watch: AmiWatch) -> None:
    customer = await stack.add_customer(Customer(id="c-kill-1", name="Kong Ming", phones=("15550022",),
                                                 preferences=ALL_DAY))
    await asyncio.gather(instances.start("inst-a"), instances.start("inst-b"))
    agent = await cb_phones.agent(1004, ring_ms=300, hold_ms=1500)
    answering = await cb_phones.customer(ring_ms=300, hold_ms=1000)
    await stack.agent_ready("agent1004")
    cb = await request(stack, customer, in_seconds=3, preferred_agent="agent1004")
    await instances.kill9("inst-a")  # well before the due time
    assert await stack.store.get(cb.id) is not None  # the callback lives in Redis, not in a process

    assert (r := await agent.wait()).ok, r.describe()
    assert (r := await answering.wait()).ok, r.describe()
    final = await stack.settled(cb.id)
    assert final.state.value in ("connected", "done"), final
    assert final.attempts == 1
    assert [a.outcome for a in final.history] == [AttemptOutcome.ANSWERED]
    markers = await stack.markers(cb.id)
    assert list(markers) == [1] and markers[1].startswith("inst-b "), markers
    await asyncio.sleep(1.5)  # a late second dial would show up here
    assert_one_call(watch, cb, "agent1004")


async def test_instance_killed_while_its_call_rings_is_not_dialed_again(
        stack: Stack, instances: Instances, cb_phones: CallbackPhones, watch: AmiWatch) -> None:
    customer = await stack.add_customer(Customer(id="c-kill-2", name="Zhou Yu", phones=("15550023",),
                                                 preferences=ALL_DAY))
    await asyncio.gather(instances.start("inst-a", lease_seconds=2.0), instances.start("inst-b", lease_seconds=2.0))
    agent = await cb_phones.agent(1004, ring_ms=3000, hold_ms=1500)  # rings 3 s: time to kill the dialer
    answering = await cb_phones.customer(ring_ms=300, hold_ms=1000)
    await stack.agent_ready("agent1004")
    cb = await request(stack, customer, in_seconds=1, preferred_agent="agent1004")

    await wait_until(lambda: asyncio.sleep(0, watch.agent_legs("agent1004")), what="the agent leg")
    markers = await stack.markers(cb.id)
    dialer = markers[1].split(" ", 1)[0]
    survivor = ({"inst-a", "inst-b"} - {dialer}).pop()
    await instances.kill9(dialer)  # mid-dial: the Originate is out, its outcome will never arrive

    # The call itself goes on in Asterisk: the agent answers, the customer is rung and bridged.
    assert (r := await agent.wait()).ok, r.describe()
    assert (r := await answering.wait()).ok, r.describe()
    # The survivor re-queues the expired lease, finds the placed marker and does not dial again.
    final = await stack.settled(cb.id, timeout=20)
    assert final.state is CallbackState.FAILED and final.final_reason == "outcome_unknown", final
    assert [a.outcome for a in final.history] == [AttemptOutcome.UNKNOWN]
    assert dialer in final.history[0].detail
    assert list(await stack.markers(cb.id)) == [1]
    await asyncio.sleep(1.5)
    assert_one_call(watch, cb, "agent1004")
    assert "re-queued 1 callbacks whose lease expired" in instances.running[survivor].tail(20000)


async def test_two_instances_running_make_exactly_one_call(
        stack: Stack, instances: Instances, cb_phones: CallbackPhones, watch: AmiWatch) -> None:
    customer = await stack.add_customer(Customer(id="c-two-1", name="Lu Su", phones=("15550024",),
                                                 preferences=ALL_DAY))
    await asyncio.gather(instances.start("inst-a"), instances.start("inst-b"), instances.start("inst-c"))
    agent = await cb_phones.agent(1004, ring_ms=300, hold_ms=1500)
    answering = await cb_phones.customer(ring_ms=300, hold_ms=1000)
    await stack.agent_ready("agent1004")
    cb = await request(stack, customer, in_seconds=2, preferred_agent="agent1004")

    assert (r := await agent.wait()).ok, r.describe()
    assert (r := await answering.wait()).ok, r.describe()
    final = await stack.settled(cb.id)
    assert final.state.value in ("connected", "done"), final
    assert final.attempts == 1 and [a.outcome for a in final.history] == [AttemptOutcome.ANSWERED]
    assert list(await stack.markers(cb.id)) == [1]
    await asyncio.sleep(1.5)
    assert_one_call(watch, cb, "agent1004")
    assert "answered" in r.logs  # the customer's phone took exactly the one call it got


async def test_an_answered_callback_is_done_once_its_call_has_ended(
        stack: Stack, cb_phones: CallbackPhones) -> None:
    customer = await stack.add_customer(Customer(id="c-done-1", name="Pang Tong", phones=("15550027",),
                                                 preferences=ALL_DAY))
    async with in_process(stack, hotline="95555"):  # the callbacks' caller id (asterisk.hotline)
        agent = await cb_phones.agent(1004, ring_ms=300, hold_ms=1500)
        answering = await cb_phones.customer(ring_ms=300, hold_ms=1000)
        await stack.agent_ready("agent1004")
        cb = await request(stack, customer, in_seconds=1, preferred_agent="agent1004")
        assert (r := await agent.wait()).ok, r.describe()
        assert (r := await answering.wait()).ok, r.describe()
        await stack.settled(cb.id)
        await asyncio.sleep(2.0)  # both phones hung up: the call is over
        final = await stack.store.get(cb.id)

        async def recorded() -> list[Contact]:
            found = await contacts.list_timeline(stack.redis, stack.keys, customer.id)
            return [c for c in found if c.outcome is not Outcome.IN_PROGRESS]
        [contact] = await wait_until(recorded, what="the callback's contact record")
    assert final is not None and final.state is CallbackState.DONE, final
    # The contact history says what happened: the customer answered agent1004 (issue 13.1).
    assert contact.kind is ContactKind.CALLBACK, contact
    assert contact.outcome is Outcome.ANSWERED, contact
    assert contact.agents == ("agent1004",), contact
    assert contact.number == "15550027" and contact.customer_id == customer.id
    # wait: the agent's phone rang 0.3 s, then the customer's 0.3 s; talk: the customer held 1 s.
    assert contact.wait_seconds is not None and 0.3 <= contact.wait_seconds < 5, contact
    assert contact.talk_seconds is not None and 0.5 <= contact.talk_seconds < 5, contact
    assert contact.ended_at is not None


def _zone_where_it_is_noon(now: float) -> ZoneInfo:
    """A fixed-offset zone whose local time is now between 12:00 and 13:00."""
    hour = datetime.fromtimestamp(now, ZoneInfo("UTC")).hour
    for offset in range(-12, 15):
        if (hour + offset) % 24 == 12:
            # Etc/GMT names have the sign inverted: Etc/GMT-8 is UTC+8.
            return ZoneInfo("Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}")
    raise AssertionError("unreachable")


async def test_callback_outside_the_customers_allowed_hours_waits_for_the_window(
        stack: Stack, cb_phones: CallbackPhones, watch: AmiWatch) -> None:
    now = time.time()
    tz = _zone_where_it_is_noon(now)
    evening = ContactPreferences(timezone=tz.key, allowed_from="20:00", allowed_until="21:00")
    local_now = datetime.fromtimestamp(now, tz)
    opening = local_now.replace(hour=20, minute=0, second=0, microsecond=0).timestamp()
    assert opening - now > 6 * 3600  # the window is hours away, whatever the hour of the run
    customer = await stack.add_customer(Customer(id="c-eve-1", name="Ma Chao", phones=("15550025",),
                                                 preferences=evening))
    async with in_process(stack):
        agent = await cb_phones.agent(1004, ring_ms=300, hold_ms=1000, timeout=30)
        await stack.agent_ready("agent1004")
        # 1. Requested "in 1 s" (window: the next two days): scheduled for the window's opening.
        requested = await request(stack, customer, in_seconds=1, window=2 * 86400, preferred_agent="agent1004")
        assert requested.state is CallbackState.SCHEDULED
        assert requested.due_at == pytest.approx(opening)
        # 2. A callback that is due now although now is outside the hours (hours changed after it
        #    was scheduled): the scheduler claims it, does not dial, and moves it to the opening.
        stale = cbm.Callback(id="cb-stale-eve", customer_id=customer.id, number="15550025", earliest=now,
                             latest=now + 2 * 86400, created_at=now, preferred_agent="agent1004",
                             state=CallbackState.SCHEDULED, due_at=now, preferences=evening, updated_at=now)
        assert await stack.store.create(stale)

        async def moved() -> Callback | None:
            cb = await stack.store.get(stale.id)
            return cb if cb is not None and cb.due_at is not None and cb.due_at > now + 3600 else None
        waited = await wait_until(moved, what="the due time moved to the window")
        assert waited.state is CallbackState.SCHEDULED and waited.attempts == 0 and not waited.history
        assert waited.due_at == pytest.approx(opening)
        assert await stack.redis.zscore(stack.keys.callbacks_due(), stale.id) == pytest.approx(opening)
        await asyncio.sleep(2.0)  # several scheduler rounds: still nothing may be dialed
        for cb_id in (requested.id, stale.id):
            cb = await stack.store.get(cb_id)
            assert cb is not None and cb.state is CallbackState.SCHEDULED and cb.attempts == 0, cb
            assert await stack.markers(cb_id) == {}
        assert watch.agent_legs("agent1004") == [] and watch.customer_legs() == []
        assert agent.process.returncode is None  # the agent's phone never rang


async def test_press_2_in_the_faults_menu_keeps_the_place_and_calls_back_agent_first(
        stack: Stack, cb_phones: CallbackPhones, watch: AmiWatch) -> None:
    customer = await stack.add_customer(Customer(id="c-vh-1", name="Huang Zhong", phones=("15550026",),
                                                 preferences=ALL_DAY))
    ports = stack.asterisk.ports
    async with in_process(stack, agi_port=ports.agi_port) as server:  # the hotline's FastAGI target
        agent = await cb_phones.agent(1006, ring_ms=300, hold_ms=2000)  # ivr-faults member, tier standard
        answering = await cb_phones.customer(ring_ms=300, hold_ms=1000)
        await stack.agent_ready("agent1006")
        t_call = time.time()
        result = await cb_phones.call("32", number="15550026")  # 3 = faults, 2 = call me back
        assert result.ok, result.describe()

        async def requested() -> list[Callback]:
            return await server.callbacks.list(customer=customer.id)
        [cb] = await wait_until(requested, what="the virtual-hold callback")
        assert cb.queue_place is not None
        assert (cb.queue_place.queue, cb.queue_place.priority) == ("faults", 2)
        assert t_call <= cb.queue_place.joined_at <= time.time()
        assert cb.requested_by == "ivr" and cb.number == "15550026"

        assert (r := await agent.wait()).ok, r.describe()
        assert (r := await answering.wait()).ok, r.describe()
        final = await stack.settled(cb.id)
        [path] = await callpath.recent_paths(stack.redis, stack.keys, "hotline", 0)
    assert final.state.value in ("connected", "done"), final
    assert [(a.agent_id, a.outcome) for a in final.history] == [("agent1006", AttemptOutcome.ANSWERED)]
    exit_ = [p for p in path.events if p.kind.value == "exit"][-1]
    assert (exit_.node, exit_.detail) == ("faults", "callback")
    # Agent first: the agent's leg (ChannelId = the attempt) exists before the customer's leg.
    [agent_leg] = watch.agent_legs("agent1006")
    [customer_leg] = watch.customer_legs()
    assert agent_leg.uniqueid == f"{cb.id}-1"
    order = [e for _, e in watch.events if e in (agent_leg, customer_leg)]
    assert order == [agent_leg, customer_leg]
    # The customer's leg belongs to the same call (Linkedid = the agent leg).
    assert customer_leg.linkedid == agent_leg.uniqueid


def test_the_allowed_hours_zone_helper_is_right_at_every_hour() -> None:
    base = datetime(2025, 3, 1, tzinfo=ZoneInfo("UTC")).timestamp()
    for h in range(24):
        t = base + h * 3600 + 1234
        assert datetime.fromtimestamp(t, _zone_where_it_is_noon(t)).hour == 12
