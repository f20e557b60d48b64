"""Mass-fault incidents on real calls: SIPp callers → Asterisk 22 → ivrserver (FastAGI) → Redis,
the work order to a real webhook receiver (signed, once), the back office over REST.

A burst of callers from Chaoyang (Liaoning) mobile numbers presses 3 (faults) → 4 (report a fault)
→ 1 (mobile data): the detector raises one incident; the next caller from Chaoyang hears the
announcement first and presses 1 (subscribed), a caller from Beijing hears the normal menu, two
more from Chaoyang hang up after the announcement (absorbed: self-served) and during it
(abandoned), and one types the fault report by habit (3 4 1) over the announcement: 3 takes them
on to the menu, whose 4 1 count their report and thank them as without an incident (not the
faults queue); the network team's receiver got the work order once; the back office acknowledges, sets the expected
fix time and resolves over REST, and the incident is archived with its figures. Everyone who
pressed 1, heard the announcement or reported the fault is told once: the subscribed customer at once, the reporters (no
customer record) at the number they called from, within 09:00-20:00 in Chaoyang — at once when the
test runs then, else their notices wait for the morning and nothing rings.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
import zoneinfo
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivrserver import config
from ivrserver.devstack.asterisk import LocalAsterisk
from ivrserver.domain import menu_engine as e
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import ContactPreferences, Customer
from ivrserver.domain.notices import NoticeState, notice_id
from ivrserver.services.contact_tracker import contact_id_of_call
from ivrserver.store import callpath, customers
from ivrserver.store import contacts as contact_store
from ivrserver.web.backoffice import digest
from tests.integration.conftest import Phones
from tests.integration.test_ivrserver_calls import REPO, running, url_of, wait_until
from tests.integration.test_ivrserver_calls import ivr_settings as base_settings
from tests.test_webhooks_delivery import SECRET, Receiver

pytestmark = pytest.mark.integration

ALL_DAY = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")
NOC_TOKEN = "noc-" + "a1b2c3d4" * 5
BURST = 4  # the test policy's min_count
CHAOYANG = "1390421{:04d}"  # national mobile numbers of Chaoyang, Liaoning (region CN)
BEIJING = "1380013{:04d}"


def incident_settings(asterisk: LocalAsterisk, redis_url: str, tmp_path: Path, receiver: Receiver) -> config.Settings:
    policy = (REPO / "ivrserver" / "defaults" / "incidents.yaml").read_text()
    policy = policy.replace("min_count: 20 ", f"min_count: {BURST} ").replace("interval: 0.5 ", "interval: 0.3 ")
    (tmp_path / "incidents.yaml").write_text(policy)
    (tmp_path / "noc.secret").write_bytes(SECRET)
    (tmp_path / "noc.secret").chmod(0o600)
    (tmp_path / "webhooks.yaml").write_text(
        f"endpoints:\n  - name: noc\n    url: {receiver.url}\n    events: [\"incident.*\"]\n"
        f"    secret_file: {tmp_path / 'noc.secret'}\n")
    (tmp_path / "tokens.yaml").write_text(f'noc: {{digest: "{digest(NOC_TOKEN)}", scopes: [incidents]}}\n')
    base = base_settings(asterisk, redis_url, tmp_path)
    return dataclasses.replace(
        base, web=dataclasses.replace(base.web, backoffice_tokens_file=str(tmp_path / "tokens.yaml")),
        phone=dataclasses.replace(base.phone, default_region="CN"),
        incidents=dataclasses.replace(base.incidents, policy_file=str(tmp_path / "incidents.yaml")),
        webhooks=dataclasses.replace(base.webhooks, endpoints_file=str(tmp_path / "webhooks.yaml"),
                                     poll_interval=0.2))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def test_a_burst_from_one_city_becomes_one_announced_incident(
        fresh_asterisk: LocalAsterisk, redis_client: aioredis.Redis, tmp_path: Path, phones: Phones,
        receiver: Receiver) -> None:
    settings = incident_settings(fresh_asterisk, url_of(redis_client), tmp_path, receiver)
    async with running(settings) as server:
        keys = server.keys
        assert server.incidents is not None
        for i in range(BURST):  # 3 faults, 4 report a fault, 1 mobile data (then the IVR hangs up)
            result = await phones.call("341", number=CHAOYANG.format(i))
            assert result.ok, result.describe()

        async def opened() -> list[str]:
            return list(await redis_client.hkeys(keys.incidents_active()))
        [incident_id] = await wait_until(opened, timeout=20, what="the incident opened")
        incident = await server.incidents.get(incident_id)
        assert (incident.service, incident.area, incident.opened_by) == ("mobile_data", "chaoyang-liaoning", "detector")
        assert incident.counts["window"] == BURST

        async def rendered() -> bool:
            return any(key[0] == incident_id for key in server.incidents._offers)
        await wait_until(rendered, timeout=30, what="the announcement rendered")

        # the next caller from Chaoyang (a customer) hears it and presses 1; one from Beijing hears the menu
        subscriber = CHAOYANG.format(50)
        await customers.save_customer(redis_client, keys, Customer(
            id="c-chaoyang", name="Li Na", phones=(f"+86{subscriber}",), preferences=ALL_DAY))
        assert (await phones.call("1", number=subscriber)).ok
        assert (await phones.call("9", number=BEIJING.format(1), hold_ms=4000)).returncode in (0, 1)
        # two more from Chaoyang hang up without a key: one once the announcement and the offer have
        # played (absorbed: the contact is self-served), one while it still plays (abandoned)
        speech = server.menus.speech
        assert speech is not None
        offer = next(o for k, o in server.incidents._offers.items() if k[0] == incident_id)["en"]
        played = sum([(await speech.clip(p.text, "en")).seconds for p in offer if isinstance(p, e.Spoken)]) * 1000
        assert played > 2500, played
        for number, hold in ((CHAOYANG.format(60), int(played) + 2500), (CHAOYANG.format(61), 1500)):
            assert (await phones.call("", number=number, hold_ms=hold, timeout=30)).returncode in (0, 1)
        # the habitual 3 4 1 over the announcement (the IVR thanks them and hangs up)
        assert (habit := await phones.call("341", number=CHAOYANG.format(62))).ok, habit.describe()

        async def recorded() -> list[CallPath]:
            paths = await callpath.recent_paths(redis_client, keys, "hotline", 0)
            return paths if len(paths) >= BURST + 5 else []
        paths = await wait_until(recorded, timeout=20, what="every call's path")
        heard = {e.incident_outcome(p.events): p.call_id for p in paths
                 if any(ev.kind is e.PathKind.INCIDENT for ev in p.events)}
        assert set(heard) == {(incident_id, "subscribed"), (incident_id, "heard"), (incident_id, "hung_up"),
                              (incident_id, "menu")}, "only the callers from Chaoyang heard the announcement"
        habitual = next(p for p in paths if p.call_id == heard[(incident_id, "menu")])
        assert e.reported_services(habitual.events) == ("mobile_data",)
        assert not [ev for ev in habitual.events if ev.kind is e.PathKind.INCIDENT and ev.target.startswith("queue:")]
        heard[(incident_id, "reporter")] = next(  # one of the burst: reported without an incident
            p.call_id for p in paths if e.reported_services(p.events) and e.incident_outcome(p.events) is None)
        assert await server.incidents.store.subscribers(incident_id) == [f"c-chaoyang|+86{subscriber}"]

        async def contacts_done() -> dict[str, object] | None:
            found = {outcome: await contact_store.get_contact(redis_client, keys, contact_id_of_call(keys, call))
                     for (_, outcome), call in heard.items()}
            return found if all(c is not None and c.ended_at for c in found.values()) else None
        contacts = await wait_until(contacts_done, timeout=20, what="the contact records")
        outcomes = {k: c.outcome.value for k, c in contacts.items()}  # type: ignore[attr-defined]
        assert outcomes["menu"] == outcomes.pop("reporter") != "answered", outcomes  # as without an incident
        assert outcomes == {"subscribed": "self_served", "heard": "self_served", "hung_up": "abandoned",
                            "menu": outcomes["menu"]}
        assert "heard incident announcement" in contacts["heard"].routing_reason  # type: ignore[attr-defined]

        # the network team got one signed work order
        async def ordered() -> bool:
            return bool(receiver.accepted)
        await wait_until(ordered, timeout=20, what="the work order delivered")
        orders = [h for h in receiver.hits if h["body"]["event"] == "incident.opened"]
        assert len(orders) == 1 and receiver.bad_signatures == 0
        assert orders[0]["body"]["data"]["area"] == "chaoyang-liaoning"
        assert all("****" in n for n in orders[0]["body"]["data"]["sample_callers"])

        # the back office: acknowledge, expected fix time, resolve
        base = f"http://127.0.0.1:{settings.web.port}/api/v1/incidents/{incident_id}"
        headers = {"Authorization": f"Bearer {NOC_TOKEN}"}
        # the burst's callers have no customer record: they are told at their numbers within the
        # default allowed hours (09:00-20:00) of their region's time zone — now, or tomorrow morning
        in_hours = 9 <= datetime.datetime.now(zoneinfo.ZoneInfo("Asia/Shanghai")).hour < 20
        told_at_number = BURST + 3  # the reporters and the three who heard the announcement
        ringing = await phones.customer(ring_ms=300, hold_ms=3000, timeout=90,  # the customers' trunk
                                        calls=1 + (told_at_number if in_hours else 0))
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{base}/acknowledge") as resp:
                assert resp.status == 200
            async with http.patch(base, json={"cause": "fibre cut", "expected_fix_at": time.time() + 3600}) as resp:
                assert resp.status == 200
            async with http.post(f"{base}/resolve", json={}) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
        assert body["state"] == "resolved"
        figures = body["figures"]
        assert (figures["calls_absorbed"], figures["calls_hung_up_during_announcement"]) == (2, 1)
        assert (figures["calls_sent_to_queue"], figures["calls_reached_agent"], figures["calls_went_to_menu"]) == \
            (0, 0, 1)
        assert figures["complaints"] == BURST + 1 and figures["time_to_detect_seconds"] >= 0
        assert not await redis_client.hexists(keys.incidents_active(), incident_id)
        # one notice for the subscribed customer, one for each caller who reported the fault (the
        # menu told them "we will let you know when it is fixed") and each who heard the
        # announcement whatever they chose, at the number they called from
        assert (body["notices_scheduled"], body["notices_refused"]) == (1 + told_at_number, 0)
        ids = [notice_id(f"incident:{incident_id}:c-chaoyang")]
        ids += [notice_id(f"incident:{incident_id}:tel-86{CHAOYANG.format(i)}") for i in (*range(BURST), 60, 61, 62)]
        reporters = [n for n in await server.notices.store.get_many(ids[1:]) if n is not None]
        assert len(reporters) == told_at_number
        if not in_hours:  # waiting for 09:00 in Chaoyang, never rung at night
            assert all(n.state is NoticeState.SCHEDULED and n.due_at is not None and n.due_at > time.time()
                       for n in reporters), reporters
        told = ids if in_hours else ids[:1]

        async def heard() -> object:
            found = await server.notices.store.get_many(told)
            return found if len(found) == len(told) and all(n.state is NoticeState.HEARD for n in found) else None
        await wait_until(heard, timeout=60, what="the notices heard on the customers' phones")
        assert (r := await ringing.wait()).ok and r.successful == len(told), r.describe()

        async def delivered() -> bool:  # each notice heard counts once in the archived figures
            return (await server.incidents.get(incident_id)).figures.get("notices_delivered") == len(told)
        await wait_until(delivered, timeout=20, what="the notices delivered in the figures")
        # resolving again tells nobody twice: the existing notices, not new calls
        async with aiohttp.ClientSession(headers=headers) as http, http.post(f"{base}/resolve", json={}) as resp:
            again = await resp.json()
        assert (again["notices_scheduled"], again["notices_refused"]) == (1 + told_at_number, 0)
        assert again["figures"]["notices_delivered"] == len(told)
        calls = [cb for cb in await server.callback_store.list(limit=50) if cb.notice]
        assert len(calls) == 1 + told_at_number and all(cb.attempts <= 1 for cb in calls)
