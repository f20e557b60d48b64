"""Every instance observes every instance's callback channels on AMI: Asterisk 22 + SIPp + Redis +
two in-process IvrServers (as `ivrserver run` builds them).

- instance A places an agent-first callback; instance B (scheduler off) receives the call's
  Newchannel, OriginateResponse (Asterisk sends it to every manager session with `call` read, not
  only to the one that sent the Originate) and the dialplan's CallbackResult, and records them:
  B's own observer wrote the attempt's observation, ending `result:answered`;
- an instance that took a placed marker and died before dialing (played by hand: claim, dialing
  record, marker) is taken over by B, whose AMI link has watched since before the marker and saw
  no channel: B re-dials the same attempt with the same ChannelId, and the agent and the customer
  are rung exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.domain import callbacks as cbm
from ivrserver.domain.callbacks import AttemptOutcome
from ivrserver.domain.model import Customer
from ivrserver.pbx import ami_events as ev
from ivrserver.services.callbacks import PlaceResult
from tests.integration import test_callback_calls as cbc
from tests.integration.test_ivrserver_calls import running, wait_until

pytestmark = pytest.mark.integration

stack = cbc.stack
watch = cbc.watch
cb_phones = cbc.cb_phones


@contextlib.asynccontextmanager
async def instance(stack: cbc.Stack, name: str, *, scheduler: bool, lease_seconds: float = 60.0,
                   **callbacks: Any) -> AsyncIterator[IvrServer]:
    settings = stack.settings(name, lease_seconds=lease_seconds)
    settings["callbacks"] = {**settings["callbacks"], "enabled": scheduler, **callbacks}
    async with running(config.from_mapping(settings)) as server:
        yield server


async def test_another_instance_records_the_callback_channel_it_did_not_originate(
        stack: cbc.Stack, cb_phones: cbc.CallbackPhones, watch: cbc.AmiWatch) -> None:
    customer = await stack.add_customer(Customer(id="c-obs-1", name="Sun Ce", phones=("15550041",),
                                                 preferences=cbc.ALL_DAY))
    async with instance(stack, "obs-b", scheduler=False) as b:
        seen_by_b = b.fanout.subscribe()  # what B's AMI session delivered, as B's observer got it
        async with instance(stack, "obs-a", scheduler=True) as a:
            agent = await cb_phones.agent(1004, ring_ms=300, hold_ms=1000)
            answering = await cb_phones.customer(ring_ms=300, hold_ms=500)
            await stack.agent_ready("agent1004")
            cb = await cbc.request(stack, customer, in_seconds=1, preferred_agent="agent1004")
            assert (r := await agent.wait()).ok, r.describe()
            assert (r := await answering.wait()).ok, r.describe()
            final = await stack.settled(cb.id)
            assert final.state.value in ("connected", "done") and final.attempts == 1, final
            assert (await stack.markers(cb.id))[1].startswith("obs-a "), "A placed it, not B"

            async def b_recorded_the_result() -> bool:
                return (b.callback_observer.written >= 3
                        and await stack.store.observation(cb.id, 1) == "result:answered")
            await wait_until(b_recorded_the_result, what="B's observation of A's call")
            # A observes its own calls too, but its own OriginateResponse answers its action
            # (panoramisk hands it to the waiting Originate, not to the event handlers)
            assert a.callback_observer.written >= 2

        channel = f"{cb.id}-1"
        events = []
        while not seen_by_b.empty():
            events.append(seen_by_b.get_nowait())
        assert any(isinstance(e, ev.Newchannel) and e.uniqueid == channel for e in events)
        responses = [e for e in events if isinstance(e, ev.OriginateResponse) and e.uniqueid == channel]
        assert [r.success for r in responses] == [True], "A's OriginateResponse reaches B's session too"
        assert any(isinstance(e, ev.UserEvent) and e.name == "CallbackResult" and e.headers.get("Uniqueid") == channel
                   for e in events)
        # B's link record: up, and vouching for everything until a moment ago
        links = await stack.store.observers(0.0)
        assert {link.instance for link in links} >= {"obs-b"}
    cbc.assert_one_call(watch, cb, "agent1004")


async def test_a_marked_attempt_never_dialed_is_redialed_once_by_an_observing_instance(
        stack: cbc.Stack, cb_phones: cbc.CallbackPhones, watch: cbc.AmiWatch) -> None:
    customer = await stack.add_customer(Customer(id="c-obs-2", name="Lu Xun", phones=("15550042",),
                                                 preferences=cbc.ALL_DAY))
    # A short lease takes the job over quickly; the observer beats fast enough to vouch within a
    # third of it (callbacks.observe_interval · 2 + observe_margin ≤ lease / 3).
    async with instance(stack, "obs-b", scheduler=True, lease_seconds=3.0, observe_interval=0.1,
                        observe_margin=0.3) as b:
        agent = await cb_phones.agent(1004, ring_ms=300, hold_ms=1000)
        answering = await cb_phones.customer(ring_ms=300, hold_ms=500)
        await stack.agent_ready("agent1004")

        async def b_watching() -> bool:
            return b.callback_observer.since is not None and b.callback_observer.through is not None
        await wait_until(b_watching, what="B's AMI observer up")
        await asyncio.sleep(0.5)  # the marker comes after B's watch began + the margin

        # the dead instance: claims the job (due in an hour, so B leaves it alone until then),
        # saves attempt 1 as dialing, takes the marker, and dies with 3 s left on its lease
        cb = await cbc.request(stack, customer, in_seconds=3600, preferred_agent="agent1004")
        store = stack.store
        claims = await store.claim(time.time() + 7200, lease_seconds=3.0, limit=1, claimer="dead")
        assert [c.callback_id for c in claims] == [cb.id]
        now = time.time()
        assert await store.renew(claims[0], now, 3.0)
        # its lease notes the job due now, so the reaper re-queues it due now (not in an hour)
        token, _, claimer = (await stack.redis.hget(stack.keys.callbacks_lease_info(), cb.id)).split(" ")
        await stack.redis.hset(stack.keys.callbacks_lease_info(), cb.id, f"{token} {now!r} {claimer}")
        assert await store.save_leased(claims[0], cbm.start_attempt(cb, now, "agent1004"))
        assert await store.mark_placed(cb.id, 1, f"dead {claims[0].token} {now:.3f}")

        final = await stack.settled(cb.id)
        assert (r := await agent.wait()).ok, (final, r.describe())
        assert (r := await answering.wait()).ok, r.describe()
        assert final.state.value in ("connected", "done") and final.attempts == 1, final
        assert [a.outcome for a in final.history] == [AttemptOutcome.ANSWERED]
        assert (await stack.markers(cb.id))[1].startswith("obs-b "), "the marker passed to B"
        assert b.scheduler.results.get(PlaceResult.REDIALED) == 1
        await asyncio.sleep(1.5)  # a late second dial would show up here
    cbc.assert_one_call(watch, cb, "agent1004")
