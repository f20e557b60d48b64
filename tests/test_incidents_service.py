"""Incidents on a real Redis: complaints counted by the end-of-call script, detection by two
instances at once (one incident), the work order through the real webhook deliverer to a real
receiver (once), the caller snapshot carrying active incidents in its one round trip, offers only
for matching callers, subscriptions, the lifecycle with compare-and-set, cool-down, figures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivrserver.domain import incidents as inc
from ivrserver.domain import menu_engine as e
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import CallerSnapshot, Contact, ContactKind, Customer, Outcome
from ivrserver.domain.notices import notice_id
from ivrserver.services.incidents import IncidentConflict, IncidentError, IncidentService
from ivrserver.store import contacts as contact_store
from ivrserver.store import customers
from ivrserver.store.callpath import RedisPathRecorder
from ivrserver.store.incidents import IncidentStore
from ivrserver.store.keys import Keys
from tests.test_webhooks_delivery import Receiver, endpoint, webhooks

POLICY = inc.Policy(window_seconds=60, bucket_seconds=10, min_count=5, ratio=3.0, baseline_hours=1,
                    cooldown_seconds=60,
                    services={"mobile_data": inc.ServiceInfo({"en": "mobile data", "zh": "移动数据"}),
                              "broadband": inc.ServiceInfo({"en": "broadband"})},
                    areas={"chaoyang-liaoning": {"en": "Chaoyang", "zh": "朝阳"}})
CHAOYANG = "+8613904210{:03d}"  # mobile numbers of Chaoyang, Liaoning
BEIJING = "+8613800138{:03d}"


def service(redis: aioredis.Redis, keys: Keys, instance: str = "i1", **kw: object) -> IncidentService:
    return IncidentService(IncidentStore(redis, keys), POLICY, instance=instance, **kw)  # type: ignore[arg-type]


async def complain(svc: IncidentService, recorder: RedisPathRecorder, number: str, now: float,
                   service_name: str = "mobile_data", customer: Customer | None = None) -> None:
    """One caller's path through 'report a fault → <service>', written the way the hotline does."""
    path = (e.PathEvent(e.PathKind.ENTER, "report_fault", now),
            e.PathEvent(e.PathKind.REPORTED, "report_fault", now, detail=service_name))
    snapshot = CallerSnapshot(number=number, customer=customer)
    counters = svc.complaint_ops(now, snapshot, path, customer.id if customer else None)
    await recorder.record(CallPath(f"call-{number}-{now}", "hotline", "v1", now, path), counters=counters)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def test_a_burst_from_one_city_opens_one_incident_once_across_instances(
        redis_client: aioredis.Redis, keys: Keys, receiver: Receiver) -> None:
    hooks = webhooks(redis_client, keys, [endpoint(receiver, events=("incident.*",))])
    a = service(redis_client, keys, "i1", webhooks=hooks)
    b = service(redis_client, keys, "i2", webhooks=hooks)
    recorder = RedisPathRecorder(redis_client, keys, 3600)
    now = time.time()
    for i in range(4):
        await complain(a, recorder, CHAOYANG.format(i), now)
        await complain(a, recorder, BEIJING.format(i), now)
    assert await a.detect_once(now) == []  # 4 < min_count
    await complain(a, recorder, CHAOYANG.format(4), now)
    await complain(a, recorder, CHAOYANG.format(4), now, service_name="broadband")
    opened_a, opened_b = await asyncio.gather(a.detect_once(now + 0.1), b.detect_once(now + 0.1))
    opened = opened_a + opened_b
    assert [(i.service, i.area) for i in opened] == [("mobile_data", "chaoyang-liaoning")]
    incident = opened[0]
    assert incident.counts["window"] == 5 and incident.area_names == {"en": "Chaoyang", "zh": "朝阳"}
    assert await a.detect_once(now + 1) == []  # active: not again
    deliverer = asyncio.create_task(hooks.run())
    try:
        for _ in range(100):
            if receiver.accepted:
                break
            await asyncio.sleep(0.05)
    finally:
        deliverer.cancel()
        await asyncio.gather(deliverer, return_exceptions=True)
    assert len(receiver.hits) == 1
    order = receiver.hits[0]["body"]
    assert order["event"] == "incident.opened" and order["key"] == f"incident:{incident.id}:opened"
    data = order["data"]
    assert (data["service"], data["area"], data["counts"]["window"]) == ("mobile_data", "chaoyang-liaoning", 5)
    assert data["first_report_at"] is not None and data["latest_report_at"] is not None
    assert sorted(data["sample_callers"]) == sorted(inc.mask_number(CHAOYANG.format(i)) for i in range(5))
    assert data["sample_callers"][0].startswith("+86139****")
    assert all(CHAOYANG.format(i) not in str(order) for i in range(5))  # masked numbers only


async def test_snapshot_carries_active_incidents_and_offers_match_only_the_area(
        redis_client: aioredis.Redis, keys: Keys) -> None:
    svc = service(redis_client, keys)
    await svc.open("mobile_data", "chaoyang-liaoning", actor="supervisor:s1", expected_fix_at=time.time() + 3600)
    chaoyang_customer = Customer(id="c-ch", name="Li", phones=(BEIJING.format(900),),
                                 attributes={"area": "Chaoyang, Liaoning"})
    await customers.save_customer(redis_client, keys, chaoyang_customer)
    offers = {}
    for label, number in (("chaoyang", CHAOYANG.format(1)), ("beijing", BEIJING.format(1)),
                          ("profile", BEIJING.format(900)), ("withheld", "anonymous")):
        snapshot, _, active = await customers.snapshot_for_call(redis_client, keys, number, menu="hotline")
        assert len(active) == 1
        offers[label] = svc.offer(snapshot, active)
    assert offers["chaoyang"] is None  # not rendered yet: the normal menu, the renderer woken
    assert svc._wake.is_set()
    # no synthesizer here: render by hand the way render_active stores clips (one per language)
    incident = (await svc.store.active())[0]
    svc._offers[(incident.id, incident.revision)] = {"en": (e.Spoken("we know", "en", "clip"),)}
    svc._thanks = {"en": (e.Spoken("thanks", "en", "t"),)}
    for label in offers:
        snapshot, _, active = await customers.snapshot_for_call(
            redis_client, keys, {"chaoyang": CHAOYANG.format(1), "beijing": BEIJING.format(1),
                                 "profile": BEIJING.format(900), "withheld": "anonymous"}[label], menu="hotline")
        offers[label] = svc.offer(snapshot, active)
    assert offers["chaoyang"] is not None and offers["chaoyang"].incident_id == incident.id
    assert offers["chaoyang"].queue == "faults"
    assert offers["profile"] is not None  # the profile's area wins over the Beijing number
    assert offers["beijing"] is None and offers["withheld"] is None
    snapshot, _, active = await customers.snapshot_for_call(redis_client, keys, CHAOYANG.format(1))
    assert svc.pop_entries(snapshot, active)[0]["area_name"] == "Chaoyang"
    assert await svc.subscribe(incident.id, snapshot, None)
    assert await svc.store.subscribers(incident.id) == [f"|{CHAOYANG.format(1)}"]


async def test_lifecycle_conflicts_cooldown_and_figures(redis_client: aioredis.Redis, keys: Keys) -> None:
    clock = [time.time()]
    svc = IncidentService(IncidentStore(redis_client, keys), POLICY, instance="i1", clock=lambda: clock[0])
    recorder = RedisPathRecorder(redis_client, keys, 3600)
    with pytest.raises(IncidentError):
        await svc.open("telepathy", "beijing", actor="supervisor:s1")
    planned = await svc.open("mobile_data", "Chaoyang, Liaoning", actor="supervisor:s1", cause="maintenance")
    assert planned.area == "chaoyang-liaoning" and planned.planned
    with pytest.raises(IncidentConflict) as conflict:
        await svc.open("mobile_data", "chaoyang-liaoning", actor="backoffice:noc")
    assert conflict.value.existing == planned.id
    for i in range(6):  # complaints during a planned outage: no second incident
        await complain(svc, recorder, CHAOYANG.format(i), clock[0])
    assert await svc.detect_once(clock[0]) == []
    acked = await svc.acknowledge(planned.id, actor="backoffice:noc")
    assert acked.state is inc.IncidentState.ACKNOWLEDGED
    updated = await svc.update(planned.id, actor="backoffice:noc", expected_fix_at=clock[0] + 600)
    assert updated.expected_fix_at == clock[0] + 600 and updated.revision == 3
    # callers offered the announcement: one subscribed, one heard it and hung up, one hung up during
    # it; three went to a queue: an agent answered one, one abandoned, one still waits at resolve;
    # one pressed another key and went on to the menu
    heard = [("subscribed", None), ("heard", None), ("hung_up", None), ("agent", "k-answered"),
             ("agent", "k-abandoned"), ("agent", "k-waiting"), ("menu", None)]
    for n, (outcome, contact_id) in enumerate(heard):
        ops = svc.store_ops(clock[0], [], None, f"|+86139042100{n}", (planned.id, outcome), contact_id)
        await recorder.record(CallPath(f"heard-{n}", "hotline", "v1", clock[0], ()), counters=ops)
    for contact_id, outcome in (("k-answered", Outcome.ANSWERED), ("k-abandoned", Outcome.ABANDONED),
                                ("k-waiting", Outcome.IN_PROGRESS)):
        await contact_store.save_contact(redis_client, keys, Contact(
            contact_id, ContactKind.INBOUND, "+8613904210001", clock[0], outcome=outcome), now=clock[0])
    clock[0] += 120
    report = await svc.resolve(planned.id, actor="backoffice:noc")
    done = report.incident
    assert done.state is inc.IncidentState.RESOLVED
    assert (done.figures["calls_absorbed"], done.figures["calls_sent_to_queue"], done.figures["calls_reached_agent"],
            done.figures["calls_hung_up_during_announcement"], done.figures["calls_went_to_menu"]) == (2, 3, 1, 1, 1)
    assert done.figures["complaints"] == 6 and done.figures["time_to_fix_seconds"] == pytest.approx(120, abs=1)
    assert done.figures["time_to_detect_seconds"] is None  # opened by hand
    assert await svc.store.active() == []
    with pytest.raises(IncidentError):
        await svc.acknowledge(planned.id, actor="backoffice:noc")
    again = await svc.resolve(planned.id, actor="backoffice:noc")  # a repeated resolve changes nothing
    assert again.incident.revision == done.revision
    for i in range(6):  # cooling down: a new burst does not raise at once
        await complain(svc, recorder, CHAOYANG.format(100 + i), clock[0])
    assert await svc.detect_once(clock[0]) == []
    assert await redis_client.ttl(keys.incident(planned.id)) > 0  # kept a while after resolve
    assert [i.id for i in await svc.list(state="resolved")] == [planned.id]


async def test_a_subscriber_without_a_customer_record_is_told_at_their_number(
        redis_client: aioredis.Redis, keys: Keys, tmp_path: Path) -> None:
    from tests.test_notices import Env

    env = Env(redis_client, keys, tmp_path)
    svc = service(redis_client, keys, notices=env.notices)
    incident = await svc.open("mobile_data", "Chaoyang, Liaoning", actor="supervisor:s1")
    snapshot, _, _ = await customers.snapshot_for_call(redis_client, keys, CHAOYANG.format(7))
    assert snapshot.customer is None and await svc.subscribe(incident.id, snapshot, None)
    # another caller without a record reported the fault (the menu promised to tell them): told too
    await complain(svc, RedisPathRecorder(redis_client, keys, 3600), CHAOYANG.format(8), time.time())
    report = await svc.resolve(incident.id, actor="backoffice:noc", cause="fibre repaired")
    assert (report.notices_scheduled, report.notices_refused) == (2, 0)
    reporter = await env.notices.store.get(notice_id(f"incident:{incident.id}:tel-{CHAOYANG.format(8).lstrip('+')}"))
    assert reporter is not None and reporter.call_id is not None
    reporter_call = await env.calls.get(reporter.call_id)
    assert reporter_call is not None and reporter_call.number == CHAOYANG.format(8)
    number = CHAOYANG.format(7)
    found = [cb for cb in await env.calls.list(limit=10) if cb.number == number]
    assert len(found) == 1 and found[0].customer_id == "tel-" + number.lstrip("+")
    again = await svc.resolve(incident.id, actor="backoffice:noc")  # told once, however often resolved
    assert again.notices_scheduled == 2 and len([cb for cb in await env.calls.list(limit=10)
                                                      if cb.number == number]) == 1


async def test_everyone_offered_the_announcement_is_told_once_and_deliveries_are_archived(
        redis_client: aioredis.Redis, keys: Keys, tmp_path: Path) -> None:
    """Callers who heard the announcement — whatever they chose — are told at resolve, once each;
    every notice delivered (heard on the call) counts once in the archived figures."""
    from tests.test_notices import OPEN, Env

    env = Env(redis_client, keys, tmp_path)
    svc = service(redis_client, keys)
    svc.attach(notices=env.notices)  # wires the notices' delivered hook too, as the app does
    incident = await svc.open("mobile_data", "Chaoyang, Liaoning", actor="supervisor:s1")
    recorder = RedisPathRecorder(redis_client, keys, 3600)
    now = time.time()
    for n, outcome in enumerate(("agent", "heard", "hung_up")):  # stayed for an agent, hung up after, during
        cid = f"c-{outcome}"
        await env.customer(cid, prefs=OPEN, phones=(CHAOYANG.format(n),))
        ops = svc.store_ops(now, [], None, f"{cid}|{CHAOYANG.format(n)}", (incident.id, outcome), f"k-{n}")
        await recorder.record(CallPath(f"heard-{n}", "hotline", "v1", now, ()), counters=ops)
    await env.customer("c-sub", prefs=OPEN, phones=(CHAOYANG.format(9),))
    snapshot = CallerSnapshot(number=CHAOYANG.format(9))
    assert await svc.subscribe(incident.id, snapshot, "c-sub")
    report = await svc.resolve(incident.id, actor="backoffice:noc")
    assert (report.notices_scheduled, report.notices_refused) == (4, 0)
    told = sorted(cb.customer_id for cb in await env.calls.list(limit=20))
    assert told == ["c-agent", "c-heard", "c-hung_up", "c-sub"]
    assert report.incident.figures["notices_delivered"] == 0
    assert sorted(await env.place_due()) == ["placed"] * 4  # each answered: the notice is heard
    archived = await svc.get(incident.id)
    assert archived.figures["notices_delivered"] == 4
    for cb in await env.calls.list(limit=20):  # pressing 1 after hearing it is no second delivery
        await env.notices.pressed(cb.id)
    n = await env.store.get(notice_id(f"incident:{incident.id}:c-agent"))
    assert n is not None and n.state.value == "pressed_1"
    await svc.on_notice_delivered(incident.id, n.id)  # told twice about one notice: counted once
    again = await svc.resolve(incident.id, actor="backoffice:noc")
    assert again.notices_scheduled == 4 and again.incident.figures["notices_delivered"] == 4
    assert len(await env.calls.list(limit=20)) == 4


class Died(BaseException):
    """The instance doing the resolve dies (a BaseException: nothing on the way catches it)."""


class DiesAfter:
    """The real NoticeService, until the instance dies after `n` notices (a crash mid-resolve);
    each notice takes `seconds` on `clock` (the dying instance's)."""

    def __init__(self, notices: object, n: int, clock: list[float], seconds: float) -> None:
        self.notices, self.left, self.clock, self.seconds = notices, n, clock, seconds

    async def schedule(self, req: object) -> object:
        if self.left == 0:
            raise Died
        self.left -= 1
        self.clock[0] += self.seconds
        return await self.notices.schedule(req)  # type: ignore[attr-defined]


async def test_a_resolve_an_instance_died_in_is_finished_by_the_lease_holder_once(
        redis_client: aioredis.Redis, keys: Keys, tmp_path: Path) -> None:
    """The resolve is saved, 3 of 30 notices scheduled (20 s each: the instance renews its mark
    meanwhile), then the instance dies: another instance finishes it — every caller told once,
    the figures archived — and only a grace after the mark's last renewal."""
    from tests.test_notices import OPEN, Env

    env = Env(redis_client, keys, tmp_path)
    clock = [time.time()]
    dying = service(redis_client, keys, "i1", notices=DiesAfter(env.notices, 3, clock, 20.0), notify_concurrency=1,
                    clock=lambda: clock[0])
    incident = await dying.open("mobile_data", "Chaoyang, Liaoning", actor="supervisor:s1")
    for n in range(30):
        await env.customer(f"c-{n:02d}", prefs=OPEN, phones=(CHAOYANG.format(n),))
        assert await dying.subscribe(incident.id, CallerSnapshot(number=CHAOYANG.format(n)), f"c-{n:02d}")
    with pytest.raises(Died):
        await dying.resolve(incident.id, actor="backoffice:noc")
    left = await dying.get(incident.id)
    assert left.state is inc.IncidentState.RESOLVED and not left.figures and left.resolved_at is not None
    assert len(await env.calls.list(limit=100)) == 3
    mark = await redis_client.zscore(keys.incidents_unfinished(), incident.id)
    assert mark == left.resolved_at + 60  # renewed at the notice that passed 15 s since the last

    other = service(redis_client, keys, "i2")  # notify concurrency: the default
    other.attach(notices=env.notices)  # and the delivered hook, as the app wires it
    assert sorted(await env.place_due()) == ["placed"] * 3  # the 3 notices are heard before it is finished
    assert (await other.get(incident.id)).figures == {"notices_delivered": 3}
    assert await other.store.unfinished(mark) == [incident.id]  # still: a delivery is no archive
    assert await other.finish_resolves(left.resolved_at + 61) == []  # renewed: the instance may be at it
    assert await other.finish_resolves(mark + 61) == [incident.id]
    told = sorted(cb.customer_id for cb in await env.calls.list(limit=100))
    assert told == [f"c-{n:02d}" for n in range(30)]  # each once: the 3 before the crash not again
    done = await other.get(incident.id)
    assert done.figures["notices_scheduled"] == 30 and done.figures["notices_refused"] == 0
    assert done.figures["notices_delivered"] == 3
    assert await other.store.unfinished(time.time() + 3600) == []
    assert await other.finish_resolves(time.time() + 3600) == []  # nothing left to finish
    again = await other.resolve(incident.id, actor="backoffice:noc")
    assert again.notices_scheduled == 30 and len(await env.calls.list(limit=100)) == 30


async def test_a_customer_whose_notices_are_locked_elsewhere_is_told_when_the_lock_goes(
        redis_client: aioredis.Redis, keys: Keys, tmp_path: Path) -> None:
    """An instance died holding one customer's notice lock (it goes after 15 s): the resolve tells
    the others, answers pending and stays unfinished; the lease holder's finishing tells that one."""
    from tests.test_notices import OPEN, Env

    env = Env(redis_client, keys, tmp_path)
    env.store.lock_wait = 0.2  # not the 10 s a live holder gets
    svc = service(redis_client, keys, notices=env.notices)
    incident = await svc.open("mobile_data", "Chaoyang, Liaoning", actor="supervisor:s1")
    for n in range(5):
        await env.customer(f"c-{n}", prefs=OPEN, phones=(CHAOYANG.format(n),))
        assert await svc.subscribe(incident.id, CallerSnapshot(number=CHAOYANG.format(n)), f"c-{n}")
    await redis_client.set(keys.notice_lock("c-2"), "an instance that died", px=15000)
    report = await svc.resolve(incident.id, actor="backoffice:noc")
    assert report.pending and not (await svc.get(incident.id)).figures
    assert sorted(cb.customer_id for cb in await env.calls.list(limit=10)) == ["c-0", "c-1", "c-3", "c-4"]
    mark = await redis_client.zscore(keys.incidents_unfinished(), incident.id)
    assert mark is not None
    assert await svc.finish_resolves(mark + 61) == []  # still locked: tried again next round
    await redis_client.delete(keys.notice_lock("c-2"))  # its 15 s are over
    assert await svc.finish_resolves(mark + 61) == [incident.id]
    assert sorted(cb.customer_id for cb in await env.calls.list(limit=10)) == [f"c-{n}" for n in range(5)]
    assert (await svc.get(incident.id)).figures["notices_scheduled"] == 5


async def test_an_agents_fault_disposition_counts_once_per_contact_unless_the_ivr_did(
        redis_client: aioredis.Redis, keys: Keys) -> None:
    from ivrserver.domain.contact_notes import validate
    from ivrserver.services.customers import CustomerService

    svc = service(redis_client, keys)
    customers_svc = CustomerService(redis_client, keys)
    assert customers_svc.fault_services() == ()
    customers_svc.attach_incidents(svc)
    assert customers_svc.fault_services() == ("mobile_data", "broadband")
    now = time.time()
    profile = Customer(id="c-ch", name="Li", phones=(BEIJING.format(5),), attributes={"area": "Chaoyang, Liaoning"})
    await customers.save_customer(redis_client, keys, profile)
    contacts = {"by-number": Contact("k-1", ContactKind.INBOUND, CHAOYANG.format(1), now),
                "by-profile": Contact("k-2", ContactKind.INBOUND, BEIJING.format(5), now, customer_id="c-ch"),
                "ivr-counted": Contact("k-3", ContactKind.INBOUND, CHAOYANG.format(3), now)}
    for c in contacts.values():
        await contact_store.save_contact(redis_client, keys, c, now=now)
    # the IVR counted k-3's report already (the hotline passes the call's contact id)
    recorder = RedisPathRecorder(redis_client, keys, 3600)
    path = (e.PathEvent(e.PathKind.REPORTED, "report_fault", now, detail="mobile_data"),)
    await recorder.record(CallPath("call-3", "hotline", "v1", now, path), counters=svc.complaint_ops(
        now, CallerSnapshot(number=CHAOYANG.format(3)), path, None, "k-3"))

    async def window() -> int:
        (counts, _, _), = await svc.store.pair_states([("mobile_data", "chaoyang-liaoning")], now + 1, POLICY)
        return counts.window

    assert await window() == 1
    note, errors = validate({"disposition": "fault:mobile_data", "notes": "no data since noon"}, write_back=True,
                            fault_services=customers_svc.fault_services())
    assert note is not None and not errors
    for contact_id in ("k-1", "k-1", "k-2", "k-3", "k-3"):
        saved = await customers_svc.save_note(contact_id, note, now=now)
        assert saved is not None and saved.disposition == "fault:mobile_data"
    assert await window() == 3  # k-1 and k-2 once each; k-3 only by the IVR
    assert sorted(await svc.store.callers("mobile_data", "chaoyang-liaoning", now - 1, now + 1)) == [
        f"c-ch|{BEIJING.format(5)}", f"|{CHAOYANG.format(1)}", f"|{CHAOYANG.format(3)}"]
    # another service on the same contact is its own complaint
    other, _ = validate({"disposition": "fault:broadband"}, write_back=False, fault_services=("broadband",))
    assert other is not None
    await customers_svc.save_note("k-1", other, now=now)
    (counts, _, _), = await svc.store.pair_states([("broadband", "chaoyang-liaoning")], now + 1, POLICY)
    assert counts.window == 1


async def test_callers_are_trimmed_to_the_kept_time_and_first_report_is_the_complaints_own_time(
        redis_client: aioredis.Redis, keys: Keys) -> None:
    svc = service(redis_client, keys)
    recorder = RedisPathRecorder(redis_client, keys, 3600)
    now = time.time()
    old = now - POLICY.callers_kept_seconds - 60
    await complain(svc, recorder, CHAOYANG.format(1), old)
    await complain(svc, recorder, CHAOYANG.format(2), now - 3)
    assert await svc.store.callers("mobile_data", "chaoyang-liaoning", 0, now + 1) == [f"|{CHAOYANG.format(2)}"]
    for i in range(3, 7):
        await complain(svc, recorder, CHAOYANG.format(i), now - 1 + i / 10)
    (counts, _, _), = await svc.store.pair_states([("mobile_data", "chaoyang-liaoning")], now + 1, POLICY)
    assert counts.window == 5
    # the complaints' own times, not their buckets' starts (up to bucket_seconds earlier)
    assert counts.first_at == pytest.approx(now - 3) and counts.latest_at == pytest.approx(now - 1 + 0.6)


async def test_pop_entries_carry_the_names_in_each_language(redis_client: aioredis.Redis, keys: Keys) -> None:
    svc = service(redis_client, keys)
    await svc.open("mobile_data", "chaoyang-liaoning", actor="supervisor:s1")
    snapshot, _, active = await customers.snapshot_for_call(redis_client, keys, CHAOYANG.format(1))
    [entry] = svc.pop_entries(snapshot, active)
    assert (entry["service_names"], entry["area_names"]) == (
        {"en": "mobile data", "zh": "移动数据"}, {"en": "Chaoyang", "zh": "朝阳"})
    assert (entry["service_name"], entry["area_name"]) == ("mobile data", "Chaoyang")
