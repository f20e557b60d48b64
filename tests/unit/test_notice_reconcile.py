"""domain.notices reconcile: what a notice left pending becomes given its call (pure, time passed in)."""

from __future__ import annotations

import dataclasses

import pytest

from ivrserver.domain.callbacks import Attempt, AttemptOutcome, Callback, CallbackMode, CallbackState
from ivrserver.domain.notices import Notice, NoticeState, Settlement, carried, review_call, settle, settled

T0 = 1_700_000_000.0
GRACE = 120.0


def notice(nid: str = "nt-1", *, state: NoticeState = NoticeState.SCHEDULED, sound: str = "/s/a",
           updated: float = T0, channel: str = "call") -> Notice:
    return Notice(id=nid, key=nid, customer_id="c1", kind="case_result", state=state, created_at=T0 - 60,
                  sound=sound, channel=channel, call_id="ntc-1", updated_at=updated)


def call(state: CallbackState, *outcomes: AttemptOutcome, updated: float = T0, due: float | None = None,
         prompt: str = "/s/a", reason: str = "") -> Callback:
    history = tuple(Attempt(number=i + 1, started_at=T0 - 30, outcome=o, ended_at=T0 - 20)
                    for i, o in enumerate(outcomes))
    return Callback(id="ntc-1", customer_id="c1", number="15550001", earliest=T0 - 100, latest=T0 + 9999,
                    created_at=T0 - 100, mode=CallbackMode.CUSTOMER_FIRST, state=state, attempts=len(history),
                    history=history, due_at=due, final_reason=reason, prompt=prompt, notice="case_result",
                    updated_at=updated)


LATER = T0 + GRACE


@pytest.mark.parametrize(("cb", "expected"), [
    (call(CallbackState.CONNECTED, AttemptOutcome.ANSWERED), Settlement(NoticeState.HEARD, "heard", "", 1)),
    (call(CallbackState.DONE, AttemptOutcome.NO_ANSWER, AttemptOutcome.ANSWERED, reason="notice heard"),
     Settlement(NoticeState.HEARD, "heard", "", 2)),
    (call(CallbackState.FAILED, AttemptOutcome.NO_ANSWER, AttemptOutcome.NO_ANSWER, reason="max_attempts"),
     Settlement(NoticeState.FAILED, "failed", "max_attempts", 2)),
    (call(CallbackState.FAILED, reason="do_not_call"), Settlement(NoticeState.FAILED, "failed", "do_not_call", 0)),
    (call(CallbackState.CANCELLED, reason="by agent"), Settlement(NoticeState.CANCELLED, "cancelled", "by agent", 0)),
    (None, Settlement(NoticeState.FAILED, "failed", "call_missing", 0)),
])
def test_a_call_over_gives_its_pending_notice_the_outcome_nobody_followed(cb: Callback | None,
                                                                         expected: Settlement) -> None:
    assert settle(notice(), cb, LATER, GRACE) == expected


@pytest.mark.parametrize("cb", [
    call(CallbackState.SCHEDULED, due=T0 + 60),
    call(CallbackState.RETRY_WAIT, AttemptOutcome.NO_ANSWER, due=T0 + 900),
    call(CallbackState.DIALING),
    call(CallbackState.REQUESTED),
])
def test_a_call_still_running_is_left_alone(cb: Callback) -> None:
    assert settle(notice(), cb, LATER + 86400, GRACE) is None
    review = review_call(cb, [notice()], LATER + 86400, GRACE)
    assert review.settle == () and not review.closed and not review.finish_call
    assert review.look_again_from == max(LATER + 86400, cb.due_at or 0)


def test_within_the_grace_on_placed_may_be_on_its_way() -> None:
    done = call(CallbackState.DONE, AttemptOutcome.ANSWERED, updated=T0)
    assert settle(notice(updated=T0 - 500), done, T0 + GRACE - 1, GRACE) is None
    assert settle(notice(updated=T0 - 500), done, T0 + GRACE, GRACE) is not None
    # a notice changed recently (e.g. its no_answer just followed) waits too
    assert settle(notice(updated=T0 + 50), done, T0 + GRACE, GRACE) is None
    review = review_call(done, [notice()], T0 + 10, GRACE)
    assert (review.settle, review.closed, review.look_again_from) == ((), False, T0 + 10)


def test_final_notices_and_sms_notices_are_never_touched() -> None:
    done = call(CallbackState.DONE, AttemptOutcome.ANSWERED)
    for state in (NoticeState.HEARD, NoticeState.PRESSED_1, NoticeState.CANCELLED, NoticeState.FAILED):
        assert settle(notice(state=state), done, LATER, GRACE) is None
    assert settle(notice(channel="sms"), done, LATER, GRACE) is None
    review = review_call(done, [notice(state=NoticeState.PRESSED_1)], LATER, GRACE)
    assert review.settle == () and review.closed and not review.give_back_budget


def test_a_notice_the_call_never_played_is_not_heard() -> None:
    # batched by an instance that died before the call carried its message
    cb = call(CallbackState.DONE, AttemptOutcome.ANSWERED, prompt="/s/other")
    assert not carried(notice(), cb)
    assert carried(notice(), dataclasses.replace(cb, prompt="/s/other&/s/a"))
    assert settle(notice(), cb, LATER, GRACE) == Settlement(NoticeState.FAILED, "failed", "not_carried", 1)


def test_review_finishes_a_connected_call_and_closes_it_once_every_notice_is_final() -> None:
    cb = call(CallbackState.CONNECTED, AttemptOutcome.ANSWERED)
    a, b = notice("nt-a"), notice("nt-b", state=NoticeState.HEARD)
    review = review_call(cb, [a, b], LATER, GRACE)
    assert [(n.id, s.state) for n, s in review.settle] == [("nt-a", NoticeState.HEARD)]
    assert review.finish_call and review.closed and review.look_again_from is None
    # never dialed and given up: its budget slot goes back
    gave_up = review_call(call(CallbackState.FAILED, reason="do_not_call"), [a], LATER, GRACE)
    assert gave_up.closed and gave_up.give_back_budget
    # gone: nothing to finish, closed
    gone = review_call(None, [a], LATER, GRACE)
    assert gone.closed and not gone.finish_call and [s.reason for _, s in gone.settle] == ["call_missing"]


def test_settled_appends_the_outcome_and_keeps_the_reason_of_a_heard_notice() -> None:
    n = dataclasses.replace(notice(), reason="budget", outcomes=(("no_answer", T0 - 10),))
    heard = settled(n, Settlement(NoticeState.HEARD, "heard", "", 2), LATER)
    assert (heard.state, heard.reason, heard.outcomes[-1], heard.updated_at) == (
        NoticeState.HEARD, "budget", ("heard", LATER), LATER)
    failed = settled(n, Settlement(NoticeState.FAILED, "failed", "max_attempts", 3), LATER)
    assert (failed.state, failed.reason, [o for o, _ in failed.outcomes]) == (
        NoticeState.FAILED, "max_attempts", ["no_answer", "failed"])
