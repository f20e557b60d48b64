"""domain.callbacks.takeover: what the next holder does with an attempt a dead holder marked and
never wrote the outcome of (times passed in, no I/O)."""

from __future__ import annotations

import pytest

from ivrserver.domain.callbacks import (
    AttemptOutcome,
    CallbackMode,
    ObserverLink,
    TakeoverAction,
    marked_at,
    observed_outcome,
    takeover,
)

AF, CF = CallbackMode.AGENT_FIRST, CallbackMode.CUSTOMER_FIRST
OC = AttemptOutcome
MARK = 1000.0  # the dead holder took the marker then
NOW = 1070.0  # the next holder looks (its lease expired)
HOLDER = f"inst-a tok {MARK:.3f}"
MARGIN, FRESH = 2.0, 4.0


def link(since: float, through: float, name: str = "inst-b") -> ObserverLink:
    return ObserverLink(name, since, through)


UP_THROUGHOUT = link(900.0, NOW - 1)


@pytest.mark.parametrize(("case", "mode", "seen", "links", "action", "outcome", "ended"), [
    # observed with an outcome: write it, whatever the links say
    ("notice answered", CF, "originate:answered", [], TakeoverAction.RECORD, OC.ANSWERED, False),
    ("notice not answered → retry", CF, "originate:no_answer", [], TakeoverAction.RECORD, OC.NO_ANSWER, False),
    ("notice busy", CF, "originate:busy", [], TakeoverAction.RECORD, OC.BUSY, False),
    ("notice failed", CF, "originate:failed", [], TakeoverAction.RECORD, OC.FAILED, False),
    ("agent did not answer: customer never rung", AF, "originate:no_answer", [], TakeoverAction.RECORD,
     OC.AGENT_UNAVAILABLE, False),
    ("agent-first call over, customer answered", AF, "result:answered", [], TakeoverAction.RECORD,
     OC.ANSWERED, True),
    ("agent-first call over, customer busy", AF, "result:busy", [], TakeoverAction.RECORD, OC.BUSY, True),
    # observed without an outcome: the call happened → unknown, never re-dialed
    ("channel up, nothing more", CF, "up", [UP_THROUGHOUT], TakeoverAction.UNKNOWN, None, False),
    ("agent answered, customer leg unknown", AF, "originate:answered", [UP_THROUGHOUT], TakeoverAction.UNKNOWN,
     None, False),
    ("unreadable observation", CF, "originate:exploded", [UP_THROUGHOUT], TakeoverAction.UNKNOWN, None, False),
    ("a result on a customer-first call", CF, "result:answered", [UP_THROUGHOUT], TakeoverAction.UNKNOWN,
     None, False),
    # not observed: re-dial only on the word of an observer that watched throughout
    ("observer up since before the marker, fresh", CF, None, [UP_THROUGHOUT], TakeoverAction.REDIAL, None, False),
    ("agent-first too", AF, None, [UP_THROUGHOUT], TakeoverAction.REDIAL, None, False),
    ("no observer at all", CF, None, [], TakeoverAction.UNKNOWN, None, False),
    ("observer up only since after the marker (a reconnect)", CF, None, [link(MARK + 5, NOW - 1)],
     TakeoverAction.UNKNOWN, None, False),
    ("observer up since just inside the margin", CF, None, [link(MARK - MARGIN + 0.5, NOW - 1)],
     TakeoverAction.UNKNOWN, None, False),
    ("observer up since exactly the margin before", CF, None, [link(MARK - MARGIN, NOW - 1)],
     TakeoverAction.REDIAL, None, False),
    ("observer stale (its instance died, or a backlog)", CF, None, [link(900.0, NOW - FRESH - 0.5)],
     TakeoverAction.UNKNOWN, None, False),
    ("one good observer among bad ones", CF, None, [link(MARK + 5, NOW - 1, "x"), link(900.0, 950.0, "y"),
                                                    UP_THROUGHOUT], TakeoverAction.REDIAL, None, False),
])
def test_takeover_decision(case: str, mode: CallbackMode, seen: str | None, links: list[ObserverLink],
                           action: TakeoverAction, outcome: AttemptOutcome | None, ended: bool) -> None:
    decision = takeover(mode, HOLDER, seen, links, NOW, margin=MARGIN, fresh_within=FRESH)
    assert (decision.action, decision.outcome, decision.ended) == (action, outcome, ended), case
    assert "inst-a" in decision.detail  # the agent sees who dialed


@pytest.mark.parametrize(("holder", "at"), [
    ("inst-a 3f2a 1717405200.125", 1717405200.125),
    ("an instance name with spaces tok 12.5", 12.5),
    ("inst-a tok", None),
    ("garbage", None),
    ("inst-a tok nan", None),
    ("", None),
])
def test_marker_time_from_its_holder(holder: str, at: float | None) -> None:
    assert marked_at(holder) == at


def test_an_unreadable_marker_is_never_redialed() -> None:
    decision = takeover(CF, "inst-a tok yesterday", None, [UP_THROUGHOUT], NOW, margin=MARGIN, fresh_within=FRESH)
    assert decision.action is TakeoverAction.UNKNOWN


@pytest.mark.parametrize(("mode", "seen", "expected"), [
    (CF, "up", None),
    (CF, "originate:answered", (OC.ANSWERED, False)),
    (AF, "originate:answered", None),
    (AF, "originate:failed", (OC.AGENT_UNAVAILABLE, False)),
    (AF, "result:no_answer", (OC.NO_ANSWER, True)),
    (AF, "result:", None),
    (CF, "", None),
])
def test_observed_outcome(mode: CallbackMode, seen: str, expected: tuple[AttemptOutcome, bool] | None) -> None:
    assert observed_outcome(mode, seen) == expected
