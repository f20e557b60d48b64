"""Contact history and cases against the real Redis, and ContactTracker fed with AMI events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from ivrserver.domain.contact_tracking import CallFacts
from ivrserver.domain.model import CaseStatus, Contact, ContactKind, Customer, Outcome
from ivrserver.services.contact_tracker import ContactTracker
from ivrserver.store import cases as case_store
from ivrserver.store import contacts
from ivrserver.store import customers as customer_store
from ivrserver.store.keys import Keys

NOW = float(int(time.time()))
DAY = 86400


def contact(cid: str, started: float, customer_id: str | None = "c1", **kw: object) -> Contact:
    base = dict(id=cid, kind=ContactKind.INBOUND, number="15550001", started_at=started, customer_id=customer_id,
                ended_at=started + 30, outcome=Outcome.ANSWERED, agents=("agent1003",), queue="vip",
                wait_seconds=4.5, ivr_path=("hotline", "hotline/1"), routing_reason="vip")
    base.update(kw)
    return Contact(**base)  # type: ignore[arg-type]


async def test_contact_round_trip_and_timeline_newest_first(redis_client: aioredis.Redis, keys: Keys) -> None:
    for i, age in enumerate([3 * DAY, 60, 2 * DAY]):
        await contacts.save_contact(redis_client, keys, contact(f"k{i}", NOW - age), now=NOW)
    timeline = await contacts.list_timeline(redis_client, keys, "c1")
    assert [c.id for c in timeline] == ["k1", "k2", "k0"]
    assert timeline[0] == contact("k1", NOW - 60)
    assert [c.id for c in await contacts.list_timeline(redis_client, keys, "c1", limit=2)] == ["k1", "k2"]
    assert await contacts.get_contact(redis_client, keys, "nope") is None


async def test_retention_trims_timeline_and_expires_records(redis_client: aioredis.Redis, keys: Keys) -> None:
    await contacts.save_contact(redis_client, keys, contact("old", NOW - 40 * DAY), now=NOW, retention_days=30)
    assert not await redis_client.exists(keys.contact("old"))      # EXPIREAT in the past: gone at once
    await contacts.save_contact(redis_client, keys, contact("new", NOW - DAY), now=NOW, retention_days=30)
    assert await redis_client.zrange(keys.timeline("c1"), 0, -1) == ["new"]   # "old" trimmed on write
    ttl = await redis_client.ttl(keys.contact("new"))
    assert 28 * DAY < ttl <= 29 * DAY + 1
    assert 29 * DAY < await redis_client.ttl(keys.timeline("c1")) <= 30 * DAY
    # A shorter retention applied later hides and prunes older entries.
    assert await contacts.list_timeline(redis_client, keys, "c1", now=NOW + 10, retention_days=1) == []
    assert len(await contacts.list_timeline(redis_client, keys, "c1", now=NOW - 10, retention_days=1)) == 1
    assert await contacts.prune_timeline(redis_client, keys, "c1", now=NOW + DAY, retention_days=1) == 1
    with pytest.raises(ValueError):
        await contacts.save_contact(redis_client, keys, contact("x", NOW), now=NOW, retention_days=0)


async def test_contact_moving_to_another_customer_leaves_old_timeline(redis_client: aioredis.Redis,
                                                                      keys: Keys) -> None:
    await contacts.save_contact(redis_client, keys, contact("k", NOW, customer_id="c1"), now=NOW)
    await contacts.save_contact(redis_client, keys, contact("k", NOW, customer_id="c2"), now=NOW)
    assert await contacts.list_timeline(redis_client, keys, "c1") == []
    assert [c.id for c in await contacts.list_timeline(redis_client, keys, "c2")] == ["k"]


async def test_contact_without_customer_has_no_timeline(redis_client: aioredis.Redis, keys: Keys) -> None:
    await contacts.save_contact(redis_client, keys, contact("k", NOW, customer_id=None), now=NOW)
    assert await contacts.get_contact(redis_client, keys, "k") is not None
    assert await redis_client.keys(f"{keys.prefix}:timeline:*") == []


async def test_update_contact_notes(redis_client: aioredis.Redis, keys: Keys) -> None:
    await contacts.save_contact(redis_client, keys, contact("k", NOW), now=NOW)
    updated = await contacts.update_contact_notes(redis_client, keys, "k", {"disposition": "resolved",
                                                                          "notes": "refund granted"}, now=NOW)
    assert updated is not None and (updated.disposition, updated.notes) == ("resolved", "refund granted")
    assert await contacts.get_contact(redis_client, keys, "k") == updated
    assert await contacts.update_contact_notes(redis_client, keys, "none", {"notes": "x"}, now=NOW) is None


async def test_unreadable_contact_skipped(redis_client: aioredis.Redis, keys: Keys) -> None:
    await redis_client.set(keys.contact("bad"), '{"id": "bad"}')
    await redis_client.zadd(keys.timeline("c1"), {"bad": NOW})
    await contacts.save_contact(redis_client, keys, contact("good", NOW - 10), now=NOW)
    assert [c.id for c in await contacts.list_timeline(redis_client, keys, "c1")] == ["good"]


async def test_linkedid_mapping(redis_client: aioredis.Redis, keys: Keys) -> None:
    await contacts.save_contact(redis_client, keys, contact("k1", NOW), now=NOW, linkedid="1718000000.10")
    assert await contacts.contact_id_for_call(redis_client, keys, "1718000000.10") == "k1"
    assert contacts.LINKEDID_TTL - 60 < await redis_client.ttl(keys.call_by_linkedid("1718000000.10")) \
        <= contacts.LINKEDID_TTL
    assert await contacts.contact_id_for_call(redis_client, keys, "nope") is None


async def test_case_lifecycle(redis_client: aioredis.Redis, keys: Keys) -> None:
    first = await case_store.open_case(redis_client, keys, customer_id="c1", summary="SMS refund", now=NOW,
                                    owner_agent="agent1003", severity=2, still_needed="date of charge",
                                    next_step="billing confirms")
    second = await case_store.open_case(redis_client, keys, customer_id="c1", summary="Slow line", now=NOW + 1)
    assert (first.id, second.id) == ("1", "2")
    assert first.status is CaseStatus.OPEN and first.owner_agent == "agent1003"
    assert await case_store.get_case(redis_client, keys, "1") == first
    assert [c.id for c in await case_store.list_open_cases(redis_client, keys, "c1")] == ["2", "1"]
    updated = await case_store.update_case(redis_client, keys, "1", {"next_step": "call back", "owner_agent": None})
    assert (updated.next_step, updated.owner_agent, updated.summary) == ("call back", None, "SMS refund")
    closed = await case_store.update_case(redis_client, keys, "1", {"status": CaseStatus.CLOSED})
    assert closed.status is CaseStatus.CLOSED
    assert [c.id for c in await case_store.list_open_cases(redis_client, keys, "c1")] == ["2"]
    assert [c.id for c in await case_store.list_cases(redis_client, keys, "c1")] == ["2", "1"]
    reopened = await case_store.update_case(redis_client, keys, "1", {"status": CaseStatus.OPEN})
    assert reopened.status is CaseStatus.OPEN
    assert [c.id for c in await case_store.list_open_cases(redis_client, keys, "c1")] == ["2", "1"]
    with pytest.raises(case_store.CaseNotFound):
        await case_store.update_case(redis_client, keys, "99", {"summary": "x"})
    with pytest.raises(ValueError):
        await case_store.update_case(redis_client, keys, "1", {"customer_id": "c2"})


async def test_concurrent_case_updates_do_not_lose_fields(redis_client: aioredis.Redis, keys: Keys) -> None:
    case = await case_store.open_case(redis_client, keys, customer_id="c1", summary="s", now=NOW)
    await asyncio.gather(
        case_store.update_case(redis_client, keys, case.id, {"next_step": "n"}),
        case_store.update_case(redis_client, keys, case.id, {"still_needed": "w"}),
        case_store.update_case(redis_client, keys, case.id, {"severity": 1}),
    )
    final = await case_store.get_case(redis_client, keys, case.id)
    assert final is not None and (final.next_step, final.still_needed, final.severity) == ("n", "w", 1)


# --- ContactTracker against Redis ----------------------------------------------------------------

CALLER = "1718000000.10"


def ami(event: str, uid: str = CALLER, **extra: str) -> dict[str, str]:
    return {"Event": event, "Channel": "PJSIP/callers-00000001", "CallerIDNum": "15550001", "Uniqueid": uid,
            "Linkedid": CALLER, **extra}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tracker(redis_client: aioredis.Redis, keys: Keys) -> tuple[ContactTracker, Clock]:
    clock = Clock()
    ids = iter(f"contact-{i}" for i in range(100))
    return ContactTracker(redis_client, keys, clock=clock, new_id=lambda: next(ids),
                          agents={"PJSIP/agent1003": "agent1003"}), clock


async def test_tracker_records_an_answered_call(redis_client: aioredis.Redis, keys: Keys,
                                                tracker: tuple[ContactTracker, Clock]) -> None:
    t, clock = tracker
    await t.handle_event(ami("Newchannel"))
    await t.handle_event(ami("VarSet", Variable="X"))          # untracked: ignored
    assert await redis_client.keys("*") == []                  # not worth a record yet
    clock.now += 1
    await t.report(CALLER, CallFacts(customer_id="c1", ivr_step="hotline", routing_reason="repeat caller"))
    assert await contacts.contact_id_for_call(redis_client, keys, CALLER) == "contact-0"
    in_progress = await contacts.get_contact(redis_client, keys, "contact-0")
    assert in_progress is not None and in_progress.outcome is Outcome.IN_PROGRESS
    assert in_progress.customer_id == "c1" and in_progress.number == "15550001"
    clock.now += 2
    await t.handle_event(ami("DialBegin", DestChannel="PJSIP/agent1003-00000002", DestUniqueid="2.2"))
    clock.now += 5
    await t.handle_event(ami("DialEnd", DestChannel="PJSIP/agent1003-00000002", DialStatus="ANSWER"))
    clock.now += 60
    await t.handle_event(ami("Hangup", uid="2.2"))
    await t.handle_event(ami("Hangup"))
    final = await contacts.get_contact(redis_client, keys, "contact-0")
    assert final is not None
    assert (final.outcome, final.agents, final.wait_seconds, final.routing_reason) == (
        Outcome.ANSWERED, ("agent1003",), 5.0, "repeat caller")
    assert final.started_at == NOW and final.ended_at == NOW + 68
    assert [c.id for c in await contacts.list_timeline(redis_client, keys, "c1")] == ["contact-0"]


async def test_tracker_attaches_customer_by_number_at_the_end(redis_client: aioredis.Redis, keys: Keys,
                                                              tracker: tuple[ContactTracker, Clock]) -> None:
    t, clock = tracker
    await customer_store.save_customer(redis_client, keys, Customer(id="c7", name="N", phones=("15550001",)))
    await t.handle_event(ami("Newchannel"))
    await t.handle_event(ami("QueueCallerJoin", Queue="general"))
    clock.now += 40
    await t.handle_event(ami("QueueCallerAbandon", Queue="general", HoldTime="40"))
    await t.handle_event(ami("Hangup"))
    timeline = await contacts.list_timeline(redis_client, keys, "c7")
    assert [(c.outcome, c.queue, c.wait_seconds) for c in timeline] == [(Outcome.ABANDONED, "general", 40.0)]


async def test_tracker_late_self_served_report_rewrites_the_record(redis_client: aioredis.Redis, keys: Keys,
                                                                   tracker: tuple[ContactTracker, Clock]) -> None:
    t, _ = tracker
    await t.handle_event(ami("Newchannel"))
    await t.report(CALLER, CallFacts(ivr_step="hotline/balance"))
    await t.handle_event(ami("Hangup"))
    first = await contacts.get_contact(redis_client, keys, "contact-0")
    assert first is not None and first.outcome is Outcome.ABANDONED
    await t.report(CALLER, CallFacts(self_served=True))
    second = await contacts.get_contact(redis_client, keys, "contact-0")
    assert second is not None and second.outcome is Outcome.SELF_SERVED


async def test_tracker_on_event_folds_at_once_and_the_writer_records_the_call(
        redis_client: aioredis.Redis, keys: Keys, tracker: tuple[ContactTracker, Clock]) -> None:
    """The fan-out's path: synchronous, no Redis on the event path; malformed events are ignored."""
    t, _ = tracker
    for item in [object(), {"Event": "Hangup"}, ami("Newchannel"), ami("QueueCallerJoin", Queue="vip"),
                 ami("Hangup")]:
        t.on_event(item)
    for _ in range(100):
        found = await contacts.get_contact(redis_client, keys, "contact-0")
        if found is not None and found.outcome is Outcome.ABANDONED:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the writer never recorded the call")
    assert found.queue == "vip"
    await t.close()


async def test_tracker_run_sweeps_calls_whose_hangup_was_missed(redis_client: aioredis.Redis, keys: Keys,
                                                                tracker: tuple[ContactTracker, Clock]) -> None:
    t, clock = tracker
    t.sweep_interval = 0.02
    await t.handle_event(ami("Newchannel"))
    await t.report(CALLER, CallFacts(kind=ContactKind.INBOUND, ivr_step="hotline"))
    clock.now += t.max_call_age + 1
    task = asyncio.create_task(t.run())
    try:
        for _ in range(100):
            found = await contacts.get_contact(redis_client, keys, "contact-0")
            if found is not None and found.ended_at is not None:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("run() never swept the call")
        assert found.outcome is Outcome.ABANDONED
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_tracker_sweep_records_calls_whose_hangup_was_missed(redis_client: aioredis.Redis, keys: Keys,
                                                                   tracker: tuple[ContactTracker, Clock]) -> None:
    t, clock = tracker
    await t.handle_event(ami("Newchannel"))
    await t.report(CALLER, CallFacts(kind=ContactKind.INBOUND, ivr_step="hotline"))
    clock.now += t.max_call_age + 1
    await t.sweep()
    found = await contacts.get_contact(redis_client, keys, "contact-0")
    assert found is not None and found.outcome is Outcome.ABANDONED and found.ended_at == NOW


async def test_tracker_report_survives_a_dead_store(keys: Keys) -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        t = ContactTracker(dead, keys)
        await t.handle_event(ami("Newchannel"))                       # not worth a record: no I/O
        await t.report(CALLER, CallFacts(ivr_step="hotline"))          # write fails, logged, not raised
        with pytest.raises(Exception):                                 # noqa: B017 - the event path raises
            await t.handle_event(ami("QueueCallerJoin", Queue="vip"))  # (run() logs and continues)
    finally:
        await dead.aclose()


# --- deferred writes (the server's mode: history_write_delay > 0) ---------------------------------

class CountingRedis:
    """Counts the contact writes reaching the real Redis (EVALSHA of the save script)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.writes = 0
        original = client.evalsha

        async def evalsha(*args: object, **kw: object) -> object:
            self.writes += 1
            return await original(*args, **kw)  # type: ignore[arg-type]

        client.evalsha = evalsha  # type: ignore[method-assign]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def stored(redis_client: aioredis.Redis, keys: Keys, contact_id: str) -> bool:
    return await contacts.get_contact(redis_client, keys, contact_id) is not None


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async def check() -> bool:
        return condition()
    await eventually(check, timeout)


async def test_deferred_tracker_creates_at_once_then_coalesces_a_calls_changes(
        redis_client: aioredis.Redis, keys: Keys) -> None:
    counter = CountingRedis(redis_client)
    t = ContactTracker(redis_client, keys, write_delay=0.3, agents={"PJSIP/agent1003": "agent1003"})
    try:
        await t.handle_event(ami("Newchannel"))
        await t.report(CALLER, CallFacts(customer_id="c1", routing_reason="vip"))   # worth a record
        contact_id = t.contact_id(CALLER)
        assert contact_id is not None
        # created by the writer task at once (an agent may write notes on it right away) ...
        await wait_for(lambda: counter.writes == 1)
        created = await contacts.get_contact(redis_client, keys, contact_id)
        assert created is not None and created.outcome is Outcome.IN_PROGRESS
        assert await contacts.contact_id_for_call(redis_client, keys, CALLER) == contact_id
        # ... then a burst of changes is written once, with the newest state, after the delay
        await t.handle_event(ami("DialBegin", DestChannel="PJSIP/agent1003-00000002", DestUniqueid="2.2"))
        await t.handle_event(ami("DialEnd", DestChannel="PJSIP/agent1003-00000002", DialStatus="ANSWER"))
        await t.handle_event(ami("Hangup", uid="2.2"))
        await t.handle_event(ami("Hangup"))
        await asyncio.sleep(0.1)
        assert counter.writes == 1                                    # not yet: collected
        await wait_for(lambda: counter.writes == 2)
        final = await contacts.get_contact(redis_client, keys, contact_id)
        assert final is not None and (final.outcome, final.agents) == (Outcome.ANSWERED, ("agent1003",))
        await asyncio.sleep(0.4)
        assert counter.writes == 2                                    # nothing written twice
    finally:
        await t.close()


async def known_caller_stored(t: ContactTracker, redis_client: aioredis.Redis, keys: Keys) -> str:
    """CALLER rings in as customer c1 and the deferred tracker's first write of the contact lands: its id."""
    await t.handle_event(ami("Newchannel"))
    await t.report(CALLER, CallFacts(kind=ContactKind.INBOUND, customer_id="c1"))
    contact_id = t.contact_id(CALLER)
    assert contact_id is not None
    await eventually(lambda: stored(redis_client, keys, contact_id))
    return contact_id


async def test_deferred_tracker_keeps_notes_written_meanwhile(redis_client: aioredis.Redis, keys: Keys) -> None:
    t = ContactTracker(redis_client, keys, write_delay=0.2)
    try:
        contact_id = await known_caller_stored(t, redis_client, keys)
        await contacts.update_contact_notes(redis_client, keys, contact_id, {"notes": "refund by Friday"}, now=NOW)
        await t.report(CALLER, CallFacts(self_served=True, routing_reason="menu"))
        await t.close()                                               # shutdown: pending written now
        final = await contacts.get_contact(redis_client, keys, contact_id)
        assert final is not None and final.routing_reason == "menu" and final.notes == "refund by Friday"
    finally:
        await t.close()


async def test_deferred_tracker_retries_a_write_the_store_refused(redis_client: aioredis.Redis, keys: Keys) -> None:
    t = ContactTracker(redis_client, keys, write_delay=0.05, retry_delay=0.05)
    original = redis_client.evalsha
    failures = {"left": 2}

    async def flaky(*args: object, **kw: object) -> object:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("Redis restarting")
        return await original(*args, **kw)  # type: ignore[arg-type]

    redis_client.evalsha = flaky  # type: ignore[method-assign]
    try:
        await known_caller_stored(t, redis_client, keys)
        assert failures["left"] == 0                                  # refused twice, then written
    finally:
        await t.close()


async def test_the_instance_with_the_facts_claims_the_call_in_its_first_write(redis_client: aioredis.Redis,
                                                                             keys: Keys) -> None:
    """Two instances see the same AMI events; the one the FastAGI side reported to owns the record."""
    ivr = ContactTracker(redis_client, keys, instance="ivr-a")
    other = ContactTracker(redis_client, keys, instance="ivr-b")
    for t in (ivr, other):
        await t.handle_event(ami("Newchannel"))
    await ivr.report(CALLER, CallFacts(kind=ContactKind.INBOUND, customer_id="c1", routing_reason="from the IVR"))
    assert await redis_client.get(keys.call_owner(CALLER)) == "ivr-a"
    for t in (other, ivr):  # the other instance sees the end first: it must not write its thinner record
        await t.handle_event(ami("QueueCallerJoin", Queue="vip"))
        await t.handle_event(ami("Hangup"))
    contact_id = ivr.contact_id(CALLER)
    assert contact_id is not None and contact_id == other.contact_id(CALLER)
    final = await contacts.get_contact(redis_client, keys, contact_id)
    assert final is not None and final.routing_reason == "from the IVR" and final.queue == "vip"
    assert await redis_client.get(keys.call_owner(CALLER)) == "ivr-a"


async def test_deferred_tracker_writes_a_call_that_stayed_in_the_menu_once(redis_client: aioredis.Redis,
                                                                          keys: Keys) -> None:
    """Self-service: the record waits while the caller is in the menu; hang-up (seen by AMI and by the
    FastAGI side a moment apart) creates it complete, in one write."""
    counter = CountingRedis(redis_client)
    t = ContactTracker(redis_client, keys, write_delay=0.3)
    try:
        await t.handle_event(ami("Newchannel"))
        await t.report(CALLER, CallFacts(kind=ContactKind.INBOUND, customer_id="c1"), in_ivr=True)
        await asyncio.sleep(0.5)
        assert counter.writes == 0                                   # in the menu: nobody needs it yet
        await t.handle_event(ami("Hangup"))
        await t.report(CALLER, CallFacts(routing_reason="menu; ivr exit self_served", self_served=True))
        await wait_for(lambda: counter.writes == 1)
        contact_id = t.contact_id(CALLER)
        assert contact_id is not None
        final = await contacts.get_contact(redis_client, keys, contact_id)
        assert final is not None and final.outcome is Outcome.SELF_SERVED
        await asyncio.sleep(0.5)
        assert counter.writes == 1
    finally:
        await t.close()


async def test_deferred_tracker_skips_a_record_it_cannot_build_and_keeps_writing(
        redis_client: aioredis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug on one record (not an outage) is logged once, not retried forever, and the writer
    goes on with the other calls."""
    from ivrserver.services import contact_tracker as tracker_module

    calls = {"n": 0}
    real = tracker_module.contacts.save_contact

    async def first_one_breaks(*args: object, **kw: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("cannot encode")
        await real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(tracker_module.contacts, "save_contact", first_one_breaks)
    t = ContactTracker(redis_client, keys, write_delay=0.05, retry_delay=0.05)
    try:
        await t.handle_event(ami("Newchannel"))
        await t.report(CALLER, CallFacts(kind=ContactKind.INBOUND, customer_id="c1"))
        await t.handle_event(ami("Newchannel", uid="1718000000.20") | {"Linkedid": "1718000000.20"})
        await t.report("1718000000.20", CallFacts(kind=ContactKind.INBOUND, customer_id="c2"))
        second = t.contact_id("1718000000.20")
        assert second is not None
        await eventually(lambda: stored(redis_client, keys, second))
        await asyncio.sleep(0.3)
        assert calls["n"] == 2                                        # the broken one was not retried
    finally:
        await t.close()
