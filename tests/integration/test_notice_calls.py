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
- a notice cancelled before it is due (the case reopened) never rings.
Nothing of ours is replaced: the in-process IvrServer is the one `ivrserver run` builds.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from ivrserver.domain.callbacks import CallbackState
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
    assert read == f"NOTIFY_CHOICE,{n.sound}&vm-press&digits/1,1,,1,5", read
    assert "Playback(" not in text.split("notify?id=")[0]
    assert f"Playing '{n.sound}." in text, f"Read did not play {n.sound} ({stack.asterisk.full_log})"
    assert "Playing 'vm-press." not in text, "the message played to its end: 1 was not taken during it"
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
    assert text.count("Playing 'vm-press.") == 2, "the message then 'press 1' twice"
    assert text.count(f"Playing '{n.sound}.") == 1, "the message is not repeated"
    assert re.search(rf'NotifyResult,NOTIFY_ID: {result.call_id},Choice: "\)', text), "no NotifyResult without a choice"
    assert "notify?id=" not in text and "Playing 'goodbye." in text
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
