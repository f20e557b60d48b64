"""Scheduler + placer on a real Redis.

The Dialer here is a recording test double standing in for the AMI Originate adapter (which is
tested against a real Asterisk elsewhere): it records every originate it receives — the moment a
call would leave — and answers with a scripted outcome. Exactly-once is asserted on that record.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis

from ivrserver.domain.callbacks import (
    Attempt,
    Callback,
    CallbackPolicy,
    CallbackState,
    QueueEntry,
    RequestInvalid,
)
from ivrserver.domain.model import ContactPreferences
from ivrserver.services.callbacks import (
    CallbackBusy,
    CallbackNotFound,
    CallbackPlacer,
    CallbackScheduler,
    CallbackService,
    DialOutcome,
    DialResult,
    InvalidTransition,
    PlaceResult,
)
from ivrserver.store.callbacks import CallbackStore, Claim, DialStart
from ivrserver.store.keys import Keys
from tests.test_agent_ws import eventually

T0 = 1_717_405_200.0  # Monday 2024-06-03 09:00 UTC
POLICY = CallbackPolicy()
ALL_DAY = CallbackPolicy(calling_from="00:00", calling_until="24:00")
OPEN_PREFS = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class RecordingDialer:
    """Test double for the AMI side: records each originate, answers from a script."""

    def __init__(self, script: Sequence[DialResult] = (), instance: str = "") -> None:
        self.calls: list[dict[str, object]] = []
        self.script = list(script)
        self.instance = instance
        self.hang_first = 0
        self.hung = asyncio.Event()
        self.delay = 0.0

    async def originate(self, *, channel_id: str, agent_endpoint: str | None, customer_dial: str,
                        context: str, variables: dict[str, str], timeout_s: int,
                        send_by: float | None = None) -> DialResult:
        self.calls.append(dict(channel_id=channel_id, agent_endpoint=agent_endpoint, customer_dial=customer_dial,
                               context=context, variables=variables, timeout_s=timeout_s,
                               instance=self.instance))
        if self.hang_first > 0:
            self.hang_first -= 1
            if self.hang_first == 0:
                self.hung.set()
            await asyncio.Event().wait()  # the process "dies" while the call is up
        if self.delay:
            await asyncio.sleep(random.uniform(0, self.delay))
        return self.script.pop(0) if self.script else DialResult(DialOutcome.ANSWERED)


class Agents:
    def __init__(self, free: dict[str, list[str]] | None = None, busy: set[str] | None = None) -> None:
        self.free = free or {}
        self.busy = busy or set()

    async def free_agents(self, tier: str) -> list[str]:
        return [a for a in self.free.get(tier, []) if a not in self.busy]

    async def is_free(self, agent: str) -> bool:
        return agent not in self.busy


class Env:
    def __init__(self, redis: aioredis.Redis, keys: Keys, policy: CallbackPolicy = POLICY,
                 dialer: RecordingDialer | None = None, agents: Agents | None = None,
                 prefs: dict[str, ContactPreferences] | None = None,
                 queue: tuple[list[QueueEntry], int] | None = None) -> None:
        self.clock = Clock(T0)
        self.store = CallbackStore(redis, keys)
        self.dialer = dialer or RecordingDialer()
        self.agents = agents or Agents({"vip": ["agent1002", "agent1003"]})
        self.recorded: list[tuple[str, Attempt]] = []
        self.prefs = prefs or {}
        self.queue = queue

        async def record(cb: Callback, attempt: Attempt) -> None:
            self.recorded.append((cb.id, attempt))

        async def prefs_of(customer_id: str) -> ContactPreferences | None:
            return self.prefs.get(customer_id)

        async def snapshot(name: str) -> tuple[list[QueueEntry], int]:
            assert self.queue is not None
            return self.queue

        self.service = CallbackService(self.store, policy, preferences=prefs_of, clock=self.clock)
        self.placer = CallbackPlacer(self.store, self.dialer, policy, free_agents=self.agents.free_agents,
                                     is_free=self.agents.is_free, record_attempt=record, preferences=prefs_of,
                                     queue_snapshot=snapshot if queue is not None else None,
                                     clock=self.clock, instance="t1")

    async def tick(self, lease: float = 60.0) -> list[PlaceResult]:
        claims = await self.store.claim(self.clock(), lease_seconds=lease, limit=100, claimer="t1")
        return [await self.placer.place(c) for c in claims]


def request(**kw: object) -> dict[str, object]:
    return {"customer_id": "c1", "number": "555 1234", "at": T0 + 60, "preferred_agent": "agent1001",
            "tier": "vip", "reason": "premium SMS charge", "case_id": "K-17",
            "context": "charged for SMS he never ordered", **kw}


async def test_agent_first_happy_path(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys)
    cb = await env.service.request(request(), requested_by="agent1001")
    assert (cb.state, cb.due_at) == (CallbackState.SCHEDULED, T0 + 60)
    assert await env.tick() == [], "not due yet"
    env.clock.t = T0 + 60
    assert await env.tick() == [PlaceResult.PLACED]
    [call] = env.dialer.calls
    assert call["channel_id"] == f"{cb.id}-1"
    assert call["agent_endpoint"] == "PJSIP/agent1001"
    assert call["customer_dial"] == "PJSIP/5551234@customers"
    assert call["context"] == "ivrserver-callback"
    assert call["variables"] == {"CB_ID": cb.id, "CB_ATTEMPT": "1", "CB_NUMBER": "5551234",
                                 "CB_DIAL": "PJSIP/5551234@customers"}
    after = await env.service.get(cb.id)
    assert (after.state, after.attempts, after.history[0].agent_id) == (CallbackState.CONNECTED, 1, "agent1001")
    assert [(i, a.outcome) for i, a in env.recorded] == [(cb.id, "answered")]
    assert await env.store.counts() == {"due": 0, "leased": 0, "total": 1}
    done = await env.service.mark_done(cb.id, disposition="refund granted")
    assert (done.state, done.final_reason) == (CallbackState.DONE, "refund granted")
    assert await env.tick() == [] and len(env.dialer.calls) == 1


async def test_retries_with_backoff_then_final_state(redis_client: aioredis.Redis, keys: Keys) -> None:
    dialer = RecordingDialer([DialResult(DialOutcome.BUSY), DialResult(DialOutcome.NO_ANSWER),
                              DialResult(DialOutcome.NO_ANSWER)])
    env = Env(redis_client, keys, dialer=dialer)
    cb = await env.service.request(request(at=T0, latest=None))
    expected_due = [T0 + 300, T0 + 300 + 900]
    for due in expected_due:
        assert await env.tick() == [PlaceResult.PLACED]
        waiting = await env.service.get(cb.id)
        assert (waiting.state, waiting.due_at) == (CallbackState.RETRY_WAIT, due)
        assert await redis_client.zscore(keys.callbacks_due(), cb.id) == due
        env.clock.t = due - 1
        assert await env.tick() == []
        env.clock.t = due
    assert await env.tick() == [PlaceResult.PLACED]
    final = await env.service.get(cb.id)
    assert (final.state, final.final_reason) == (CallbackState.FAILED, "max_attempts")
    assert [c["channel_id"] for c in dialer.calls] == [f"{cb.id}-1", f"{cb.id}-2", f"{cb.id}-3"]
    assert [a.outcome for _, a in env.recorded] == ["busy", "no_answer", "no_answer"]
    assert await env.store.counts() == {"due": 0, "leased": 0, "total": 1}


async def test_request_outside_customer_hours_is_scheduled_at_their_window(redis_client: aioredis.Redis,
                                                                           keys: Keys) -> None:
    env = Env(redis_client, keys)
    # 09:00Z is 18:00 in Tokyo: the customer's 09:00-12:00 window is over, next is 00:00Z tomorrow.
    cb = await env.service.request({**request(at=None), "earliest": T0, "latest": T0 + 86400,
                                    "timezone": "Asia/Tokyo", "allowed_from": "09:00", "allowed_until": "12:00"})
    assert cb.due_at == T0 + 15 * 3600
    assert await redis_client.zscore(keys.callbacks_due(), cb.id) == T0 + 15 * 3600


async def test_due_job_outside_hours_is_requeued_not_dialed(redis_client: aioredis.Redis, keys: Keys) -> None:
    # Company hours changed (config reload) after the callback was scheduled for 22:00Z: the placer
    # checks again at claim time and re-queues it for the next window instead of dialing.
    env = Env(redis_client, keys)
    lenient = CallbackService(env.store, ALL_DAY, clock=env.clock)
    env.clock.t = T0 + 13 * 3600  # 22:00Z
    cb = await lenient.request({**request(at=None), "earliest": env.clock.t, "latest": env.clock.t + 86400,
                                "allowed_from": "00:00", "allowed_until": "24:00"})
    assert await env.tick() == [PlaceResult.WAITING]
    assert env.dialer.calls == []
    next_open = T0 + 23 * 3600  # 08:00Z tomorrow (company hours 08:00-21:00)
    assert await redis_client.zscore(keys.callbacks_due(), cb.id) == next_open
    assert (await env.service.get(cb.id)).due_at == next_open
    env.clock.t = next_open
    assert await env.tick() == [PlaceResult.PLACED]


async def test_do_not_call_set_after_scheduling_gives_up(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys)
    cb = await env.service.request(request(at=T0))
    env.prefs["c1"] = ContactPreferences(do_not_call=True)
    assert await env.tick() == [PlaceResult.GAVE_UP]
    final = await env.service.get(cb.id)
    assert (final.state, final.final_reason, env.dialer.calls) == (CallbackState.FAILED, "do_not_call", [])


async def test_do_not_call_customer_cannot_request(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys, prefs={"c1": ContactPreferences(do_not_call=True)})
    with pytest.raises(RequestInvalid) as err:
        await env.service.request(request())
    assert "do-not-call" in err.value.errors["customer_id"]


async def test_preferred_agent_busy_then_fallback_after_grace(redis_client: aioredis.Redis, keys: Keys) -> None:
    agents = Agents({"vip": ["agent1003", "agent1002"]}, busy={"agent1001"})
    env = Env(redis_client, keys, agents=agents)
    cb = await env.service.request(request(at=T0))
    assert await env.tick() == [PlaceResult.WAITING]
    assert await redis_client.zscore(keys.callbacks_due(), cb.id) == T0 + POLICY.agent_recheck_seconds
    env.clock.t = T0 + 5
    assert await env.tick() == [PlaceResult.WAITING] and env.dialer.calls == []
    assert (await env.service.get(cb.id)).due_at == T0, "grace counts from the attempt's due time"
    env.clock.t = T0 + 100
    agents.busy.add("agent1003")
    assert await env.tick() == [PlaceResult.WAITING], "within grace: still waiting for agent1001"
    agents.busy.discard("agent1003")
    env.clock.t = T0 + POLICY.grace_seconds + 5
    assert await env.tick() == [PlaceResult.PLACED]
    assert env.dialer.calls[0]["agent_endpoint"] == "PJSIP/agent1003", "longest idle of the tier"


async def test_customer_first_notification(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys)
    cb = await env.service.request(request(at=T0, mode="customer_first", prompt="case-resolved",
                                           preferred_agent=None))
    assert await env.tick() == [PlaceResult.PLACED]
    [call] = env.dialer.calls
    assert (call["context"], call["agent_endpoint"], call["timeout_s"]) == ("ivrserver-notify", None, 30)
    assert call["variables"]["NOTIFY_ID"] == cb.id  # type: ignore[index]
    assert call["variables"]["NOTIFY_PROMPT"] == "case-resolved"  # type: ignore[index]


async def test_virtual_hold_waits_for_earlier_live_callers(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys, queue=([QueueEntry("live-1", T0 - 50)], 1))
    cb = await env.service.request({"customer_id": "c1", "number": "5551234", "queue": "general",
                                    "joined_at": T0 - 10, "tier": "vip"})
    assert await env.tick() == [PlaceResult.WAITING]
    env.queue = ([QueueEntry("live-2", T0 - 5)], 1)  # live-1 reached an agent; live-2 came later
    env.clock.t = T0 + POLICY.virtual_hold_recheck_seconds
    assert await env.tick() == [PlaceResult.PLACED]
    assert env.dialer.calls[0]["channel_id"] == f"{cb.id}-1"


async def test_dialer_error_counts_as_dialed_and_is_never_redialed(redis_client: aioredis.Redis,
                                                                    keys: Keys) -> None:
    class Broken(RecordingDialer):
        async def originate(self, **kw: object) -> DialResult:  # type: ignore[override]
            await super().originate(**kw)  # type: ignore[arg-type]
            raise ConnectionResetError("AMI went away after the action was sent")

    env = Env(redis_client, keys, dialer=Broken())
    cb = await env.service.request(request(at=T0))
    assert await env.tick() == [PlaceResult.PLACED]
    final = await env.service.get(cb.id)
    assert (final.state, final.final_reason) == (CallbackState.FAILED, "outcome_unknown")
    env.clock.t += 3600
    assert await env.tick() == [] and len(env.dialer.calls) == 1


async def _crash_after(env: Env, cb: Callback, step: str) -> Claim:
    """Do the first steps of a placement by hand, as an instance that then dies."""
    from ivrserver.domain import callbacks as cbm

    [claim] = await env.store.claim(env.clock(), lease_seconds=5, limit=1, claimer="dead")
    dialing = cbm.start_attempt(cb, env.clock(), "agent1001")
    assert await env.store.save_leased(claim, dialing)
    if step == "marked":
        assert await env.store.mark_placed(cb.id, 1, "dead tok 0")
    return claim


@pytest.mark.parametrize(("step", "result", "dials", "state"), [
    ("saved_dialing", PlaceResult.PLACED, 1, CallbackState.CONNECTED),  # never dialed: dial it
    ("marked", PlaceResult.RECOVERED_UNKNOWN, 0, CallbackState.FAILED),  # maybe dialed: never again
])
async def test_recovery_after_a_holder_died(redis_client: aioredis.Redis, keys: Keys, step: str,
                                            result: PlaceResult, dials: int, state: CallbackState) -> None:
    env = Env(redis_client, keys)
    cb = await env.service.request(request(at=T0))
    await _crash_after(env, cb, step)
    assert await env.tick() == [], "the dead holder's lease has not expired yet"
    env.clock.t = T0 + 6
    assert await env.store.reap(env.clock()) == [cb.id]
    assert await env.tick() == [result]
    assert len(env.dialer.calls) == dials
    after = await env.service.get(cb.id)
    assert (after.state, after.attempts) == (state, 1)
    if dials:
        assert env.dialer.calls[0]["channel_id"] == f"{cb.id}-1", "the same attempt, not a new one"
    else:
        assert after.final_reason == "outcome_unknown" and env.recorded[0][1].outcome == "unknown"


class GatedStore(CallbackStore):
    """Fault injection: start_dial waits for `gate` (an instance stalled, e.g. a long GC pause);
    with `save_first` it saves "dialing" before stalling (what an older two-step placer left)."""

    def __init__(self, *args: object, save_first: bool = False, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.reached = asyncio.Event()
        self.gate = asyncio.Event()
        self.save_first = save_first

    async def start_dial(self, claim: Claim, cb: Callback, holder: str, *, now: float,
                         lease_seconds: float) -> DialStart:
        if self.save_first:
            assert await self.save_leased(claim, cb)
        self.reached.set()
        await self.gate.wait()
        return await super().start_dial(claim, cb, holder, now=now, lease_seconds=lease_seconds)


@pytest.mark.parametrize("save_first", [False, True])
async def test_stalled_holder_waking_after_reclaim_does_not_dial_again(redis_client: aioredis.Redis,
                                                                       keys: Keys, save_first: bool) -> None:
    a, b = Env(redis_client, keys), Env(redis_client, keys)
    gated = GatedStore(redis_client, keys, save_first=save_first)
    a.placer.store = gated
    cb = await a.service.request(request(at=T0))
    [claim_a] = await gated.claim(T0, lease_seconds=5, limit=1, claimer="A")
    stalled = asyncio.create_task(a.placer.place(claim_a))
    await asyncio.wait_for(gated.reached.wait(), 5)  # A is about to save "dialing" and take the marker
    b.clock.t = T0 + 6
    assert await b.store.reap(b.clock()) == [cb.id]
    assert await b.tick() == [PlaceResult.PLACED]  # B dials attempt 1 (no marker yet)
    gated.gate.set()
    # A's lease is gone: its start_dial writes nothing (neither the record nor the marker).
    assert await stalled == PlaceResult.LEASE_LOST
    assert a.dialer.calls == [] and [c["channel_id"] for c in b.dialer.calls] == [f"{cb.id}-1"]
    after = await b.service.get(cb.id)
    assert (after.state, after.attempts) == (CallbackState.CONNECTED, 1)
    assert (await b.store.placed_by(cb.id, 1) or "").startswith("t1 "), "B's marker, not A's"


async def test_marker_taken_under_a_valid_lease_is_not_dialed(redis_client: aioredis.Redis, keys: Keys) -> None:
    # Should not happen (the marker is taken together with the "dialing" record), but if the
    # marker of the attempt exists, the placer must not dial it; the next holder settles it.
    env = Env(redis_client, keys)
    cb = await env.service.request(request(at=T0))
    assert await env.store.mark_placed(cb.id, 1, "someone tok 0")
    [claim] = await env.store.claim(T0, lease_seconds=5, limit=1, claimer="t1")
    assert await env.placer.place(claim) is PlaceResult.ALREADY_PLACED
    assert env.dialer.calls == []
    saved = await env.service.get(cb.id)
    assert (saved.state, saved.attempts) == (CallbackState.DIALING, 1)
    env.clock.t = T0 + env.placer.lease_seconds + 1  # start_dial refreshed the lease for a dial
    assert await env.store.reap(env.clock()) == [cb.id]
    assert await env.tick() == [PlaceResult.RECOVERED_UNKNOWN] and env.dialer.calls == []
    assert (await env.service.get(cb.id)).final_reason == "outcome_unknown"


class CountingStore(CallbackStore):
    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.renewals = 0
        self.gets = 0

    async def renew(self, claim: Claim, now: float, lease_seconds: float) -> bool:
        self.renewals += 1
        return await super().renew(claim, now, lease_seconds)

    async def get(self, callback_id: str) -> Callback | None:
        self.gets += 1
        return await super().get(callback_id)


async def test_quick_dial_needs_no_renewal_slow_dial_keeps_its_lease(redis_client: aioredis.Redis,
                                                                     keys: Keys) -> None:
    lease = 0.6
    env = Env(redis_client, keys)
    store = CountingStore(redis_client, keys)
    env.placer.store = store
    env.placer.lease_seconds = lease
    quick = await env.service.request(request(at=T0))
    [claim] = await store.claim(T0, lease_seconds=lease, limit=1, claimer="t1")
    assert await env.placer.place(claim) is PlaceResult.PLACED
    assert (store.renewals, store.gets) == (0, 0), "the claim brought the record; no renewal needed"
    assert (await env.service.get(quick.id)).state is CallbackState.CONNECTED

    slow = await env.service.request(request(at=T0, customer_id="c2"))
    expiries: list[float | None] = []

    class Slow(RecordingDialer):
        async def originate(self, **kw: object) -> DialResult:  # type: ignore[override]
            expiries.append(await redis_client.zscore(keys.callbacks_leased(), slow.id))
            for _ in range(3):  # a long call: the fake clock moves on, the lease must follow
                env.clock.t += 10
                await asyncio.sleep(lease / 3 * 2 + 0.1)  # at least one renewal in between
                assert await store.reap(env.clock()) == [], "the lease of a live dial expired"
            expiries.append(await redis_client.zscore(keys.callbacks_leased(), slow.id))
            return DialResult(DialOutcome.ANSWERED)

    env.placer.dialer = Slow()
    [claim] = await store.claim(T0, lease_seconds=lease, limit=1, claimer="t1")
    env.clock.t = T0 + 1  # the claim's own lease (T0 + 0.6) ran out before the dial started
    assert await env.placer.place(claim) is PlaceResult.PLACED
    assert expiries[0] == T0 + 1 + lease, "start_dial refreshed the lease"
    assert store.renewals >= 2 and expiries[1] is not None and expiries[1] >= T0 + 21 + lease
    assert (await env.service.get(slow.id)).state is CallbackState.CONNECTED


async def test_service_reschedule_cancel_and_conflicts(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys)
    cb = await env.service.request(request())
    moved = await env.service.reschedule(cb.id, {"at": T0 + 7200})
    assert (moved.state, moved.due_at, moved.version) == (CallbackState.SCHEDULED, T0 + 7200, cb.version + 1)
    assert await redis_client.zscore(keys.callbacks_due(), cb.id) == T0 + 7200
    with pytest.raises(RequestInvalid) as err:
        await env.service.reschedule(cb.id, {"at": T0 - 3600})
    assert "in the past" in err.value.errors["at"]
    with pytest.raises(CallbackNotFound):
        await env.service.cancel("cb-missing")
    env.clock.t = T0 + 7200
    [claim] = await env.store.claim(env.clock(), lease_seconds=30, limit=1, claimer="x")
    with pytest.raises(CallbackBusy, match="being placed"):
        await env.service.cancel(cb.id)
    await env.store.complete(claim, None)  # put it back untouched (no longer due)
    await env.store.update(moved, expected_version=moved.version, due=T0 + 7200)
    cancelled = await env.service.cancel(cb.id, reason="customer called in")
    assert (cancelled.state, cancelled.final_reason) == (CallbackState.CANCELLED, "customer called in")
    assert await redis_client.zscore(keys.callbacks_due(), cb.id) is None
    with pytest.raises(InvalidTransition):
        await env.service.cancel(cb.id)
    assert await env.tick() == [] and env.dialer.calls == []
    assert [c.id for c in await env.service.list(state="cancelled")] == [cb.id]
    with pytest.raises(RequestInvalid):
        await env.service.list(state="bogus")


# ----------------------------------------------------------------------------- concurrency


class StallingStore(CallbackStore):
    """Fault injection: hang in start_dial for the first `n` calls after saving 'dialing' without
    the placed marker, i.e. the instance dies in the state a cancelled start_dial leaves (it gives
    the marker back): the next holder must resume and dial that attempt."""

    def __init__(self, *args: object, n: int, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.n = n
        self.hung = asyncio.Event()

    async def start_dial(self, claim: Claim, cb: Callback, holder: str, *, now: float,
                         lease_seconds: float) -> DialStart:
        if self.n > 0:
            self.n -= 1
            assert await self.save_leased(claim, cb)
            if self.n == 0:
                self.hung.set()
            await asyncio.Event().wait()
        return await super().start_dial(claim, cb, holder, now=now, lease_seconds=lease_seconds)


async def test_three_instances_one_killed_mid_run_place_each_callback_exactly_once(
        redis_url: str, redis_client: aioredis.Redis, keys: Keys) -> None:
    n = 300
    clients = [aioredis.Redis.from_url(redis_url, decode_responses=True) for _ in range(3)]
    setup = CallbackService(CallbackStore(redis_client, keys), ALL_DAY)
    now = time.time()
    ids = []
    for i in range(n):
        cb = await setup.request({"customer_id": f"c{i}", "number": f"555{i:04d}", "at": now + (i % 30) * 0.05,
                                  "preferred_agent": "agent1001", "timezone": "UTC",
                                  "allowed_from": "00:00", "allowed_until": "24:00"})
        ids.append(cb.id)

    is_free_hangs = {"left": 4}
    is_free_hung = asyncio.Event()

    async def stalling_is_free(agent: str) -> bool:  # instance C dies before even dialing these
        if is_free_hangs["left"] > 0:
            is_free_hangs["left"] -= 1
            if is_free_hangs["left"] == 0:
                is_free_hung.set()
            await asyncio.Event().wait()
        return True

    async def always_free(agent: str) -> bool:
        return True

    async def no_agents(tier: str) -> list[str]:
        return []

    dialers = [RecordingDialer(instance=name) for name in ("A", "B", "C")]
    for d in dialers[:2]:
        d.delay = 0.01
    dialers[2].hang_first = 4  # C dies with 4 calls up (dialed; outcome never known)
    schedulers = []
    stores = []
    for idx, name in enumerate(("A", "B", "C")):
        store = (StallingStore(clients[idx], keys, n=4) if name == "C" else CallbackStore(clients[idx], keys))
        stores.append(store)
        placer = CallbackPlacer(store, dialers[idx], ALL_DAY, free_agents=no_agents,
                                is_free=stalling_is_free if name == "C" else always_free,
                                lease_seconds=1.0, instance=name)
        schedulers.append(CallbackScheduler(store, placer, instance=name, poll_interval=0.02,
                                            lease_seconds=1.0, batch=10, concurrency=30))
    tasks = [asyncio.create_task(s.run()) for s in schedulers]
    try:
        stalling = stores[2]
        assert isinstance(stalling, StallingStore)
        await asyncio.wait_for(asyncio.gather(is_free_hung.wait(), stalling.hung.wait(),
                                              dialers[2].hung.wait()), 10)
        tasks[2].cancel()  # kill C mid-run: 12 jobs claimed and unfinished
        with pytest.raises(asyncio.CancelledError):
            await tasks[2]
        deadline = time.monotonic() + 30
        while True:
            counts = await setup.store.counts()
            if counts["due"] == 0 and counts["leased"] == 0:
                break
            assert time.monotonic() < deadline, f"jobs left: {counts}"
            await asyncio.sleep(0.05)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in clients:
            await c.aclose()

    dialed = Counter(str(call["channel_id"]) for d in dialers for call in d.calls)
    assert [ch for ch, k in dialed.items() if k > 1] == [], "an attempt was dialed twice"
    dialed_ids = Counter(ch.rsplit("-", 1)[0] for ch in dialed)
    assert [i for i, k in dialed_ids.items() if k > 1] == [], "a callback was dialed twice"
    assert set(dialed_ids) == set(ids), "a callback was never dialed (lost)"
    final = {cb.id: cb for cb in await setup.store.list(limit=n + 10)}
    states = Counter((cb.state, cb.final_reason) for cb in final.values())
    assert states == {(CallbackState.CONNECTED, ""): n - 4, (CallbackState.FAILED, "outcome_unknown"): 4}
    c_hung = {str(call["channel_id"]).rsplit("-", 1)[0] for call in dialers[2].calls[:4]}
    assert {i for i, cb in final.items() if cb.state is CallbackState.FAILED} == c_hung


# ------------------------------------------------------------ the scheduler's sleep (real time)

class CountingClaims(CallbackStore):
    """Counts the scheduler's round trips (claims and reaps) on the real store."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.claims = 0
        self.reaps = 0

    async def claim_batch(self, *args: object, **kw: object):  # type: ignore[no-untyped-def]
        self.claims += 1
        return await super().claim_batch(*args, **kw)  # type: ignore[arg-type]

    async def reap(self, *args: object, **kw: object) -> list[str]:
        self.reaps += 1
        return await super().reap(*args, **kw)  # type: ignore[arg-type]


def open_request(i: int, at: float) -> dict[str, object]:
    return {"customer_id": f"c{i}", "number": f"555{i:04d}", "at": at, "preferred_agent": "agent1001",
            "timezone": "UTC", "allowed_from": "00:00", "allowed_until": "24:00"}


def realtime_scheduler(store: CallbackStore, poll_interval: float) -> tuple[CallbackScheduler, RecordingDialer]:
    dialer = RecordingDialer()
    placer = CallbackPlacer(store, dialer, ALL_DAY, free_agents=Agents().free_agents, is_free=Agents().is_free,
                            lease_seconds=5.0, instance="rt")
    return CallbackScheduler(store, placer, instance="rt", poll_interval=poll_interval, lease_seconds=5.0), dialer


async def test_scheduler_sleeps_until_the_next_due_callback_not_the_poll(redis_client: aioredis.Redis,
                                                                         keys: Keys) -> None:
    store = CountingClaims(redis_client, keys)
    due = time.time() + 0.4
    cb = await CallbackService(store, ALL_DAY).request(open_request(1, due))
    scheduler, dialer = realtime_scheduler(store, poll_interval=60.0)
    task = asyncio.create_task(scheduler.run())
    try:
        await eventually(lambda: dialer.calls)
        placed_at = time.time()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert dialer.calls[0]["channel_id"] == f"{cb.id}-1"
    assert due <= placed_at < due + 2.0, "placed at its due time, not after the 60 s poll"
    assert store.claims <= 3  # at start, at the due time (and at most one more)


async def test_a_request_on_this_instance_wakes_the_sleeping_scheduler(redis_client: aioredis.Redis,
                                                                       keys: Keys) -> None:
    store = CountingClaims(redis_client, keys)
    scheduler, dialer = realtime_scheduler(store, poll_interval=60.0)
    service = CallbackService(store, ALL_DAY, on_due=scheduler.wake)
    task = asyncio.create_task(scheduler.run())
    try:
        await eventually(lambda: store.claims >= 1)  # first look done: nothing due, asleep for 60 s
        await asyncio.sleep(0.1)
        cb = await service.request(open_request(2, time.time()))
        await eventually(lambda: dialer.calls)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [c["channel_id"] for c in dialer.calls] == [f"{cb.id}-1"]


async def test_idle_scheduler_claims_once_per_poll_interval(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = CountingClaims(redis_client, keys)
    scheduler, _ = realtime_scheduler(store, poll_interval=0.25)
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(1.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 3 <= store.claims <= 6  # ~5 looks in 1.1 s (the old fixed poll: 0.2 s, plus a reap each second)
    assert store.reaps == 1  # once at start; no lease exists, so nothing to reap after


async def test_a_dead_instances_lease_is_reaped_when_it_expires(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = CountingClaims(redis_client, keys)
    cb = await CallbackService(store, ALL_DAY).request(open_request(3, time.time()))
    [dead] = await store.claim(time.time(), lease_seconds=0.5, limit=1, claimer="dead")  # then it dies
    scheduler, dialer = realtime_scheduler(store, poll_interval=60.0)
    task = asyncio.create_task(scheduler.run())
    try:
        await eventually(lambda: dialer.calls)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert dead.callback_id == cb.id
    assert [c["channel_id"] for c in dialer.calls] == [f"{cb.id}-1"]
    assert store.reaps == 2  # at start (lease still held) and when it expired


async def test_a_stream_of_due_callbacks_is_claimed_in_batches(redis_client: aioredis.Redis, keys: Keys) -> None:
    """Sleeping to the next due time must not become one claim per job when jobs fall due every few ms."""
    store = CountingClaims(redis_client, keys)
    service = CallbackService(store, ALL_DAY)
    start = time.time() + 0.3
    for i in range(40):
        await service.request(open_request(100 + i, start + i * 0.0125))  # 40 jobs due over 0.5 s
    scheduler, dialer = realtime_scheduler(store, poll_interval=60.0)
    scheduler.min_sleep = 0.1
    task = asyncio.create_task(scheduler.run())
    try:
        await eventually(lambda: len(dialer.calls) == 40)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len({c["channel_id"] for c in dialer.calls}) == 40
    assert store.claims <= 12  # ~0.8 s / 0.1 s; one claim per job would be 40+
