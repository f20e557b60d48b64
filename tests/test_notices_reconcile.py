"""The notices' reconcile sweep and compare-and-set changes on a real Redis.

The crash window is made exactly: the real CallbackPlacer writes the call's outcome (the callback
record, the scheduler's truth) and its `on_placed` hook is absent — what an instance that died
right after that write leaves. The sweep (NoticeService.reconcile) must then give the notice the
outcome once, with one case event, also when on_placed (a slow instance) or another instance's
sweep runs at the same moment; a call still running is left alone. Press 1 during the message can
reach a notice before the placer's answered outcome: it reads heard, pressed_1 all the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivrserver.domain import callbacks as cbm
from ivrserver.domain.callbacks import CallbackPolicy, CallbackState
from ivrserver.domain.notices import NoticeState
from ivrserver.services.callbacks import CallbackPlacer, DialOutcome, DialResult
from ivrserver.services.notices import NoticeService
from ivrserver.store.callbacks import UpdateResult
from ivrserver.store.keys import Keys
from tests.test_notices import ALL_DAY, Env, notice

GRACE = 120.0


class Crashy(Env):
    """test_notices' Env whose placer has no on_placed: the instance 'dies' after the outcome write."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, tmp: Path, calling: CallbackPolicy = ALL_DAY) -> None:
        super().__init__(redis, keys, tmp)
        self.notices.reconcile_grace = GRACE
        self.placer = CallbackPlacer(self.calls, self.dialer, calling, free_agents=_none, is_free=_false,
                                     clock=self.clock, instance="dies")

    def other_instance(self) -> NoticeService:
        """A second instance's NoticeService on the same Redis."""
        return NoticeService(
            self.store, self.calls, self.notices.messages, self.notices.policy, self.notices.calling,
            customer=self.notices.customer, cases=self.cases, reconcile_grace=GRACE, clock=self.clock)

    async def case_outcomes(self, case_id: str) -> list[tuple[str, bool]]:
        return [(e["detail"]["outcome"], bool(e["detail"].get("reconciled")))
                for e in await self.cases.events(case_id) if e.get("kind") == "notice"]


async def _none(tier: str) -> list[str]:
    return []


async def _false(agent: str) -> bool:
    return False


@pytest.fixture
def env(redis_client: aioredis.Redis, keys: Keys, tmp_path: Path) -> Crashy:
    return Crashy(redis_client, keys, tmp_path)


async def scheduled_with_case(env: Crashy, key: str = "k1", customer: str = "c1") -> tuple[str, str, str]:
    await env.customer(customer)
    case = await env.cases.open({"customer_id": customer, "summary": "premium SMS charge"}, actor="agent:agent1003")
    result = await env.notices.schedule(notice(key, customer_id=customer, case_id=case.id))
    assert result.call_id is not None
    return result.notice_id, result.call_id, case.id


@pytest.mark.parametrize(("dial", "max_attempts", "call_state", "notice_state", "reason"), [
    (DialOutcome.ANSWERED, 3, CallbackState.CONNECTED, NoticeState.HEARD, ""),
    (DialOutcome.NO_ANSWER, 1, CallbackState.FAILED, NoticeState.FAILED, "max_attempts"),
])
async def test_an_outcome_written_but_not_followed_is_reconciled_once(
        redis_client: aioredis.Redis, keys: Keys, tmp_path: Path, dial: DialOutcome, max_attempts: int,
        call_state: CallbackState, notice_state: NoticeState, reason: str) -> None:
    env = Crashy(redis_client, keys, tmp_path, dataclasses.replace(ALL_DAY, max_attempts=max_attempts))
    nid, call_id, case_id = await scheduled_with_case(env)
    env.dialer.script = [DialResult(dial)]
    assert await env.place_due() == ["placed"]
    cb = await env.calls.get(call_id)
    assert cb is not None and cb.state is call_state  # the outcome is written ...
    n = await env.store.get(nid)
    assert n is not None and n.state is NoticeState.SCHEDULED and n.outcomes == ()  # ... and nobody followed it
    # within the grace the sweep leaves it (on_placed may be on its way)
    assert await env.notices.reconcile() == 0
    env.clock.offset += GRACE + 1
    assert await env.notices.reconcile() == 1
    n = await env.store.get(nid)
    assert n is not None and (n.state, n.reason) == (notice_state, reason)
    assert [o for o, _ in n.outcomes] == [notice_state.value]
    assert await env.case_outcomes(case_id) == [(notice_state.value, True)]
    cb = await env.calls.get(call_id)
    assert cb is not None and cb.state in (CallbackState.DONE, CallbackState.FAILED)  # connected → done
    assert await env.store.pending_calls("c1") == [] and await env.store.open_count() == 0
    # idempotent: later sweeps (of any instance) find nothing
    env.clock.offset += GRACE * 10
    assert await env.notices.reconcile() == 0 and await env.other_instance().reconcile() == 0
    assert await env.case_outcomes(case_id) == [(notice_state.value, True)]


async def test_sweeps_racing_on_placed_give_one_outcome_and_one_case_event(env: Crashy) -> None:
    ids = [await scheduled_with_case(env, f"k{i:02d}", f"c{i:02d}") for i in range(20)]
    env.dialer.script = [DialResult(DialOutcome.ANSWERED)] * len(ids)
    assert await env.place_due() == ["placed"] * len(ids)
    env.clock.offset += GRACE + 1
    calls = [cb for cb in await env.calls.get_many([call_id for _, call_id, _ in ids]) if cb is not None]
    # three instances' sweeps at once (they walk the calls in the same order), and the slow
    # on_placed of the "dead" instance for every other call, from the other end
    late = [env.notices.on_placed(cb) for cb in reversed(calls[::2])]
    settled = await asyncio.gather(env.notices.reconcile(), env.other_instance().reconcile(),
                                   env.other_instance().reconcile(), *late)
    assert len(ids) // 2 <= sum(settled[:3]) <= len(ids)  # the sweeps settled the calls nobody followed
    for nid, call_id, case_id in ids:
        n = await env.store.get(nid)
        assert n is not None and n.state is NoticeState.HEARD and [o for o, _ in n.outcomes] == ["heard"]
        assert [o for o, _ in await env.case_outcomes(case_id)] == ["heard"]
        cb = await env.calls.get(call_id)
        assert cb is not None and cb.state is CallbackState.DONE


async def test_a_call_still_running_is_left_alone(env: Crashy) -> None:
    retry_nid, retry_call, retry_case = await scheduled_with_case(env, "retry", "c1")
    # one call answered nothing and waits for its retry (followed: the real on_placed)
    env.placer.on_placed = env.notices.on_placed
    env.dialer.script = [DialResult(DialOutcome.NO_ANSWER)]
    assert await env.place_due() == ["placed"]
    # another is being dialed right now (its dial never returns)
    dial_nid, dial_call, dial_case = await scheduled_with_case(env, "dialing", "c2")
    env.dialer.hang_first = 1
    placing = asyncio.create_task(env.place_due())
    try:
        await asyncio.wait_for(env.dialer.hung.wait(), 10)
        cb = await env.calls.get(dial_call)
        assert cb is not None and cb.state is CallbackState.DIALING
        retry = await env.calls.get(retry_call)
        assert retry is not None and retry.state is CallbackState.RETRY_WAIT and retry.due_at is not None
        env.clock.offset += retry.due_at - env.clock() + GRACE * 3  # long past the retry's due + the grace
        assert await env.notices.reconcile() == 0
        for nid, state in ((retry_nid, ["no_answer"]), (dial_nid, [])):
            n = await env.store.get(nid)
            assert n is not None and n.state is NoticeState.SCHEDULED and [o for o, _ in n.outcomes] == state
        assert await env.case_outcomes(dial_case) == []
        assert await env.case_outcomes(retry_case) == [("no_answer", False)]
        assert await env.store.open_count() == 2  # still watched
    finally:
        placing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await placing


async def test_a_vanished_or_cancelled_call_ends_its_notice(env: Crashy, redis_client: aioredis.Redis,
                                                            keys: Keys) -> None:
    gone_nid, gone_call, gone_case = await scheduled_with_case(env, "gone", "c1")
    cancelled_nid, cancelled_call, _ = await scheduled_with_case(env, "cancelled", "c2")
    await redis_client.delete(keys.callback(gone_call))  # e.g. expired, or lost with a Redis failover
    cb = await env.calls.get(cancelled_call)
    assert cb is not None
    assert await env.calls.update(cbm.cancel(cb, env.clock(), "cancelled by the back office"),
                                  expected_version=cb.version, due=None) is UpdateResult.OK
    env.clock.offset += GRACE + 1
    assert await env.notices.reconcile() == 2
    gone = await env.store.get(gone_nid)
    assert gone is not None and (gone.state, gone.reason) == (NoticeState.FAILED, "call_missing")
    assert await env.case_outcomes(gone_case) == [("failed", True)]
    cancelled = await env.store.get(cancelled_nid)
    assert cancelled is not None and (cancelled.state, cancelled.reason) == (
        NoticeState.CANCELLED, "cancelled by the back office")
    assert await env.store.counted("c2", 0) == []  # never dialed: its budget slot is given back
    assert await env.store.open_count() == 0


async def test_press_1_during_the_message_before_the_answer_is_followed_reads_heard_then_pressed(
        env: Crashy) -> None:
    nid, call_id, case_id = await scheduled_with_case(env)
    env.dialer.script = [DialResult(DialOutcome.ANSWERED)]
    assert await env.place_due() == ["placed"]
    # the notify script runs before the placer's on_placed reached the notice
    [pressed] = await env.notices.pressed(call_id)
    assert pressed.state is NoticeState.PRESSED_1 and [o for o, _ in pressed.outcomes] == ["heard", "pressed_1"]
    cb = await env.calls.get(call_id)
    assert cb is not None
    await env.notices.on_placed(cb)  # late: nothing more to say
    n = await env.store.get(nid)
    assert n is not None and [o for o, _ in n.outcomes] == ["heard", "pressed_1"]
    assert [o for o, _ in await env.case_outcomes(case_id)] == ["heard", "pressed_1"]
    cb = await env.calls.get(call_id)
    assert cb is not None and cb.state is CallbackState.DONE


async def test_press_1_racing_on_placed_notes_heard_and_pressed_once(env: Crashy) -> None:
    ids = [await scheduled_with_case(env, f"k{i}", f"c{i}") for i in range(12)]
    env.dialer.script = [DialResult(DialOutcome.ANSWERED)] * len(ids)
    assert await env.place_due() == ["placed"] * len(ids)
    calls = [cb for cb in await env.calls.get_many([call_id for _, call_id, _ in ids]) if cb is not None]
    await asyncio.gather(*(env.notices.on_placed(cb) for cb in calls),
                         *(env.notices.pressed(call_id) for _, call_id, _ in ids))
    for nid, _, case_id in ids:
        n = await env.store.get(nid)
        assert n is not None and n.state is NoticeState.PRESSED_1
        assert [o for o, _ in n.outcomes] == ["heard", "pressed_1"]
        assert [o for o, _ in await env.case_outcomes(case_id)] == ["heard", "pressed_1"]
