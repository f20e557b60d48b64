"""NoticeService on a real Redis: exactly once per key, consent / do-not-call / budget / batching /
moot, the call's outcome on the notice and on its case, and the case handler (resolved → notice,
reopened → cancelled) through the real CaseService and CaseFollowup.

The messages are synthesized for real (espeak-ng + sox into tmp_path). The calls are placed by the
real CallbackPlacer; only its Dialer port (the AMI Originate, tested on a real Asterisk in
tests/integration/test_notice_calls.py) is the recording double of test_callback_service. The SMS
sender port (the SMS helper's) is a recording double here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivrserver.config import PromptSettings
from ivrserver.domain.callbacks import CallbackMode, CallbackPolicy, CallbackState
from ivrserver.domain.cases import CasePolicy
from ivrserver.domain.model import CaseStatus, ContactPreferences, Customer
from ivrserver.domain.notices import Notice, NoticePolicy, NoticeRequest, NoticeState, NoticeStatus, notice_id
from ivrserver.services.callbacks import CallbackPlacer, DialOutcome, DialResult
from ivrserver.services.case_followup import CaseFollowup
from ivrserver.services.cases import CaseService
from ivrserver.services.messages import MessageService
from ivrserver.services.notices import NoticeService, case_result_key
from ivrserver.services.speech import SpeechRenderer, Synthesizer, parse_voices
from ivrserver.store import customers
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.keys import Keys
from ivrserver.store.notices import NoticeStore
from tests.test_callback_service import RecordingDialer

ALL_DAY = CallbackPolicy(calling_from="00:00", calling_until="24:00")
OPEN = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Sms:
    """Recording double of the SmsSender port (pbx/messaging.py implements it on Asterisk)."""

    def __init__(self, outcome: str = "sent") -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.outcome = outcome

    async def send(self, *, number: str, text: str, key: str) -> str:
        self.sent.append((number, text, key))
        return self.outcome


class Env:
    def __init__(self, redis: aioredis.Redis, keys: Keys, tmp: Path, *, policy: NoticePolicy | None = None,
                 sms: Sms | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = Clock()
        self.calls = CallbackStore(redis, keys)
        self.store = NoticeStore(redis, keys)
        prompts = PromptSettings()
        renderer = SpeechRenderer(Synthesizer(prompts.synthesizer, prompts.convert), parse_voices(prompts.voices),
                                  tmp / "sounds")
        self.cases = CaseService(redis, keys, CasePolicy(), clock=self.clock)
        self.notices = NoticeService(
            self.store, self.calls, MessageService(renderer), policy or NoticePolicy(), ALL_DAY,
            customer=lambda cid: customers.get_customer(redis, keys, cid), sms=sms, cases=self.cases,
            templates={"en": "About case {case}: {result}.", "zh": "工单{case}：{result}。"},
            clock=self.clock)
        self.dialer = RecordingDialer()
        self.placer = CallbackPlacer(self.calls, self.dialer, ALL_DAY, free_agents=_none, is_free=_false,
                                     clock=self.clock, instance="t1", on_placed=self.notices.on_placed)

    async def customer(self, cid: str = "c1", *, language: str = "en", prefs: ContactPreferences = OPEN,
                       attributes: dict[str, str] | None = None, phones: tuple[str, ...] = ("15550001",)) -> Customer:
        c = Customer(id=cid, name="Wang Fang", phones=phones, language=language, preferences=prefs,
                     attributes=attributes or {})
        await customers.save_customer(self.redis, self.keys, c)
        return c

    async def place_due(self) -> list[str]:
        claims = await self.calls.claim(self.clock() + 1, lease_seconds=60, limit=100, claimer="t1")
        return [(await self.placer.place(c)).value for c in claims]


async def _none(tier: str) -> list[str]:
    return []


async def _false(agent: str) -> bool:
    return False


@pytest.fixture
def env(redis_client: aioredis.Redis, keys: Keys, tmp_path: Path) -> Env:
    return Env(redis_client, keys, tmp_path)


def notice(key: str = "k1", **kw: object) -> NoticeRequest:
    base: dict[str, object] = {"key": key, "customer_id": "c1", "kind": "case_result",
                               "text": {"en": "Your charge was cancelled.", "zh": "您的扣费已取消。"}}
    return NoticeRequest(**{**base, **kw})  # type: ignore[arg-type]


async def test_schedule_is_once_per_key_with_the_message_in_the_customers_language(env: Env) -> None:
    await env.customer(language="zh")
    results = await asyncio.gather(*(env.notices.schedule(notice()) for _ in range(5)))
    statuses = sorted(r.status.value for r in results)
    assert statuses == ["existing"] * 4 + ["scheduled"], statuses
    [first] = [r for r in results if r.status is NoticeStatus.SCHEDULED]
    assert {r.notice_id for r in results} == {first.notice_id}
    calls = await env.calls.list()
    assert [c.id for c in calls] == [first.call_id]
    [cb] = calls
    assert cb.mode is CallbackMode.CUSTOMER_FIRST and cb.notice == "case_result"
    assert cb.state is CallbackState.SCHEDULED and cb.number == "15550001"
    n = await env.store.get(first.notice_id)
    assert n is not None and (n.language, n.text, n.state) == ("zh", "您的扣费已取消。", NoticeState.SCHEDULED)
    assert cb.prompt == n.sound
    assert (await asyncio.to_thread(Path(n.sound + ".sln").stat)).st_size > 1000  # synthesized for real
    # and the same key later: the same notice, nothing new
    again = await env.notices.schedule(notice())
    assert (again.status, again.notice_id, again.call_id) == (NoticeStatus.EXISTING, first.notice_id, cb.id)


@pytest.mark.parametrize(("attributes", "prefs", "kind", "reason"), [
    ({"notices": "-case_result"}, OPEN, "case_result", "no_consent"),
    ({}, OPEN, "card_expiry", "no_consent"),  # marketing-like kinds need a yes
    ({}, ContactPreferences(do_not_call=True), "case_result", "do_not_call"),
])
async def test_never_unwanted(env: Env, attributes: dict[str, str], prefs: ContactPreferences, kind: str,
                              reason: str) -> None:
    await env.customer(attributes=attributes, prefs=prefs)
    result = await env.notices.schedule(notice(kind=kind))
    assert (result.status, result.reason) == (NoticeStatus.REFUSED, reason)
    assert await env.calls.list() == []
    stored = await env.store.get(result.notice_id)
    assert stored is not None and (stored.state, stored.reason) == (NoticeState.REFUSED, reason)
    # consented kinds of the same customer
    await env.customer(attributes={"notices": "card_expiry"}, prefs=OPEN)
    ok = await env.notices.schedule(notice("k2", kind="card_expiry"))
    assert ok.status is NoticeStatus.SCHEDULED


async def test_do_not_call_goes_by_sms_when_there_is_a_sender(redis_client: aioredis.Redis, keys: Keys,
                                                              tmp_path: Path) -> None:
    sms = Sms()
    env = Env(redis_client, keys, tmp_path, sms=sms)
    # allowed at any hour, so the SMS goes at once (one outside the allowed hours is held:
    # tests/test_notices_number_sms.py)
    await env.customer(prefs=dataclasses.replace(OPEN, do_not_call=True))
    result = await env.notices.schedule(notice())
    assert (result.status, result.reason) == (NoticeStatus.SMS_SENT, "do_not_call")
    assert sms.sent == [("15550001", "Your charge was cancelled.", "k1")]
    assert await env.calls.list() == []
    assert (await env.notices.schedule(notice())).status is NoticeStatus.EXISTING
    assert len(sms.sent) == 1


async def test_budget_defers_then_refuses(redis_client: aioredis.Redis, keys: Keys, tmp_path: Path) -> None:
    env = Env(redis_client, keys, tmp_path, policy=NoticePolicy(max_calls=1, batch_seconds=60, window_days=10))
    await env.customer()
    now = env.clock()
    first = await env.notices.schedule(notice("a"))
    second = await env.notices.schedule(notice("b", not_before=now + 3600))  # too far to batch
    assert first.status is NoticeStatus.SCHEDULED
    assert (second.status, second.reason) == (NoticeStatus.DEFERRED, "budget")
    assert first.due_at is not None and second.due_at == pytest.approx(first.due_at + 7 * DAY)
    third = await env.notices.schedule(notice("c", expires_at=now + DAY, not_before=now + 7200))
    assert (third.status, third.reason) == (NoticeStatus.REFUSED, "budget")
    # calls cancelled before they dial give their budget back (the deferred one counts too)
    assert await env.notices.cancel("a", reason="moot")
    assert (await env.notices.schedule(notice("c2", expires_at=now + DAY, not_before=now + 7200))).reason == "budget"
    assert await env.notices.cancel("b", reason="moot")
    fourth = await env.notices.schedule(notice("d", expires_at=now + DAY, not_before=now + 7200))
    assert fourth.status is NoticeStatus.SCHEDULED


async def test_batched_notices_ride_one_call_and_cancel_one_by_one(env: Env) -> None:
    await env.customer()
    a = await env.notices.schedule(notice("a", text={"en": "First thing."}))
    b = await env.notices.schedule(notice("b", kind="incident", text={"en": "Second thing."}))
    assert b.status is NoticeStatus.SCHEDULED and b.reason == "batched" and b.call_id == a.call_id
    assert a.call_id is not None
    na, nb = await env.store.get(a.notice_id), await env.store.get(b.notice_id)
    assert na is not None and nb is not None
    cb = await env.calls.get(a.call_id)
    assert cb is not None and cb.prompt == f"{na.sound}&{nb.sound}" and cb.notice == "case_result,incident"
    assert len(await env.calls.list()) == 1
    # moot: the first cancelled, the call goes on with the second
    assert await env.notices.cancel("a", reason="case reopened")
    assert not await env.notices.cancel("a", reason="twice")
    cb = await env.calls.get(a.call_id)
    assert cb is not None and cb.state is CallbackState.SCHEDULED and cb.prompt == nb.sound
    assert cb.notice == "incident"
    # the last one cancelled: the call is cancelled, never dials
    assert await env.notices.cancel("b", reason="fixed")
    cb = await env.calls.get(a.call_id)
    assert cb is not None and cb.state is CallbackState.CANCELLED
    assert await env.place_due() == []
    assert env.dialer.calls == []


async def test_the_calls_outcome_reaches_the_notice_and_its_case(env: Env) -> None:
    await env.customer()
    case = await env.cases.open({"customer_id": "c1", "summary": "premium SMS charge"}, actor="agent:agent1003")
    result = await env.notices.schedule(notice(case_id=case.id))
    env.dialer.script = [DialResult(DialOutcome.NO_ANSWER), DialResult(DialOutcome.ANSWERED)]
    assert await env.place_due() == ["placed"]
    [call] = env.dialer.calls
    assert call["context"] == "ivrserver-notify" and call["variables"]["NOTIFY_ID"] == result.call_id  # type: ignore[index]
    n = await env.store.get(result.notice_id)
    assert n is not None and n.state is NoticeState.SCHEDULED and [o for o, _ in n.outcomes] == ["no_answer"]
    env.clock.offset += 3600  # past the retry backoff
    assert await env.place_due() == ["placed"]
    n = await env.store.get(result.notice_id)
    assert n is not None and n.state is NoticeState.HEARD and [o for o, _ in n.outcomes] == ["no_answer", "heard"]
    assert result.call_id is not None
    cb = await env.calls.get(result.call_id)
    assert cb is not None and cb.state is CallbackState.DONE  # customer-first: done once heard
    pressed = await env.notices.pressed(result.call_id)
    assert [p.state for p in pressed] == [NoticeState.PRESSED_1]
    events = [e for e in await env.cases.events(case.id) if e.get("kind") == "notice"]
    outcomes = [e["detail"]["outcome"] for e in events]
    assert outcomes == ["no_answer", "heard", "pressed_1"], events
    assert all(e["detail"]["notice_id"] == result.notice_id for e in events)


async def test_do_not_call_set_after_scheduling_never_rings(env: Env) -> None:
    await env.customer()
    result = await env.notices.schedule(notice())
    await env.customer(prefs=ContactPreferences(do_not_call=True))  # the customer changed their mind
    # the placer reads do-not-call as of now (preferences lookup)
    env.placer.preferences = lambda cid: _prefs(env, cid)
    assert await env.place_due() == ["gave_up"]
    assert env.dialer.calls == []
    n = await env.store.get(result.notice_id)
    assert n is not None and (n.state, n.reason) == (NoticeState.FAILED, "do_not_call")


async def _prefs(env: Env, cid: str) -> ContactPreferences | None:
    c = await customers.get_customer(env.redis, env.keys, cid)
    return c.preferences if c else None


@contextlib.asynccontextmanager
async def following(env: Env) -> AsyncIterator[CaseFollowup]:
    followup = CaseFollowup(env.redis, env.keys, consumer="t1", block_ms=100)
    followup.register("notices", env.notices.on_case_change)
    task = asyncio.create_task(followup.run())
    try:
        yield followup
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while True:
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.05)


async def test_resolving_a_case_schedules_its_result_and_reopening_cancels_it(env: Env) -> None:
    await env.customer(language="en")
    case = await env.cases.open({"customer_id": "c1", "summary": "premium SMS charge"}, actor="agent:agent1003")
    async with following(env):
        await env.cases.move(case.id, CaseStatus.RESOLVED, actor="agent:agent1003", why="charge cancelled")

        async def scheduled() -> list[str]:
            return await env.store.case_notice_keys(case.id)
        [key] = await wait_for(scheduled)
        assert key.startswith(case_result_key(case.id, ""))
        n = await env.store.get(notice_id(key))
        assert n is not None and n.state is NoticeState.SCHEDULED
        assert n.text == f"About case {case.id}: charge cancelled."
        assert n.call_id is not None
        await env.cases.move(case.id, CaseStatus.IN_PROGRESS, actor="agent:agent1003", why="bill still shows it")

        async def cancelled() -> bool:
            got = await env.store.get(n.id)
            return got is not None and got.state is NoticeState.CANCELLED
        await wait_for(cancelled)
    cb = await env.calls.get(n.call_id)
    assert cb is not None and cb.state is CallbackState.CANCELLED
    assert await env.place_due() == []
    kinds = [(e["kind"], e.get("detail", {}).get("outcome")) for e in await env.cases.events(case.id)]
    assert ("notice", "cancelled") in kinds, kinds


async def test_closing_a_case_while_its_result_notice_waits_cancels_it_as_moot(env: Env) -> None:
    """Confirmed with the customer (closed) before the call: they know the result, nobody calls."""
    await env.customer(language="en")
    case = await env.cases.open({"customer_id": "c1", "summary": "premium SMS charge"}, actor="agent:agent1003")
    other = await env.cases.open({"customer_id": "c1", "summary": "roaming bill"}, actor="agent:agent1003")
    async with following(env):
        for c in (case, other):
            await env.cases.move(c.id, CaseStatus.RESOLVED, actor="backoffice:billing", why="charge cancelled")

        async def both() -> bool:
            return all([await env.store.case_notice_keys(c.id) for c in (case, other)])
        await wait_for(both)
        [key] = await env.store.case_notice_keys(case.id)
        [kept_key] = await env.store.case_notice_keys(other.id)
        n, kept = await env.store.get(notice_id(key)), await env.store.get(notice_id(kept_key))
        assert n is not None and kept is not None and n.call_id is not None and kept.call_id == n.call_id  # batched
        await env.cases.move(case.id, CaseStatus.CLOSED, actor="agent:agent1003", why="confirmed on the phone")

        async def cancelled() -> Notice | None:
            got = await env.store.get(n.id)
            return got if got is not None and got.state is NoticeState.CANCELLED else None
        gone = await wait_for(cancelled)
    assert gone.reason == "case_closed"
    cb = await env.calls.get(n.call_id)
    assert cb is not None and cb.state is CallbackState.SCHEDULED and cb.prompt == kept.sound  # the other goes on
    still = await env.store.get(kept.id)
    assert still is not None and still.state is NoticeState.SCHEDULED
    events = [e["detail"] for e in await env.cases.events(case.id) if e.get("kind") == "notice"]
    assert [(d["outcome"], d.get("reason")) for d in events] == [("cancelled", "case_closed")], events


CALL_TEXTS = {"press": {"en": "To talk to an agent, press 1.", "zh": "如需人工服务，请按1。"},
              "bye": {"en": "Goodbye.", "zh": "再见。"}}


async def test_press_1_and_goodbye_are_said_in_the_messages_language(env: Env) -> None:
    env.notices.call_texts = CALL_TEXTS
    assert env.notices.messages is not None
    said = {(what, lang): (await env.notices.messages.render(text, {}, lang)).sound
            for what, texts in CALL_TEXTS.items() for lang, text in texts.items()}
    await env.customer("c1", language="zh")
    await env.customer("c2", language="en", phones=("15550002",))
    await env.customer("c3", language="zh", phones=("15550003",))
    zh = await env.notices.schedule(notice("zh"))
    en = await env.notices.schedule(notice("en", customer_id="c2"))
    only_en = await env.notices.schedule(notice("only-en", customer_id="c3", text={"en": "Your card is on its way."}))
    env.dialer.script = [DialResult(DialOutcome.ANSWERED)] * 3
    assert sorted(await env.place_due()) == ["placed"] * 3
    by_id = {c["variables"]["NOTIFY_ID"]: c["variables"] for c in env.dialer.calls}  # type: ignore[index]
    assert zh.call_id is not None and en.call_id is not None and only_en.call_id is not None
    assert (by_id[zh.call_id]["NOTIFY_PRESS"], by_id[zh.call_id]["NOTIFY_BYE"]) == (said["press", "zh"],
                                                                                   said["bye", "zh"])
    assert (by_id[en.call_id]["NOTIFY_PRESS"], by_id[en.call_id]["NOTIFY_BYE"]) == (said["press", "en"],
                                                                                   said["bye", "en"])
    # a Mandarin speaker whose notice has only an English text hears English throughout
    assert by_id[only_en.call_id]["NOTIFY_PRESS"] == said["press", "en"]
    for sound in said.values():
        assert (await asyncio.to_thread(Path(sound + ".sln").stat)).st_size > 1000  # synthesized for real


async def test_without_a_text_or_a_safe_name_the_dialplan_plays_its_stock_sounds(env: Env) -> None:
    env.notices.call_texts = {"press": {"en": "To talk to an agent, press 1."}, "bye": {"en": ""}}
    await env.customer("c1", language="zh")  # no Mandarin text for either
    await env.customer("c2", language="en", phones=("15550002",))
    zh = await env.notices.schedule(notice("zh"))
    en = await env.notices.schedule(notice("en", customer_id="c2", text={"en": "Done."}))
    assert en.call_id is not None
    cb = await env.calls.get(en.call_id)
    assert cb is not None and cb.press_prompt and cb.bye_prompt == ""
    # a name that would split AMI's Variable value (commas) never reaches the channel
    hostile = dataclasses.replace(cb, press_prompt="x,CB_DIAL=PJSIP/evil", version=cb.version + 1)
    assert (await env.calls.update(hostile, expected_version=cb.version, due=cb.due_at)).value == "ok"
    env.dialer.script = [DialResult(DialOutcome.ANSWERED)] * 2
    assert sorted(await env.place_due()) == ["placed"] * 2
    by_id = {c["variables"]["NOTIFY_ID"]: c["variables"] for c in env.dialer.calls}  # type: ignore[index]
    assert zh.call_id is not None
    assert "NOTIFY_PRESS" not in by_id[zh.call_id] and "NOTIFY_BYE" not in by_id[zh.call_id]
    assert "NOTIFY_PRESS" not in by_id[en.call_id] and "NOTIFY_BYE" not in by_id[en.call_id]
    assert by_id[en.call_id]["CB_DIAL"] == "PJSIP/15550002@customers"
