"""Callback policy: tables over pure functions, `now` always passed in."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from ivrserver.domain import callbacks as cbm
from ivrserver.domain.callbacks import (
    Attempt,
    AttemptOutcome,
    Callback,
    CallbackPolicy,
    CallbackState,
    GiveUp,
    InvalidTransition,
    PlaceNow,
    QueueEntry,
    QueuePlace,
    RequestInvalid,
    WaitUntil,
)
from ivrserver.domain.model import AgentState, AgentStatus, ContactPreferences

S = CallbackState
OC = AttemptOutcome
POLICY = CallbackPolicy()
ALL_DAY = CallbackPolicy(calling_from="00:00", calling_until="24:00")


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp()


def local(tz: str, y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz), fold=fold).timestamp()


def prefs(tz: str = "UTC", start: str = "09:00", end: str = "20:00", dnc: bool = False) -> ContactPreferences:
    return ContactPreferences(timezone=tz, allowed_from=start, allowed_until=end, do_not_call=dnc)


NOW = utc(2024, 6, 3, 10)  # a Monday, 10:00 UTC


def mk(state: CallbackState = S.SCHEDULED, **kw: object) -> Callback:
    base: dict[str, object] = dict(id="cb1", customer_id="c1", number="5551234", earliest=NOW,
                                   latest=NOW + 7200, created_at=NOW - 60, state=state, due_at=NOW,
                                   preferences=prefs())
    base.update(kw)
    return Callback(**base)  # type: ignore[arg-type]


def attempts(*outcomes: AttemptOutcome) -> dict[str, object]:
    hist = tuple(Attempt(number=i + 1, started_at=NOW - 1000 + i, outcome=o, ended_at=NOW - 900 + i)
                 for i, o in enumerate(outcomes))
    return {"history": hist, "attempts": len(hist)}


# ----------------------------------------------------------------------------- calling hours

@pytest.mark.parametrize(("case", "t", "p", "policy", "expected"), [
    ("before the window opens", utc(2024, 6, 3, 7), prefs(), POLICY, utc(2024, 6, 3, 9)),
    ("inside the window", utc(2024, 6, 3, 10, 15), prefs(), POLICY, utc(2024, 6, 3, 10, 15)),
    ("last minute of the window", utc(2024, 6, 3, 19, 59), prefs(), POLICY, utc(2024, 6, 3, 19, 59)),
    ("window end is exclusive", utc(2024, 6, 3, 20), prefs(), POLICY, utc(2024, 6, 4, 9)),
    ("company hours narrower than customer's", utc(2024, 6, 3, 7, 30), prefs(start="06:00", end="23:00"),
     POLICY, utc(2024, 6, 3, 8)),
    ("company closes first", utc(2024, 6, 3, 21, 30), prefs(start="06:00", end="23:00"), POLICY,
     utc(2024, 6, 4, 8)),
    ("Shanghai morning", utc(2024, 6, 1, 0, 30), prefs("Asia/Shanghai"), POLICY, utc(2024, 6, 1, 1)),
    ("Shanghai evening rolls to next local day", utc(2024, 6, 1, 12, 30), prefs("Asia/Shanghai"), POLICY,
     utc(2024, 6, 2, 1)),
    ("Kolkata half-hour offset", utc(2024, 1, 1, 3), prefs("Asia/Kolkata"), POLICY, utc(2024, 1, 1, 3, 30)),
    ("Los Angeles: UTC date is already tomorrow", utc(2024, 6, 4, 2), prefs("America/Los_Angeles"), POLICY,
     utc(2024, 6, 4, 2)),
    ("New York spring forward: Sunday 09:00 is EDT (13:00Z, not 14:00Z)",
     local("America/New_York", 2024, 3, 9, 21), prefs("America/New_York"), POLICY, utc(2024, 3, 10, 13)),
    ("New York fall back: Sunday 09:00 is EST (14:00Z, not 13:00Z)",
     local("America/New_York", 2024, 11, 2, 21), prefs("America/New_York"), POLICY, utc(2024, 11, 3, 14)),
    ("window opening inside the spring-forward gap opens at the end of the gap",
     utc(2024, 3, 10, 5), prefs("America/New_York", "02:30", "20:00"), ALL_DAY, utc(2024, 3, 10, 7)),
    ("same hours on a normal day open at 02:30 local",
     utc(2024, 3, 17, 4), prefs("America/New_York", "02:30", "20:00"), ALL_DAY, utc(2024, 3, 17, 6, 30)),
    ("fall-back: the repeated hour does not reopen a closed window",
     utc(2024, 11, 3, 5, 45), prefs("America/New_York", "01:00", "01:30"), ALL_DAY, utc(2024, 11, 4, 6)),
    ("fall-back: window opens at the first 01:00 (EDT)",
     utc(2024, 11, 3, 4), prefs("America/New_York", "01:00", "01:30"), ALL_DAY, utc(2024, 11, 3, 5)),
    ("London spring forward: 01:30 does not exist, opens 02:00 BST",
     utc(2024, 3, 31, 0), prefs("Europe/London", "01:30", "20:00"), ALL_DAY, utc(2024, 3, 31, 1)),
    ("Sydney fall back (April): 09:00 AEST = 23:00Z the day before",
     utc(2024, 4, 6, 23), prefs("Australia/Sydney"), POLICY, utc(2024, 4, 6, 23)),
    ("until 24:00 is the end of the local day", utc(2024, 6, 3, 23, 30), prefs(start="22:00", end="24:00"),
     ALL_DAY, utc(2024, 6, 3, 23, 30)),
    ("no overlap with company hours", utc(2024, 6, 3, 7), prefs(start="21:30", end="23:00"), POLICY, None),
])
def test_next_allowed_time(case: str, t: float, p: ContactPreferences, policy: CallbackPolicy,
                           expected: float | None) -> None:
    assert cbm.next_allowed_time(t, p, policy) == expected, case


@pytest.mark.parametrize(("t", "p", "expected"), [
    (utc(2024, 6, 3, 10), prefs(), True),
    (utc(2024, 6, 3, 8, 59), prefs(), False),
    (local("America/New_York", 2024, 3, 10, 8, 59), prefs("America/New_York"), False),
    (local("America/New_York", 2024, 3, 10, 9, 0), prefs("America/New_York"), True),
    (local("Asia/Tokyo", 2024, 6, 3, 20, 0), prefs("Asia/Tokyo"), False),
])
def test_is_callable_at(t: float, p: ContactPreferences, expected: bool) -> None:
    assert cbm.is_callable_at(t, p, POLICY) is expected


@pytest.mark.parametrize(("day", "hhmm", "tz", "expected"), [
    ((2024, 3, 10), (2, 30), "America/New_York", utc(2024, 3, 10, 7)),  # gap → end of gap
    ((2024, 11, 3), (1, 30), "America/New_York", utc(2024, 11, 3, 5, 30)),  # ambiguous → first
    ((2024, 6, 3), (24, 0), "UTC", utc(2024, 6, 4)),
    ((2024, 10, 6), (2, 15), "Australia/Sydney", utc(2024, 10, 5, 16)),  # Sydney gap 02:00-03:00 → 03:00
])
def test_first_instant_at(day: tuple[int, int, int], hhmm: tuple[int, int], tz: str, expected: float) -> None:
    from datetime import date
    assert cbm.first_instant_at(date(*day), hhmm, ZoneInfo(tz)) == expected


# ----------------------------------------------------------------------------- planning an attempt

@pytest.mark.parametrize(("case", "cb", "p", "now", "expected"), [
    ("due, inside hours", mk(), prefs(), NOW, PlaceNow()),
    ("do-not-call", mk(), prefs(dnc=True), NOW, GiveUp("do_not_call")),
    ("before calling hours", mk(due_at=utc(2024, 6, 3, 6), earliest=utc(2024, 6, 3, 6),
                                latest=utc(2024, 6, 3, 12)), prefs(), utc(2024, 6, 3, 6),
     WaitUntil(utc(2024, 6, 3, 9), "outside calling hours")),
    ("claimed before its due time", mk(due_at=NOW + 30), prefs(), NOW, WaitUntil(NOW + 30, "not due yet")),
    ("window already over", mk(latest=NOW - 1), prefs(), NOW, GiveUp("window_closed")),
    ("window ends before hours open", mk(earliest=utc(2024, 6, 3, 21), latest=utc(2024, 6, 3, 23),
                                         due_at=utc(2024, 6, 3, 21)), prefs(), utc(2024, 6, 3, 21),
     GiveUp("window_closed")),
    ("customer attempts used up", mk(**attempts(OC.BUSY, OC.NO_ANSWER, OC.FAILED), state=S.RETRY_WAIT),
     prefs(), NOW, GiveUp("max_attempts")),
    ("agent-leg failures don't use customer attempts",
     mk(**attempts(OC.BUSY, OC.AGENT_UNAVAILABLE, OC.AGENT_UNAVAILABLE), state=S.RETRY_WAIT), prefs(), NOW,
     PlaceNow()),
    ("all dials used up", mk(**attempts(*[OC.AGENT_UNAVAILABLE] * 10), state=S.RETRY_WAIT), prefs(), NOW,
     GiveUp("max_dials")),
    ("no overlapping hours", mk(), prefs(start="22:00", end="23:00"), NOW, GiveUp("no_calling_hours")),
])
def test_plan_attempt(case: str, cb: Callback, p: ContactPreferences, now: float, expected: object) -> None:
    assert cbm.plan_attempt(cb, p, POLICY, now) == expected, case


@pytest.mark.parametrize("state", [S.REQUESTED, S.DIALING, S.CONNECTED, S.DONE, S.FAILED, S.CANCELLED])
def test_plan_attempt_refuses_callbacks_that_are_not_waiting(state: CallbackState) -> None:
    with pytest.raises(InvalidTransition):
        cbm.plan_attempt(mk(state=state), prefs(), POLICY, NOW)


# ----------------------------------------------------------------------------- retries

def dialing(*previous: AttemptOutcome, **kw: object) -> Callback:
    cb = mk(state=S.RETRY_WAIT if previous else S.SCHEDULED, **attempts(*previous), **kw)
    return cbm.start_attempt(cb, NOW, "agent1001")


@pytest.mark.parametrize(("case", "previous", "outcome", "kw", "state", "due", "reason"), [
    ("answered → connected", (), OC.ANSWERED, {}, S.CONNECTED, None, ""),
    ("first busy: 5 min", (), OC.BUSY, {}, S.RETRY_WAIT, NOW + 300, ""),
    ("second busy: doubled", (OC.BUSY,), OC.BUSY, {}, S.RETRY_WAIT, NOW + 600, ""),
    ("no answer: 15 min", (), OC.NO_ANSWER, {}, S.RETRY_WAIT, NOW + 900, ""),
    ("failure: 10 min", (), OC.FAILED, {}, S.RETRY_WAIT, NOW + 600, ""),
    ("agent did not answer: 30 s", (), OC.AGENT_UNAVAILABLE, {}, S.RETRY_WAIT, NOW + 30, ""),
    ("backoff capped at max delay", (OC.NO_ANSWER, OC.AGENT_UNAVAILABLE), OC.NO_ANSWER,
     {"latest": NOW + 86400}, S.RETRY_WAIT, NOW + 1800, ""),
    ("third customer attempt fails → final", (OC.BUSY, OC.NO_ANSWER), OC.BUSY, {}, S.FAILED, None,
     "max_attempts"),
    ("retry would fall after the window", (), OC.NO_ANSWER, {"latest": NOW + 600}, S.FAILED, None,
     "window_closed"),
    ("retry lands after hours → next morning", (), OC.NO_ANSWER,
     {"latest": NOW + 2 * 86400, "preferences": prefs(end="10:10")}, S.RETRY_WAIT, utc(2024, 6, 4, 9), ""),
    ("outcome unknown → final, never re-dialed", (), OC.UNKNOWN, {}, S.FAILED, None, "outcome_unknown"),
])
def test_after_attempt(case: str, previous: tuple[AttemptOutcome, ...], outcome: AttemptOutcome,
                       kw: dict[str, object], state: CallbackState, due: float | None, reason: str) -> None:
    cb = dialing(*previous, **kw)
    after = cbm.after_attempt(cb, outcome, cb.preferences, POLICY, NOW, detail="x")
    assert (after.state, after.due_at, after.final_reason) == (state, due, reason), case
    assert after.history[-1].outcome is outcome and after.history[-1].ended_at == NOW
    assert after.attempts == len(previous) + 1


def test_backoff_cap_applies() -> None:
    policy = dataclasses.replace(POLICY, max_retry_delay=1000.0)
    cb = dialing(OC.NO_ANSWER, latest=NOW + 86400)
    after = cbm.after_attempt(cb, OC.NO_ANSWER, cb.preferences, policy, NOW)
    assert after.due_at == NOW + 1000


def test_do_not_call_set_during_attempt_stops_retries() -> None:
    cb = dialing()
    after = cbm.after_attempt(cb, OC.BUSY, prefs(dnc=True), POLICY, NOW)
    assert (after.state, after.final_reason) == (S.FAILED, "do_not_call")


# ----------------------------------------------------------------------------- agents

@pytest.mark.parametrize(("case", "preferred", "pref_free", "free", "now", "expected"), [
    ("preferred free", "a1", True, ["a2"], NOW, "a1"),
    ("preferred busy, within grace: wait", "a1", False, ["a2", "a3"], NOW + 60, None),
    ("preferred busy, grace over: longest idle", "a1", False, ["a2", "a3"], NOW + 120, "a2"),
    ("grace over, preferred not listed twice", "a1", False, ["a1", "a3"], NOW + 121, "a3"),
    ("no preferred: longest idle at once", None, False, ["a3", "a2"], NOW, "a3"),
    ("nobody free: wait", None, False, [], NOW, None),
    ("grace over, nobody free: wait", "a1", False, [], NOW + 500, None),
])
def test_choose_agent(case: str, preferred: str | None, pref_free: bool, free: list[str], now: float,
                      expected: str | None) -> None:
    choice = cbm.choose_agent(preferred, pref_free, free, due=NOW, now=now, grace_seconds=120)
    assert choice.agent_id == expected, case


def test_longest_idle_first_orders_ready_agents_by_ready_since() -> None:
    statuses = [AgentStatus("a1", AgentState.READY, 300.0), AgentStatus("a2", AgentState.ON_CALL, 10.0),
                AgentStatus("a3", AgentState.READY, 100.0), AgentStatus("a4", AgentState.READY, 100.0),
                AgentStatus("a5", AgentState.PAUSED, 1.0), AgentStatus("a6", AgentState.READY, 50.0)]
    assert cbm.longest_idle_first(statuses) == ["a6", "a3", "a4", "a1"]
    assert cbm.longest_idle_first(statuses, members={"a1", "a4"}) == ["a4", "a1"]


# ----------------------------------------------------------------------------- virtual hold

PLACE = QueuePlace(queue="general", joined_at=100.0)


@pytest.mark.parametrize(("case", "live", "free", "ready"), [
    ("empty queue, an agent free", [], 1, True),
    ("empty queue, nobody free", [], 0, False),
    ("two earlier callers, one agent", [QueueEntry("x", 90.0), QueueEntry("y", 95.0)], 1, False),
    ("two earlier callers, two agents", [QueueEntry("x", 90.0), QueueEntry("y", 95.0)], 2, False),
    ("two earlier callers, three agents", [QueueEntry("x", 90.0), QueueEntry("y", 95.0)], 3, True),
    ("earlier caller served, one left", [QueueEntry("y", 95.0)], 1, False),
    ("later callers don't hold it back", [QueueEntry("z", 110.0), QueueEntry("w", 120.0)], 1, True),
    ("later but higher priority caller goes first", [QueueEntry("v", 150.0, priority=10)], 1, False),
    ("earlier but lower priority caller does not", [QueueEntry("l", 50.0, priority=-1)], 1, True),
    ("same join time: tie broken by id", [QueueEntry("ca", 100.0)], 1, False),
    ("same join time: tie broken by id (after)", [QueueEntry("cc", 100.0)], 1, True),
])
def test_virtual_hold_never_jumps_earlier_callers(case: str, live: list[QueueEntry], free: int,
                                                   ready: bool) -> None:
    assert cbm.virtual_hold_ready(PLACE, "cb", live, free) is ready, case


# ----------------------------------------------------------------------------- transitions

ALLOWED = {
    (S.REQUESTED, S.SCHEDULED), (S.REQUESTED, S.CANCELLED), (S.REQUESTED, S.FAILED),
    (S.SCHEDULED, S.SCHEDULED), (S.SCHEDULED, S.DIALING), (S.SCHEDULED, S.CANCELLED),
    (S.SCHEDULED, S.FAILED),
    (S.DIALING, S.CONNECTED), (S.DIALING, S.RETRY_WAIT), (S.DIALING, S.FAILED),
    (S.CONNECTED, S.DONE),
    (S.RETRY_WAIT, S.RETRY_WAIT), (S.RETRY_WAIT, S.SCHEDULED), (S.RETRY_WAIT, S.DIALING),
    (S.RETRY_WAIT, S.CANCELLED), (S.RETRY_WAIT, S.FAILED),
}


@pytest.mark.parametrize("frm", list(S))
@pytest.mark.parametrize("to", list(S))
def test_transition_matrix(frm: CallbackState, to: CallbackState) -> None:
    cb = mk(state=frm, version=4)
    if (frm, to) in ALLOWED:
        moved = cbm.transition(cb, to, NOW + 1)
        assert (moved.state, moved.version, moved.updated_at) == (to, 5, NOW + 1)
    else:
        with pytest.raises(InvalidTransition) as err:
            cbm.transition(cb, to, NOW + 1)
        assert (err.value.from_state, err.value.to_state) == (frm, to)
        assert f"cannot go from {frm.value} to {to.value}" in str(err.value)


def test_final_state_error_says_it_is_final() -> None:
    with pytest.raises(InvalidTransition, match=r"cb1: cannot go from done to cancelled \(allowed from done: "
                                                r"none, it is final\)"):
        cbm.cancel(mk(state=S.DONE), NOW)


def test_full_path_requested_to_done() -> None:
    req = cbm.validate_request({"customer_id": "c1", "number": "555 1234", "at": NOW + 60}, NOW, POLICY)
    cb = cbm.schedule(cbm.new_callback(req, "cb9", NOW, prefs()), POLICY, NOW)
    assert (cb.state, cb.due_at) == (S.SCHEDULED, NOW + 60)
    cb = cbm.start_attempt(cb, NOW + 60, "a1")
    cb = cbm.after_attempt(cb, OC.ANSWERED, prefs(), POLICY, NOW + 80)
    cb = cbm.finish(cb, NOW + 400, "resolved")
    assert (cb.state, cb.final_reason, cb.attempts) == (S.DONE, "resolved", 1)
    assert cbm.from_dict(cbm.to_dict(cb)) == cb


def test_json_round_trip_keeps_every_field() -> None:
    cb = dialing(OC.BUSY, queue_place=QueuePlace("vip", 5.0, 3), context="line1\nline2", case_id="K-1")
    assert cbm.from_dict(cbm.to_dict(cb)) == cb


# ----------------------------------------------------------------------------- request validation

GOOD = {"customer_id": "c1", "number": "+86 (10) 5555-1234", "at": NOW + 3600}


@pytest.mark.parametrize(("case", "changes", "field", "message"), [
    ("missing customer", {"customer_id": None}, "customer_id", "required"),
    ("customer with a space", {"customer_id": "c 1"}, "customer_id", "expected 1-64"),
    ("number with letters", {"number": "555-CALL"}, "number", "only digits"),
    ("number with unicode digits", {"number": "٥٥٥١٢٣٤"}, "number", "only digits"),
    ("number too short", {"number": "1"}, "number", "2 to 15 digits"),
    ("number too long", {"number": "1" * 21}, "number", "2 to 15 digits"),
    ("number withheld", {"number": "anonymous"}, "number", "withheld"),
    ("number not text", {"number": 5551234}, "number", "as text"),
    ("number with newline injection", {"number": "555\r\nAction: Originate"}, "number", "only digits"),
    ("time in the past", {"at": NOW - 3600}, "at", "in the past"),
    ("time beyond horizon", {"at": NOW + 40 * 86400}, "at", "30 days ahead"),
    ("time unparsable", {"at": "tomorrow-ish"}, "at", "expected epoch seconds"),
    ("naive ISO time", {"at": "2024-06-03T18:00:00"}, "at", "UTC offset"),
    ("boolean time", {"at": True}, "at", "boolean"),
    ("NaN time", {"at": float("nan")}, "at", "not a valid time"),
    ("both at and window", {"earliest": NOW + 60}, "at", "not both"),
    ("no time at all", {"at": None}, "at", "required"),
    ("window reversed", {"at": None, "earliest": NOW + 600, "latest": NOW + 60}, "latest", "after earliest"),
    ("window too long", {"at": None, "earliest": NOW + 60, "latest": NOW + 8 * 86400}, "latest", "7 days"),
    ("latest without earliest", {"at": None, "latest": NOW + 60}, "earliest", "required with 'latest'"),
    ("reason too long", {"reason": "x" * 501}, "reason", "at most 500"),
    ("reason with control char", {"reason": "a\x00b"}, "reason", "control character"),
    ("context too long", {"context": "x" * 2001}, "context", "at most 2000"),
    ("bad tier", {"tier": "platinum"}, "tier", "one of vip, gold, standard"),
    ("bad mode", {"mode": "robocall"}, "mode", "one of agent_first, customer_first"),
    ("bad time zone", {"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
    ("path-like time zone", {"timezone": "../../etc/passwd"}, "timezone", "unknown time zone"),
    ("bad hours", {"allowed_from": "25:00"}, "allowed_from", "HH:MM"),
    ("hours reversed", {"allowed_from": "20:00", "allowed_until": "09:00"}, "allowed_until", "after allowed_from"),
    ("unknown field", {"priority_override": 1}, "body", "unknown field(s): priority_override"),
    ("bad prompt", {"prompt": "../secret"}, "prompt", "sound file name"),
    ("queue place without join time", {"queue": "general", "at": None}, "joined_at", "required"),
])
def test_request_validation(case: str, changes: dict[str, object], field: str, message: str) -> None:
    raw = {**GOOD, **changes}
    with pytest.raises(RequestInvalid) as err:
        cbm.validate_request({k: v for k, v in raw.items() if v is not None}, NOW, POLICY)
    assert field in err.value.errors, (case, err.value.errors)
    assert message in err.value.errors[field], (case, err.value.errors)


@pytest.mark.parametrize(("raw", "earliest", "latest", "number"), [
    (GOOD, NOW + 3600, NOW + 3600 + 7200, "+861055551234"),
    ({**GOOD, "at": "+90m"}, NOW + 5400, NOW + 5400 + 7200, "+861055551234"),
    ({**GOOD, "at": "2024-06-03T18:00:00+08:00"}, utc(2024, 6, 3, 10), utc(2024, 6, 3, 12), "+861055551234"),
    ({**GOOD, "at": None, "earliest": NOW + 60, "latest": NOW + 600}, NOW + 60, NOW + 600, "+861055551234"),
    ({**GOOD, "at": NOW - 30, "number": "555.123.4567"}, NOW, NOW - 30 + 7200, "5551234567"),  # skew
])
def test_request_accepted(raw: dict[str, object], earliest: float, latest: float, number: str) -> None:
    req = cbm.validate_request({k: v for k, v in raw.items() if v is not None}, NOW, POLICY)
    assert (req.earliest, req.latest, req.number) == (earliest, latest, number)


def test_virtual_hold_request_defaults_to_now() -> None:
    raw = {"customer_id": "c1", "number": "5551234", "queue": "general", "joined_at": NOW - 100, "priority": 2}
    req = cbm.validate_request(raw, NOW, POLICY)
    assert req.queue_place == QueuePlace("general", NOW - 100, 2)
    assert (req.earliest, req.latest) == (NOW, NOW + POLICY.virtual_hold_window_seconds)


@pytest.mark.parametrize(("p", "earliest", "latest", "field", "message"), [
    (prefs(dnc=True), NOW, NOW + 7200, "customer_id", "do-not-call"),
    (prefs(start="21:30", end="23:00"), NOW, NOW + 7200, "allowed_from", "do not overlap"),
    (prefs(), utc(2024, 6, 3, 21), utc(2024, 6, 3, 23), "latest", "no calling hours in the window"),
])
def test_schedule_refuses(p: ContactPreferences, earliest: float, latest: float, field: str,
                          message: str) -> None:
    cb = mk(state=S.REQUESTED, preferences=p, earliest=earliest, latest=latest, due_at=None)
    with pytest.raises(RequestInvalid) as err:
        cbm.schedule(cb, POLICY, NOW)
    assert message in err.value.errors[field]


def test_schedule_moves_due_to_window_opening() -> None:
    cb = mk(state=S.REQUESTED, earliest=utc(2024, 6, 3, 6), latest=utc(2024, 6, 3, 12), due_at=None)
    assert cbm.schedule(cb, POLICY, utc(2024, 6, 3, 5)).due_at == utc(2024, 6, 3, 9)


@pytest.mark.parametrize("state", [S.DIALING, S.CONNECTED, S.DONE, S.FAILED, S.CANCELLED])
def test_reschedule_refused_outside_waiting_states(state: CallbackState) -> None:
    with pytest.raises(InvalidTransition):
        cbm.reschedule(mk(state=state), NOW + 60, NOW + 600, POLICY, NOW)


def test_merged_preferences_take_dnc_from_profile_only() -> None:
    req = cbm.validate_request({**GOOD, "timezone": "Asia/Shanghai", "allowed_from": "10:00"}, NOW, POLICY)
    merged = cbm.merged_preferences(req, prefs("Europe/Paris", "08:00", "18:00", dnc=True))
    assert merged == prefs("Asia/Shanghai", "10:00", "18:00", dnc=True)
