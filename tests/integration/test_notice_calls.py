"""Proactive notices on real calls: Asterisk 22 + SIPp customer and agent phones + Redis + ivrserver.

- a case resolved (CaseService, as REST or a back office does) → the case_result notice: the
  customer's SIPp phone rings once, Asterisk's Read plays the synthesized message (its full.log
  shows Read started our file), the phone presses 1 (RFC 4733) about 1 s into the message, long
  before it ends: the message stops there ("press 1" never plays), the `notify` FastAGI script
  routes to the case owner: agent1004's phone rings with the case on the pop (kind notification);
  the outcomes heard and pressed_1 are on the case and the notice;
- a customer who presses nothing hears the message, then "press 1" twice, then goodbye: the
  notice is heard (once), nobody's phone rings, and NotifyResult says no choice;
- outside the customer's allowed hours the notice waits for their window: nothing rings;
- a customer on do-not-call is never rung;
- a notice cancelled before it is due (the case reopened) never rings;
- a Mandarin customer hears the message, "press 1" and goodbye in Mandarin (synthesized like the
  message, not Asterisk's stock English); a NOTIFY_PRESS that is no sound name and an empty
  NOTIFY_BYE fall back to the stock vm-press + digits/1 and goodbye;
- a customer who does not answer: no_answer on the notice and its case, the retry rings again
  and is heard.
Nothing of ours is replaced: the in-process IvrServer is the one `ivrserver run` builds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from ivrserver import config
from ivrserver.domain.callbacks import AttemptOutcome, CallbackState
from ivrserver.domain.model import CaseStatus, Contact, ContactKind, ContactPreferences, Customer
from ivrserver.domain.notices import NoticeRequest, NoticeState, NoticeStatus, notice_id
from ivrserver.store import call_context, contacts
from tests.integration import test_callback_calls as cbc
from tests.integration.test_ivrserver_calls import wait_until

pytestmark = pytest.mark.integration

# the callback tests' fixtures: a fresh Asterisk, SIPp phones, an AMI witness, settings on free ports
stack = cbc.stack
watch = cbc.watch
cb_phones = cbc.cb_phones
ALL_DAY = cbc.ALL_DAY


async def test_a_resolved_case_rings_the_customer_once_and_press_1_reaches_the_case_owner(
        stack: cbc.Stack, cb_phones: cbc.CallbackPhones, watch: cbc.AmiWatch) -> None:
    customer = await stack.add_customer(Customer(id="c-vip-1", name="Zhao Gang", phones=("15550031",),
                                                 preferences=ALL_DAY))
    ports = stack.asterisk.ports
    async with cbc.in_process(stack, agi_port=ports.agi_port) as server:  # the notify script's FastAGI target
        agent = await cb_phones.agent(1004, ring_ms=300, hold_ms=1500)
        # the phone presses 1 1.5 s after answering: Answer() waits 0.5 s for the phone's first RTP
        # (SIPp sends none), so about 1 s into the message, which lasts several seconds
        answering = await cb_phones.customer(ring_ms=300, press="1", hold_ms=4000)
        await stack.agent_ready("agent1004")
        server.notices.templates = {"en": LONG_MESSAGE}
        case = await server.cases.open({"customer_id": customer.id, "summary": "premium SMS charge",
                                        "owner_agent": "agent1004"}, actor="agent:agent1004")
        offset = stack.asterisk.full_log.stat().st_size
        await server.cases.move(case.id, CaseStatus.RESOLVED, actor="backoffice:billing", why="charge cancelled")

        async def notice_keys() -> list[str]:
            return await server.notices.store.case_notice_keys(case.id)
        [key] = await wait_until(notice_keys, what="the case_result notice")
        nid = notice_id(key)

        assert (r := await answering.wait()).ok, r.describe()
        assert "answered" in r.logs
        assert (r := await agent.wait()).ok, r.describe()

        async def pressed() -> object:
            n = await server.notices.store.get(nid)
            return n if n is not None and n.state is NoticeState.PRESSED_1 else None
        n = await wait_until(pressed, what="pressed_1 on the notice")
        assert n.call_id is not None
        cb = await stack.settled(n.call_id, ("done",))
        assert [a.outcome.value for a in cb.history if a.outcome] == ["answered"]
        assert [o for o, _ in n.outcomes] == ["heard", "pressed_1"]
        events = [e["detail"]["outcome"] for e in await server.cases.events(case.id) if e["kind"] == "notice"]
        assert events == ["heard", "pressed_1"], events

        # the pop on agent1004's desk: a notification about the case
        replay = await server.pops.since("agent1004", 0)
        pops = [json.loads(frame)["data"] for _, frame in replay.frames]
        [pop] = [p for p in pops if p.get("type") == "pop"]
        assert pop["kind"] == "notification", pop
        assert pop["callback"]["case_id"] == case.id and "notice" in pop["callback"]["reason"]
        assert "Case fixed." in pop["callback"]["context"]
        assert pop["customer"]["id"] == customer.id

        async def history() -> list[Contact]:
            found = await contacts.list_timeline(stack.redis, stack.keys, customer.id)
            return [c for c in found if c.kind is ContactKind.NOTIFICATION]
        assert await wait_until(history, what="the notification in the customer's history")
        ctx_ids = {e.context_id for _, e in watch.events if (getattr(e, "context_id", "") or "").startswith("n-")}
        [ctx_id] = ctx_ids
        ctx = await call_context.load(stack.redis, stack.keys, ctx_id)
        assert ctx is not None and ctx.kind == "notification" and ctx.callback["case_id"] == case.id
    # one customer leg (ChannelId = the call's first attempt), one agent leg
    assert [leg.uniqueid for leg in watch.customer_legs()] == [f"{n.call_id}-1"]
    assert len(watch.agent_legs("agent1004")) == 1
    text = await asyncio.to_thread(_read_from, stack.asterisk.full_log, offset)
    # Read (not Playback) started the notice's own file, and the key pressed during it ended the
    # prompt there: "press 1" after the message never started
    [read] = re.findall(r'Read\("PJSIP/customers-[^"]*", "([^"]*)"\)', text)
    assert cb.press_prompt and "msg-" in cb.press_prompt  # "press 1" synthesized in the message's language
    assert read == f"NOTIFY_CHOICE,{n.sound}&{cb.press_prompt},1,,1,5", read
    assert "Playback(" not in text.split("notify?id=")[0]
    assert f"Playing '{n.sound}." in text, f"Read did not play {n.sound} ({stack.asterisk.full_log})"
    assert f"Playing '{cb.press_prompt}." not in text, "the message played to its end: 1 was not taken during it"
    # so 1 s in is well before its end
    assert await asyncio.to_thread(_seconds, stack.asterisk.sounds_dir, n.sound) > 4.0
    assert re.search(rf'UserEvent\("PJSIP/customers-[^"]*", "NotifyResult,NOTIFY_ID: {n.call_id},Choice: 1"\)',
                     text), "no NotifyResult with Choice 1"
    assert "notify?id=" in text


async def test_a_customer_who_presses_nothing_hears_the_message_once_and_nobody_rings(
        stack: cbc.Stack, cb_phones: cbc.CallbackPhones, watch: cbc.AmiWatch) -> None:
    customer = await stack.add_customer(Customer(id="c-quiet-1", name="Lu Yan", phones=("15550035",),
                                                 preferences=ALL_DAY))
    async with cbc.in_process(stack) as server:
        agent = await cb_phones.agent(1004, ring_ms=300, hold_ms=500, timeout=40)
        await stack.agent_ready("agent1004")
        # listens to everything: message, "press 1" twice (5 s each), goodbye; Asterisk hangs up
        answering = await cb_phones.customer(ring_ms=300, hold_ms=20000, timeout=40)
        offset = stack.asterisk.full_log.stat().st_size
        result = await server.notices.schedule(NoticeRequest(key="t-quiet", customer_id=customer.id,
                                                             kind="case_result",
                                                             text={"en": "Your card is on its way."}))
        assert result.status is NoticeStatus.SCHEDULED and result.call_id is not None
        assert (r := await answering.wait()).ok, r.describe()
        assert "answered" in r.logs
        cb = await stack.settled(result.call_id, ("done",))
        assert [a.outcome.value for a in cb.history if a.outcome] == ["answered"]
        n = await server.notices.store.get(result.notice_id)
        assert n is not None and n.state is NoticeState.HEARD and [o for o, _ in n.outcomes] == ["heard"]
    text = await asyncio.to_thread(_read_from, stack.asterisk.full_log, offset)
    assert f"Playing '{n.sound}." in text
    assert cb.press_prompt and cb.bye_prompt
    assert text.count(f"Playing '{cb.press_prompt}.") == 2, "the message then 'press 1' twice"
    assert text.count(f"Playing '{n.sound}.") == 1, "the message is not repeated"
    assert re.search(rf'NotifyResult,NOTIFY_ID: {result.call_id},Choice: "\)', text), "no NotifyResult without a choice"
    assert "notify?id=" not in text and f"Playing '{cb.bye_prompt}." in text
    assert "Playing 'vm-press." not in text and "Playing 'goodbye." not in text  # ours, not the stock English
    assert watch.agent_legs("agent1004") == []
    assert [leg.uniqueid for leg in watch.customer_legs()] == [f"{result.call_id}-1"]
    await agent.kill()


LONG_MESSAGE = ("Case fixed. We cancelled the premium SMS charge of thirty yuan on your bill of last month, and "
                "the refund reaches your account within three working days. Thank you for your patience.")


def _seconds(sounds: Path, sound: str) -> float:
    """Length of a synthesized message (a name under Asterisk's sounds or a path): 8 kHz 16-bit
    signed linear (.sln)."""
    return (sounds / f"{sound}.sln").stat().st_size / 16000


def _read_from(path: object, offset: int) -> str:
    with open(path, "rb") as log:  # type: ignore[call-overload]
        log.seek(offset)
        return log.read().decode("utf-8", "replace")


async def test_outside_hours_it_waits_do_not_call_and_cancelled_never_ring(
        stack: cbc.Stack, cb_phones: cbc.CallbackPhones, watch: cbc.AmiWatch) -> None:
    now = time.time()
    tz = cbc._zone_where_it_is_noon(now)
    evening = ContactPreferences(timezone=tz.key, allowed_from="20:00", allowed_until="21:00")
    opening = datetime.fromtimestamp(now, tz).replace(hour=20, minute=0, second=0, microsecond=0).timestamp()
    late = await stack.add_customer(Customer(id="c-eve-2", name="Sun Li", phones=("15550032",), preferences=evening))
    dnc = await stack.add_customer(Customer(id="c-dnc-1", name="Qin Hao", phones=("15550033",),
                                            preferences=ContactPreferences(timezone="UTC", allowed_from="00:00",
                                                                           allowed_until="24:00", do_not_call=True)))
    moot = await stack.add_customer(Customer(id="c-moot-1", name="Ma Li", phones=("15550034",), preferences=ALL_DAY))
    async with cbc.in_process(stack) as server:
        ringing = await cb_phones.customer(ring_ms=300, hold_ms=500, timeout=30)
        text = {"en": "Your card renewal is done."}
        waits = await server.notices.schedule(NoticeRequest(key="t-late", customer_id=late.id, kind="case_result",
                                                            text=text))
        assert waits.status is NoticeStatus.SCHEDULED and waits.due_at == pytest.approx(opening)
        refused = await server.notices.schedule(NoticeRequest(key="t-dnc", customer_id=dnc.id, kind="case_result",
                                                              text=text))
        assert (refused.status, refused.reason) == (NoticeStatus.REFUSED, "do_not_call")
        soon = await server.notices.schedule(NoticeRequest(key="t-moot", customer_id=moot.id, kind="case_result",
                                                           text=text, not_before=time.time() + 3))
        assert soon.status is NoticeStatus.SCHEDULED and soon.call_id is not None
        assert await server.notices.cancel("t-moot", reason="case reopened")
        await asyncio.sleep(5.0)  # past the cancelled one's due time: several scheduler rounds
        cancelled = await stack.store.get(soon.call_id)
        assert cancelled is not None and cancelled.state is CallbackState.CANCELLED and cancelled.attempts == 0
        assert waits.call_id is not None
        waiting = await stack.store.get(waits.call_id)
        assert waiting is not None and waiting.state is CallbackState.SCHEDULED and waiting.attempts == 0
        assert watch.customer_legs() == []
        assert ringing.process.returncode is None  # the customer's phone never rang


async def test_a_mandarin_customer_hears_the_message_press_1_and_goodbye_in_mandarin(
        stack: cbc.Stack, cb_phones: cbc.CallbackPhones, watch: cbc.AmiWatch) -> None:
    """Not Asterisk's stock English after a Mandarin message: "press 1" and "goodbye" are the
    notices.press_zh / bye_zh texts synthesized like the message, passed as NOTIFY_PRESS and
    NOTIFY_BYE through AMI Originate, played by [ivrserver-notify]."""
    customer = await stack.add_customer(Customer(id="c-zh-1", name="Wang Fang", phones=("15550036",), language="zh",
                                                 preferences=ALL_DAY))
    texts = config.NoticeSettings()
    async with cbc.in_process(stack) as server:
        assert server.notices.messages is not None
        said = {key: (await server.notices.messages.render(text, {}, lang)).sound for key, text, lang in (
            ("press_zh", texts.press_zh, "zh"), ("bye_zh", texts.bye_zh, "zh"), ("press_en", texts.press_en, "en"))}
        # listens to everything: message, "press 1" twice (5 s each after it), goodbye; Asterisk hangs up
        answering = await cb_phones.customer(ring_ms=300, hold_ms=35000, timeout=60)
        offset = stack.asterisk.full_log.stat().st_size
        result = await server.notices.schedule(NoticeRequest(
            key="t-zh", customer_id=customer.id, kind="case_result",
            text={"en": "Your premium SMS charge was cancelled.", "zh": "您的短信扣费已取消。"}))
        assert result.status is NoticeStatus.SCHEDULED and result.call_id is not None
        assert (r := await answering.wait()).ok, r.describe()
        cb = await stack.settled(result.call_id, ("done",))
        n = await server.notices.store.get(result.notice_id)
        assert n is not None and n.language == "zh" and n.state is NoticeState.HEARD
    assert (cb.press_prompt, cb.bye_prompt) == (said["press_zh"], said["bye_zh"])
    text = await asyncio.to_thread(_read_from, stack.asterisk.full_log, offset)
    [read] = re.findall(r'Read\("PJSIP/customers-[^"]*", "([^"]*)"\)', text)[:1]
    assert read == f"NOTIFY_CHOICE,{n.sound}&{said['press_zh']},1,,1,5", read
    assert text.count(f"Playing '{n.sound}.") == 1, f"the Mandarin message ({stack.asterisk.full_log})"
    assert text.count(f"Playing '{said['press_zh']}.") == 2, "Mandarin 'press 1' after it, then once again"
    assert f"Playing '{said['bye_zh']}." in text, "Mandarin goodbye"
    for english in ("vm-press", "digits/1", "goodbye", said["press_en"]):
        assert f"Playing '{english}." not in text, english
    assert [leg.uniqueid for leg in watch.customer_legs()] == [f"{result.call_id}-1"]


async def test_no_answer_is_noted_and_retried_until_the_customer_hears_it(
        stack: cbc.Stack, cb_phones: cbc.CallbackPhones, watch: cbc.AmiWatch) -> None:
    customer = await stack.add_customer(Customer(id="c-na-2", name="Xu Min", phones=("15550037",),
                                                 preferences=ALL_DAY))
    async with cbc.in_process(stack) as server:
        # notices.ring_seconds is at least 5 and the retry backoff is not a setting: both shortened
        # on the running placer, as test_callback_calls does for callbacks
        placer = server.scheduler.placer
        placer.customer_ring_seconds = 3
        placer.policy = dataclasses.replace(placer.policy, retry_base={
            AttemptOutcome.NO_ANSWER: 4.0, AttemptOutcome.BUSY: 4.0, AttemptOutcome.FAILED: 4.0})
        ringing = await cb_phones.customer_noanswer()
        case = await server.cases.open({"customer_id": customer.id, "summary": "premium SMS charge"},
                                       actor="agent:agent1004")
        result = await server.notices.schedule(NoticeRequest(key="t-na", customer_id=customer.id, kind="case_result",
                                                             text={"en": "Your card is on its way."}, case_id=case.id))
        assert result.status is NoticeStatus.SCHEDULED and result.call_id is not None
        assert (r := await ringing.wait()).ok, r.describe()  # rang 3 s, cancelled by Asterisk
        waiting = await stack.settled(result.call_id, ("retry_wait", "done", "failed"))
        assert waiting.state is CallbackState.RETRY_WAIT, waiting
        assert [a.outcome for a in waiting.history] == [AttemptOutcome.NO_ANSWER]

        async def no_answer_noted() -> list[str]:
            found = [e["detail"]["outcome"] for e in await server.cases.events(case.id) if e["kind"] == "notice"]
            return found if found else []
        assert await wait_until(no_answer_noted, what="no_answer on the case") == ["no_answer"]
        n = await server.notices.store.get(result.notice_id)
        assert n is not None and n.state is NoticeState.SCHEDULED and n.due_at == pytest.approx(waiting.due_at)

        answering = await cb_phones.customer(ring_ms=300, hold_ms=1000)  # the retry: answered
        assert (r := await answering.wait()).ok, r.describe()
        final = await stack.settled(result.call_id, ("done", "failed"))

        async def heard() -> object:
            got = await server.notices.store.get(result.notice_id)
            return got if got is not None and got.state is NoticeState.HEARD else None
        n = await wait_until(heard, what="heard on the notice")
        events = [e["detail"] for e in await server.cases.events(case.id) if e["kind"] == "notice"]
    assert final.state is CallbackState.DONE
    assert [a.outcome for a in final.history] == [AttemptOutcome.NO_ANSWER, AttemptOutcome.ANSWERED]
    assert waiting.due_at is not None and final.history[1].started_at >= waiting.due_at - 0.01
    assert [o for o, _ in n.outcomes] == ["no_answer", "heard"]
    assert [(d["outcome"], d.get("attempt")) for d in events] == [("no_answer", 1), ("heard", 2)], events
    assert [leg.uniqueid for leg in watch.customer_legs()] == [f"{result.call_id}-1", f"{result.call_id}-2"]


async def test_without_a_well_formed_press_1_or_goodbye_the_dialplan_plays_the_stock_english(
        stack: cbc.Stack, cb_phones: cbc.CallbackPhones, watch: cbc.AmiWatch) -> None:
    """[ivrserver-notify]'s own check (the same REGEX as NOTIFY_PROMPT's): a NOTIFY_PRESS that is
    not a sound name (a path with dots) and an empty NOTIFY_BYE play Asterisk's vm-press + digits/1
    and goodbye. Sent by ivrserver's AMI client as the dialer would, without the placer's filter."""
    async with cbc.in_process(stack) as server:
        assert server.notices.messages is not None
        message = (await server.notices.messages.render("Your card is on its way.", {}, "en")).sound
        answering = await cb_phones.customer(ring_ms=300, hold_ms=25000, timeout=45)
        offset = stack.asterisk.full_log.stat().st_size
        response = await server.ami.originate(
            channel="PJSIP/15550038@customers", context="ivrserver-notify", exten="s", channel_id="ntc-stock-1",
            variables={"NOTIFY_ID": "ntc-stock", "NOTIFY_PROMPT": message, "NOTIFY_PRESS": "../../../etc/passwd",
                       "NOTIFY_BYE": ""}, timeout_s=10)
        assert response.success, response
        assert (r := await answering.wait()).ok, r.describe()
    text = await asyncio.to_thread(_read_from, stack.asterisk.full_log, offset)
    [read] = re.findall(r'Read\("PJSIP/customers-[^"]*", "([^"]*)"\)', text)[:1]
    assert read == f"NOTIFY_CHOICE,{message}&vm-press&digits/1,1,,1,5", read
    assert text.count("Playing 'vm-press.") == 2 and "Playing 'goodbye." in text, stack.asterisk.full_log
    assert "Playing '../" not in text and "passwd" not in "".join(re.findall(r"Playing '[^']*'", text))
