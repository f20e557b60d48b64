"""Taking over an attempt whose holder died after its placed marker, on a real Redis.

The dead holder is played by hand (claim, "dialing" record, marker — what `start_dial` writes);
the observers by `CallbackObserver` fed typed AMI events (what the fan-out hands it) and by the
store's link records. The dialer is the recording double of tests/test_callback_service.py.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from ivrserver.domain import callbacks as cbm
from ivrserver.domain.callbacks import AttemptOutcome, Callback, CallbackState
from ivrserver.pbx import ami_events as ev
from ivrserver.pbx.callback_dialer import CallbackObserver, callback_channel, observation_of
from ivrserver.services.callbacks import DialOutcome, DialResult, PlaceResult
from ivrserver.store.keys import Keys
from tests.test_callback_service import T0, Env, RecordingDialer, request

LEASE = 5.0


async def dead_holder_marked(env: Env, cb: Callback, *, instance: str = "dead") -> str:
    """An instance claims the job, saves attempt 1 as dialing, takes the marker at T0 and dies."""
    [claim] = await env.store.claim(env.clock(), lease_seconds=LEASE, limit=1, claimer=instance)
    assert await env.store.save_leased(claim, cbm.start_attempt(cb, env.clock(), "agent1001"))
    holder = f"{instance} {claim.token} {env.clock():.3f}"
    assert await env.store.mark_placed(cb.id, 1, holder)
    return holder


async def take_over(env: Env) -> list[PlaceResult]:
    env.clock.t = T0 + LEASE + 1
    assert len(await env.store.reap(env.clock())) == 1
    return await env.tick()


async def test_never_dialed_with_an_observer_up_throughout_is_redialed_once(redis_client: aioredis.Redis,
                                                                            keys: Keys) -> None:
    env = Env(redis_client, keys)
    cb = await env.service.request(request(at=T0))
    dead = await dead_holder_marked(env, cb)
    await env.store.observer_up("b", T0 - 60, T0 + LEASE)  # watched from before the marker until now

    assert await take_over(env) == [PlaceResult.REDIALED]
    assert [c["channel_id"] for c in env.dialer.calls] == [f"{cb.id}-1"], "the same attempt, same ChannelId"
    after = await env.service.get(cb.id)
    assert (after.state, after.attempts) == (CallbackState.CONNECTED, 1)
    marker = await env.store.placed_by(cb.id, 1)
    assert marker is not None and marker != dead and marker.startswith("t1 "), "the marker passed to the re-dialer"
    # the dead holder, were it only stalled, could not take it back or dial behind it
    env.clock.t += 3600
    assert await env.tick() == [] and len(env.dialer.calls) == 1


async def test_observed_outcome_is_written_without_dialing(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys, policy=cbm.CallbackPolicy(calling_from="00:00", calling_until="24:00"))
    cb = await env.service.request(request(at=T0, mode="customer_first", preferred_agent=None))
    await dead_holder_marked(env, cb)
    await env.store.observer_up("b", T0 - 60, T0 + LEASE)
    assert await env.store.observe([(cb.id, 1, "up"), (cb.id, 1, "originate:no_answer")]) == 2

    assert await take_over(env) == [PlaceResult.RECOVERED_OBSERVED]
    assert env.dialer.calls == []
    after = await env.service.get(cb.id)
    assert after.state is CallbackState.RETRY_WAIT and after.history[0].outcome is AttemptOutcome.NO_ANSWER
    assert "observed on AMI" in after.history[0].detail
    assert env.recorded[0][1].outcome is AttemptOutcome.NO_ANSWER  # the contact history has it too


async def test_observed_agent_first_result_finishes_the_call(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys)
    cb = await env.service.request(request(at=T0))
    await dead_holder_marked(env, cb)
    await env.store.observe([(cb.id, 1, "up"), (cb.id, 1, "originate:answered"), (cb.id, 1, "result:answered")])
    assert await take_over(env) == [PlaceResult.RECOVERED_OBSERVED] and env.dialer.calls == []
    assert (await env.service.get(cb.id)).state is CallbackState.DONE


async def test_seen_without_outcome_is_unknown(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys)
    cb = await env.service.request(request(at=T0))
    await dead_holder_marked(env, cb)
    await env.store.observer_up("b", T0 - 60, T0 + LEASE)
    await env.store.observe([(cb.id, 1, "up")])
    assert await take_over(env) == [PlaceResult.RECOVERED_UNKNOWN] and env.dialer.calls == []
    after = await env.service.get(cb.id)
    assert (after.state, after.final_reason) == (CallbackState.FAILED, "outcome_unknown")


async def test_observer_link_down_in_between_is_unknown(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys)
    cb = await env.service.request(request(at=T0))
    await dead_holder_marked(env, cb)
    await env.store.observer_up("b", T0 + 2, T0 + LEASE)  # reconnected after the marker: may have missed it
    await env.store.observer_up("c", T0 - 60, T0 - 1)  # up before, but silent since (dead, or behind)
    assert await take_over(env) == [PlaceResult.RECOVERED_UNKNOWN] and env.dialer.calls == []
    after = await env.service.get(cb.id)
    assert (after.state, after.final_reason) == (CallbackState.FAILED, "outcome_unknown")
    assert "dead " in after.history[0].detail


async def test_a_refused_redial_counts_as_the_call_having_happened(redis_client: aioredis.Redis,
                                                                    keys: Keys) -> None:
    refused = DialResult(DialOutcome.FAILED, reason="originate reason 0", ambiguous=True)
    env = Env(redis_client, keys, dialer=RecordingDialer([refused]))
    cb = await env.service.request(request(at=T0))
    await dead_holder_marked(env, cb)
    await env.store.observer_up("b", T0 - 60, T0 + LEASE)
    assert await take_over(env) == [PlaceResult.REDIALED] and len(env.dialer.calls) == 1
    after = await env.service.get(cb.id)
    assert (after.state, after.final_reason) == (CallbackState.FAILED, "outcome_unknown")


async def test_observations_are_written_only_for_marked_attempts(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys)
    cb = await env.service.request(request(at=T0))
    await dead_holder_marked(env, cb)
    assert await env.store.observe([(cb.id, 1, "up"), (cb.id, 2, "up"), ("someone-else", 1, "up")]) == 1
    assert await env.store.observation(cb.id, 1) == "up"
    assert await env.store.observation(cb.id, 2) is None
    assert 0 < await redis_client.ttl(keys.callback_seen(cb.id, 1)) <= env.store.seen_ttl_seconds


def newchannel(uniqueid: str) -> ev.Newchannel:
    return ev.Newchannel(channel="PJSIP/customers-00000001", uniqueid=uniqueid, linkedid=uniqueid,
                         caller_id_num="", caller_id_name="", context_id="")


def test_what_each_ami_event_says() -> None:
    assert callback_channel("cb0123abc-2") == ("cb0123abc", 2)
    assert callback_channel("case-result:K-1:7-1") == ("case-result:K-1:7", 1)
    for other in ("1717405200.12", "cb1-1;2", "cb1-0", "cb1-", "-1", "cb1-12345", "x" * 65 + "-1", None, 5):
        assert callback_channel(other) is None, other
    assert observation_of(newchannel("cb1-1")) == ("cb1", 1, "up")
    assert observation_of(newchannel("1717405200.12")) is None  # an inbound caller
    assert observation_of(ev.OriginateResponse("x", "Success", 4, "PJSIP/c-1", "cb1-3")) == (
        "cb1", 3, "originate:answered")
    assert observation_of(ev.OriginateResponse("x", "Failure", 5, "PJSIP/c-1", "cb1-3")) == ("cb1", 3, "originate:busy")
    assert observation_of(ev.OriginateResponse("x", "Failure", 0, "", "<unknown>")) is None
    assert observation_of(ev.UserEvent("CallbackResult", {"CB_ID": "cb1", "Status": "NOANSWER",
                                                          "Uniqueid": "cb1-2"})) == ("cb1", 2, "result:no_answer")
    assert observation_of(ev.UserEvent("NotifyResult", {"Uniqueid": "cb1-2"})) is None


class Link:
    """The AMI link as the observer reads it: (logged in, epoch)."""

    def __init__(self) -> None:
        self.up, self.epoch = True, 1

    def __call__(self) -> tuple[bool, int]:
        return self.up, self.epoch


async def test_observer_records_channels_and_its_link(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys)
    cb = await env.service.request(request(at=T0))
    await dead_holder_marked(env, cb, instance="a")
    link, clock = Link(), [T0]
    observer = CallbackObserver(env.store, "b", link, interval=0.01, clock=lambda: clock[0])

    await observer.beat()
    assert [(o.instance, o.since, o.through) for o in await env.store.observers(T0)] == [("b", T0, T0)]
    clock[0] = T0 + 3
    await observer.beat()
    assert [(o.since, o.through) for o in await env.store.observers(T0)] == [(T0, T0 + 3)]

    task = asyncio.create_task(observer.run())
    try:
        observer.on_event(newchannel(f"{cb.id}-1"))
        observer.on_event(newchannel("1717405200.12"))
        observer.on_event(ev.OriginateResponse("x", "Success", 4, "PJSIP/agent1001-1", f"{cb.id}-1"))
        for _ in range(500):
            if observer.written == 2:
                break
            await asyncio.sleep(0.01)
        assert await env.store.observation(cb.id, 1) == "originate:answered"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    link.epoch = 2  # reconnected: nothing before now is vouched for
    clock[0] = T0 + 4
    await observer.beat()
    assert [(o.since, o.through) for o in await env.store.observers(T0)] == [(T0 + 4, T0 + 4)]
    link.up = False
    await observer.beat()
    assert await env.store.observers(T0) == []


async def test_a_lost_event_restarts_the_observers_watch(redis_client: aioredis.Redis, keys: Keys) -> None:
    env = Env(redis_client, keys)
    clock = [T0]
    observer = CallbackObserver(env.store, "b", Link(), queue_size=1, clock=lambda: clock[0])
    await observer.beat()
    observer.on_event(newchannel("cb1-1"))
    observer.on_event(newchannel("cb2-1"))  # the queue is full: this one is lost
    assert observer.dropped == 1
    clock[0] = T0 + 2
    await observer.beat()  # a gap: since restarts; the queue is not drained, so nothing vouched yet
    assert await env.store.observers(T0) == []
    backlog = [3]
    behind = CallbackObserver(env.store, "c", Link(), backlog=lambda: backlog[0], clock=lambda: clock[0])
    await behind.beat()  # the AMI client's queue is not empty: events received are not all written
    assert [o.instance for o in await env.store.observers(T0)] == []
    backlog[0] = 0
    await behind.beat()
    assert [o.instance for o in await env.store.observers(T0)] == ["c"]


async def test_observer_takeover_end_to_end(redis_client: aioredis.Redis, keys: Keys) -> None:
    """Observer B watches while A marks two attempts and dies: the one it saw dialed is resolved
    from what it saw, the one it did not see is re-dialed."""
    env = Env(redis_client, keys, policy=cbm.CallbackPolicy(calling_from="00:00", calling_until="24:00"))
    seen = await env.service.request(request(at=T0, customer_id="c1"))
    unseen = await env.service.request(request(at=T0, customer_id="c2"))
    link, clock = Link(), [T0 - 30]
    observer = CallbackObserver(env.store, "b", link, clock=lambda: clock[0])
    await observer.beat()
    claims = {c.callback_id: c for c in await env.store.claim(T0, lease_seconds=LEASE, limit=2, claimer="a")}
    for cb in (seen, unseen):
        claim = claims[cb.id]
        assert await env.store.save_leased(claim, cbm.start_attempt(cb, T0, "agent1001"))
        assert await env.store.mark_placed(cb.id, 1, f"a {claim.token} {T0:.3f}")
    observer.on_event(newchannel(f"{seen.id}-1"))
    observer.on_event(ev.OriginateResponse("x", "Failure", 3, "PJSIP/agent1001-1", f"{seen.id}-1"))
    await observer._write([observer._queue.get_nowait(), observer._queue.get_nowait()])
    clock[0] = T0 + LEASE + 1
    await observer.beat()

    env.clock.t = T0 + LEASE + 1
    assert sorted(await env.store.reap(env.clock())) == sorted([seen.id, unseen.id])
    results = await env.tick()
    assert sorted(results) == sorted([PlaceResult.RECOVERED_OBSERVED, PlaceResult.REDIALED])
    assert [c["channel_id"] for c in env.dialer.calls] == [f"{unseen.id}-1"]
    first = await env.service.get(seen.id)
    assert first.history[0].outcome is AttemptOutcome.AGENT_UNAVAILABLE and first.state is CallbackState.RETRY_WAIT
