"""A notice call's last look before it dials, on a real Redis (issue 18: "never an unwanted one").

What the customer said after the notice was scheduled counts at dial time, not only do-not-call:
consent for the notice's kind withdrawn (the `notices` attribute) → that notice is cancelled
`consent_withdrawn` and never played (a batched call goes on with the others, a call left with
none is cancelled and never dials, its budget slot given back); allowed hours or time zone changed
→ the call waits for the new opening (each notice noted `deferred` with the new time), a batched
notice whose own expiry comes first fails `expired`, and a call with no opening left before its
latest time gives up `window_closed`. The placer, the notice service, the case service and the
message synthesis are the real ones (test_notices' Env); only the Dialer port is the recording
double (AMI Originate is tested on a real Asterisk in tests/integration/test_notice_calls.py).
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ivrserver.domain.callbacks import CallbackState
from ivrserver.domain.model import ContactPreferences
from ivrserver.domain.notices import NoticeState, NoticeStatus
from ivrserver.services.callbacks import DialOutcome, DialResult
from tests.test_notices import OPEN, Env, _prefs, env, notice

__all__ = ["env"]  # the fixture, re-used


def wired(e: Env) -> Env:
    """The placer as IvrServer builds it: preferences as of now, and the notices' last look."""
    e.placer.preferences = lambda cid: _prefs(e, cid)
    e.placer.before_dial = e.notices.before_dial
    return e


def zone_at(hour: int, now: float) -> ZoneInfo:
    """A fixed-offset zone whose local time is now between hour:00 and hour:59."""
    utc = datetime.fromtimestamp(now, ZoneInfo("UTC")).hour
    for offset in range(-12, 15):
        if (utc + offset) % 24 == hour:
            return ZoneInfo("Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}")  # Etc/GMT-8 is UTC+8
    raise AssertionError("unreachable")


def local(now: float, tz: ZoneInfo, hour: int) -> float:
    return datetime.fromtimestamp(now, tz).replace(hour=hour, minute=0, second=0, microsecond=0).timestamp()


async def test_consent_withdrawn_after_scheduling_cancels_the_call_before_it_dials(env: Env) -> None:
    wired(env)
    await env.customer()
    case = await env.cases.open({"customer_id": "c1", "summary": "premium SMS charge"}, actor="agent:agent1003")
    result = await env.notices.schedule(notice(case_id=case.id))
    assert result.status is NoticeStatus.SCHEDULED and result.call_id is not None
    assert await env.store.counted("c1", 0) != []
    await env.customer(attributes={"notices": "-case_result"})  # "no more calls about my cases"
    assert await env.place_due() == ["cancelled"]
    assert env.dialer.calls == []
    n = await env.store.get(result.notice_id)
    assert n is not None and (n.state, n.reason) == (NoticeState.CANCELLED, "consent_withdrawn")
    cb = await env.calls.get(result.call_id)
    assert cb is not None and cb.state is CallbackState.CANCELLED and cb.attempts == 0
    assert "consent_withdrawn" in cb.final_reason
    assert await env.store.counted("c1", 0) == []  # never dialed: the budget slot is given back
    events = [e["detail"] for e in await env.cases.events(case.id) if e.get("kind") == "notice"]
    assert [(d["outcome"], d.get("reason")) for d in events] == [("cancelled", "consent_withdrawn")], events
    assert await env.place_due() == []  # nothing left to claim


async def test_a_batched_call_drops_only_the_notice_no_longer_wanted(env: Env) -> None:
    wired(env)
    await env.customer(attributes={"notices": "card_expiry"})
    a = await env.notices.schedule(notice("a", text={"en": "Your case is done."}))
    b = await env.notices.schedule(notice("b", kind="card_expiry", text={"en": "Your card expires soon."}))
    assert b.reason == "batched" and b.call_id == a.call_id and a.call_id is not None
    na, nb = await env.store.get(a.notice_id), await env.store.get(b.notice_id)
    assert na is not None and nb is not None and na.sound != nb.sound
    await env.customer(attributes={"notices": "-card_expiry"})  # no card reminders any more
    env.dialer.script = [DialResult(DialOutcome.ANSWERED)]
    assert await env.place_due() == ["placed"]
    [call] = env.dialer.calls
    assert call["variables"]["NOTIFY_PROMPT"] == na.sound  # type: ignore[index]
    cb = await env.calls.get(a.call_id)
    assert cb is not None and cb.prompt == na.sound and cb.notice == "case_result" and cb.attempts == 1
    na, nb = await env.store.get(a.notice_id), await env.store.get(b.notice_id)
    assert na is not None and na.state is NoticeState.HEARD
    assert nb is not None and (nb.state, nb.reason) == (NoticeState.CANCELLED, "consent_withdrawn")
    assert await env.store.call_notices(a.call_id) == [a.notice_id]  # "press 1" finds only what played
    assert [p.id for p in await env.notices.pressed(a.call_id)] == [a.notice_id]


@pytest.mark.parametrize("change", ["hours", "time zone"])
async def test_hours_changed_after_scheduling_the_call_waits_for_the_new_opening(env: Env, change: str) -> None:
    wired(env)
    now = time.time()
    noon = zone_at(12, now)
    if change == "hours":  # from "any time" to the evening
        before, after = dataclasses.replace(OPEN, timezone=noon.key), ContactPreferences(
            timezone=noon.key, allowed_from="20:00", allowed_until="21:00")
        opening = local(now, noon, 20)
    else:  # same hours, but they moved to where it is 02:00 now
        night = zone_at(2, now)
        before = ContactPreferences(timezone=noon.key, allowed_from="09:00", allowed_until="20:00")
        after = dataclasses.replace(before, timezone=night.key)
        opening = local(now, night, 9)
    await env.customer(prefs=before)
    case = await env.cases.open({"customer_id": "c1", "summary": "premium SMS charge"}, actor="agent:agent1003")
    kept = await env.notices.schedule(notice("kept", case_id=case.id))
    brief = await env.notices.schedule(notice("brief", kind="incident", text={"en": "The outage is over."},
                                              expires_at=now + 3600))
    assert kept.status is NoticeStatus.SCHEDULED and brief.call_id == kept.call_id and kept.call_id is not None
    await env.customer(prefs=after)
    assert await env.place_due() == ["waiting"]
    assert env.dialer.calls == []
    cb = await env.calls.get(kept.call_id)
    assert cb is not None and cb.state is CallbackState.SCHEDULED and cb.due_at == pytest.approx(opening)
    nk, nb = await env.store.get(kept.notice_id), await env.store.get(brief.notice_id)
    assert nk is not None and nk.state is NoticeState.SCHEDULED and nk.due_at == pytest.approx(opening)
    assert [o for o, _ in nk.outcomes] == ["deferred"]
    assert cb.prompt == nk.sound and cb.notice == "case_result"  # the outage notice would be stale by then
    assert nb is not None and (nb.state, nb.reason) == (NoticeState.FAILED, "expired")
    events = [e["detail"] for e in await env.cases.events(case.id) if e.get("kind") == "notice"]
    assert [(d["outcome"], d.get("reason")) for d in events] == [("deferred", "calling_hours")], events
    assert events[0]["due_at"] == pytest.approx(opening)
    # at the opening it dials, with what is left
    env.clock.offset = opening - time.time() + 1
    env.dialer.script = [DialResult(DialOutcome.ANSWERED)]
    assert await env.place_due() == ["placed"]
    [call] = env.dialer.calls
    assert call["variables"]["NOTIFY_PROMPT"] == nk.sound  # type: ignore[index]


async def test_no_opening_left_before_its_latest_time_ends_the_notice_with_a_reason(env: Env) -> None:
    wired(env)
    now = time.time()
    noon = zone_at(12, now)
    await env.customer(prefs=dataclasses.replace(OPEN, timezone=noon.key))
    result = await env.notices.schedule(notice(expires_at=now + 3600))
    assert result.status is NoticeStatus.SCHEDULED and result.call_id is not None
    await env.customer(prefs=ContactPreferences(timezone=noon.key, allowed_from="20:00", allowed_until="21:00"))
    assert await env.place_due() == ["gave_up"]
    assert env.dialer.calls == []
    n = await env.store.get(result.notice_id)
    assert n is not None and (n.state, n.reason) == (NoticeState.FAILED, "window_closed")
    assert await env.store.counted("c1", 0) == []


async def test_nothing_changed_costs_no_write(env: Env) -> None:
    """The common path: consent and hours as scheduled → the record is dialed as it was."""
    wired(env)
    await env.customer()
    result = await env.notices.schedule(notice())
    assert result.call_id is not None
    before = await env.calls.get(result.call_id)
    assert before is not None
    looked = await env.notices.before_dial(before, env.clock())
    assert looked is before
