"""NoticeService on a real Redis, the follow-up features: a notice to a number without a customer
record (an incident's caller, `tel-<digits>`), and an SMS held to the customer's allowed hours,
sent by the notices' SMS scheduler when due — exactly once across instances, also when the
instance sending it dies mid-send — unless its kind is urgent.

The SMS goes through the real SmsService over GatewaySms and the real Webhooks to a real HTTP
receiver on 127.0.0.1 (the operator's gateway): one POST per notice is what "sent once" means.
Messages are synthesized for real (espeak-ng + sox into tmp_path); calls are placed by the real
CallbackPlacer with test_callback_service's recording Dialer (tests/test_notices.py's Env).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivrserver.domain import callbacks as cbm
from ivrserver.domain.model import ContactPreferences
from ivrserver.domain.notices import (
    Notice,
    NoticeInvalid,
    NoticePolicy,
    NoticeRequest,
    NoticeState,
    NoticeStatus,
    call_id_for,
    notice_id,
)
from ivrserver.domain.webhooks import Endpoint
from ivrserver.services.notices import NoticeService
from ivrserver.services.sms import GatewaySms, SmsService
from ivrserver.services.webhooks import Webhooks
from ivrserver.store.keys import Keys
from ivrserver.store.sms import SmsMarkers
from tests.test_notices import ALL_DAY, Env
from tests.test_webhooks_delivery import FAST, SECRET, Receiver

TEXT = {"en": "The outage in your area is over.", "zh": "您所在地区的故障已经修复。"}


def later_window() -> ContactPreferences:
    """Allowed hours (UTC) that start 2 hours from now: an SMS now must wait for them."""
    h = datetime.now(UTC).hour
    start, end = (h + 2) % 24, (h + 3) % 24
    return ContactPreferences(timezone="UTC", allowed_from=f"{start:02d}:00",
                              allowed_until="24:00" if end == 0 else f"{end:02d}:00")


@pytest.fixture
def env(redis_client: aioredis.Redis, keys: Keys, tmp_path: Path) -> Env:
    return Env(redis_client, keys, tmp_path)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


class Gateway:
    """The real SMS path: SmsService → GatewaySms → Webhooks (durable) → deliverer → receiver."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, receiver: Receiver) -> None:
        self.hooks = Webhooks(redis, keys, [Endpoint("sms-gateway", receiver.url, ("sms.send",), SECRET,
                                                     timeout=FAST.timeout_seconds, max_attempts=FAST.max_attempts)],
                              settings=FAST, hot_days=1, instance="i1")
        self.sms = SmsService(SmsMarkers(redis, keys, kept_seconds=3600), GatewaySms(self.hooks, sender="1860"))
        self.receiver = receiver

    async def hits_after(self, seconds: float) -> list[dict[str, object]]:
        deliverer = asyncio.create_task(self.hooks.run())
        try:
            await asyncio.sleep(seconds)
        finally:
            deliverer.cancel()
            await asyncio.gather(deliverer, return_exceptions=True)
        return [h["body"]["data"] for h in self.receiver.hits]  # type: ignore[index]


def with_sms(env: Env, gateway: Gateway) -> NoticeService:
    """Another instance's NoticeService on the same Redis (same store, same SMS key space)."""
    return NoticeService(env.store, env.calls, env.notices.messages, env.notices.policy, ALL_DAY,
                         customer=env.notices.customer, sms=gateway.sms, cases=env.cases, clock=env.clock,
                         sms_lease_seconds=2.0)


# ----------------------------------------------------------------------------- number

async def test_a_caller_without_a_record_is_called_at_their_number_in_their_time_zone(env: Env) -> None:
    result = await env.notices.schedule(NoticeRequest(key="incident:I-1:tel-8613812345678",
                                                      customer_id="tel-8613812345678", kind="incident", text=TEXT,
                                                      incident_id="I-1", number="+86 138-1234-5678"))
    assert result.status in (NoticeStatus.SCHEDULED, NoticeStatus.DEFERRED) and result.channel == "call", result
    cb = await env.calls.get(result.call_id or "")
    assert cb is not None and cb.number == "+8613812345678" and cb.customer_id == "tel-8613812345678"
    # ContactPreferences' default hours, in the number's own zone
    assert (cb.preferences.timezone, cb.preferences.allowed_from, cb.preferences.allowed_until) == (
        "Asia/Shanghai", "09:00", "20:00")
    assert result.due_at == cbm.next_allowed_time(result.due_at or 0, cb.preferences, ALL_DAY)
    local = datetime.fromtimestamp(result.due_at or 0, cbm.zone("Asia/Shanghai"))
    assert 9 <= local.hour < 20
    n = await env.store.get(result.notice_id)
    assert n is not None and (n.language, n.text) == ("zh", TEXT["zh"])  # a +86 caller reads Mandarin first
    # the kind's default consent: an outage they reported yes, a marketing-like kind no
    refused = await env.notices.schedule(NoticeRequest(key="promo:tel-8613812345678", customer_id="tel-8613812345678",
                                                       kind="card_expiry", text=TEXT, number="+8613812345678"))
    assert (refused.status, refused.reason) == (NoticeStatus.REFUSED, "no_consent")
    # no number, no record: nobody to call
    nobody = await env.notices.schedule(NoticeRequest(key="incident:I-1:tel-x", customer_id="tel-x", kind="incident",
                                                      text=TEXT))
    assert (nobody.status, nobody.reason) == (NoticeStatus.REFUSED, "no_phone")


async def test_the_requests_number_wins_over_the_customers_phone_and_a_bad_one_is_refused(env: Env) -> None:
    await env.customer("c1", phones=("15550001",))
    result = await env.notices.schedule(NoticeRequest(key="k-num", customer_id="c1", kind="case_result",
                                                      text=TEXT, number="+8613812345678"))
    cb = await env.calls.get(result.call_id or "")
    assert cb is not None and cb.number == "+8613812345678"
    assert cb.preferences.timezone == "UTC"  # the customer's own preferences still hold
    for bad in ("anonymous", "12ab", "+0861234"):
        with pytest.raises(NoticeInvalid) as caught:
            await env.notices.schedule(NoticeRequest(key=f"k-{bad}", customer_id="c1", kind="case_result",
                                                     text=TEXT, number=bad))
        assert set(caught.value.errors) == {"number"}


# ----------------------------------------------------------------------------- held SMS

async def test_an_sms_waits_for_the_allowed_hours_and_goes_once_across_instances(
        redis_client: aioredis.Redis, keys: Keys, tmp_path: Path, receiver: Receiver) -> None:
    env = Env(redis_client, keys, tmp_path)
    gateway = Gateway(redis_client, keys, receiver)
    a, b = with_sms(env, gateway), with_sms(env, gateway)
    prefs = later_window()
    await env.customer("c1", prefs=prefs, phones=("+8613812345678",))
    result = await a.schedule(NoticeRequest(key="sms-1", customer_id="c1", kind="case_result", text=TEXT,
                                            channel="sms", case_id="K-1"))
    expected_due = cbm.next_allowed_time(time.time(), prefs, ALL_DAY)
    assert (result.status, result.channel) == (NoticeStatus.SCHEDULED, "sms")
    assert result.due_at is not None and expected_due is not None and abs(result.due_at - expected_due) < 5
    assert await a.send_due_sms() == 0 and await b.send_due_sms() == 0  # not yet
    assert await gateway.hits_after(0.3) == []
    env.clock.offset = result.due_at - time.time() + 1  # the hours open
    claimed = await asyncio.gather(a.send_due_sms(), b.send_due_sms(), a.send_due_sms())
    assert sorted(claimed) == [0, 0, 1]
    n = await env.store.get(result.notice_id)
    assert n is not None and n.state is NoticeState.SMS_SENT and n.channel == "sms"
    assert await a.send_due_sms() == 0 and await env.store.sms_counts() == (0, 0)
    assert await gateway.hits_after(1.0) == [{"number": "+8613812345678", "text": TEXT["en"], "sender": "1860"}]
    again = await b.schedule(NoticeRequest(key="sms-1", customer_id="c1", kind="case_result", text=TEXT,
                                           channel="sms"))
    assert (again.status, again.state) == (NoticeStatus.EXISTING, NoticeState.SMS_SENT)


async def test_an_instance_killed_mid_send_never_sends_twice(redis_client: aioredis.Redis, keys: Keys,
                                                             tmp_path: Path, receiver: Receiver) -> None:
    env = Env(redis_client, keys, tmp_path)
    gateway = Gateway(redis_client, keys, receiver)
    survivor = with_sms(env, gateway)
    await env.customer("c1", prefs=later_window(), phones=("+8613812345678",))
    result = await survivor.schedule(NoticeRequest(key="sms-kill", customer_id="c1", kind="case_result", text=TEXT,
                                                   channel="sms"))
    assert result.due_at is not None
    env.clock.offset = result.due_at - time.time() + 1
    # the dying instance: claims it, hands it to the gateway, and is killed before recording it
    now = env.clock()
    assert await env.store.claim_due_sms(now, now + 2.0, 10) == [result.notice_id]
    assert await gateway.sms.send(number="+8613812345678", text=TEXT["en"], key="sms-kill") == "sent"
    assert await survivor.send_due_sms() == 0  # its lease holds
    env.clock.offset += 3  # the lease ran out: the survivor takes it over
    assert await survivor.send_due_sms() == 1
    n = await env.store.get(result.notice_id)
    assert n is not None and n.state is NoticeState.SMS_SENT
    assert len(await gateway.hits_after(1.0)) == 1  # the SMS key kept it to one


async def test_a_held_sms_is_cancelled_when_moot_and_an_urgent_kind_goes_at_once(
        redis_client: aioredis.Redis, keys: Keys, tmp_path: Path, receiver: Receiver) -> None:
    env = Env(redis_client, keys, tmp_path)
    gateway = Gateway(redis_client, keys, receiver)
    notices = with_sms(env, gateway)
    await env.customer("c1", prefs=later_window(), phones=("+8613812345678",),
                       attributes={"notices": "roaming,card_expiry"})
    held = await notices.schedule(NoticeRequest(key="card", customer_id="c1", kind="card_expiry", text=TEXT,
                                                channel="sms"))
    assert held.status is NoticeStatus.SCHEDULED and await env.store.sms_counts() == (1, 0)
    assert await notices.cancel("card", reason="card renewed")
    assert not await notices.cancel("card", reason="again")
    assert held.due_at is not None
    env.clock.offset = held.due_at - time.time() + 1
    assert await notices.send_due_sms() == 0
    n = await env.store.get(held.notice_id)
    assert n is not None and n.state is NoticeState.CANCELLED
    env.clock.offset = 0
    # urgent (notices.urgent_kinds: roaming): at once, outside the hours
    urgent = await notices.schedule(NoticeRequest(key="roam", customer_id="c1", kind="roaming", text=TEXT,
                                                  channel="sms"))
    assert (urgent.status, urgent.channel) == (NoticeStatus.SMS_SENT, "sms")
    # not urgent under another policy: held like the rest
    strict = NoticeService(env.store, env.calls, None, NoticePolicy(urgent_kinds=frozenset()), ALL_DAY,
                           customer=env.notices.customer, sms=gateway.sms, clock=env.clock)
    later = await strict.schedule(NoticeRequest(key="roam-2", customer_id="c1", kind="roaming", text=TEXT,
                                                channel="sms"))
    assert later.status is NoticeStatus.SCHEDULED and later.channel == "sms"
    # a call planned for a do-not-call customer at night becomes an SMS held to the hours too
    await env.customer("c2", prefs=ContactPreferences(**{**later_window().__dict__, "do_not_call": True}),
                       phones=("+8613812345679",))
    dnc = await notices.schedule(NoticeRequest(key="dnc", customer_id="c2", kind="case_result", text=TEXT))
    assert (dnc.status, dnc.channel, dnc.reason) == (NoticeStatus.SCHEDULED, "sms", "do_not_call")
    assert [h["text"] for h in await gateway.hits_after(1.0)] == [TEXT["en"]]  # only the urgent one


async def test_a_notice_whose_instance_died_before_its_call_existed_gets_it_at_the_next_schedule(env: Env) -> None:
    """The notice is written before its call (the call may be dialed the moment it exists, and its
    outcome must find the notice); an instance dying in between leaves a notice without a call."""
    await env.customer("c1")
    req = NoticeRequest(key="half-way", customer_id="c1", kind="case_result", text=TEXT)
    nid = notice_id("half-way")
    orphan = Notice(id=nid, key="half-way", customer_id="c1", kind="case_result", state=NoticeState.SCHEDULED,
                    created_at=time.time(), channel="call", call_id=call_id_for(nid), due_at=time.time())
    assert await env.store.create(orphan)
    await env.store.attach(orphan.call_id or "", nid, "c1", time.time())
    result = await env.notices.schedule(req)
    assert (result.status, result.call_id) == (NoticeStatus.SCHEDULED, call_id_for(nid))
    assert await env.calls.get(call_id_for(nid)) is not None
    assert (await env.notices.schedule(req)).status is NoticeStatus.EXISTING
    assert await env.place_due() == ["placed"]
    n = await env.store.get(nid)
    assert n is not None and n.state is NoticeState.HEARD
