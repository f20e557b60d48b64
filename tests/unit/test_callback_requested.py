"""A caller who asks for a callback in the IVR ends the inbound call: the contact says
`callback_requested`, not `abandoned` (issue 20), and the funnel counts a `callback` exit.
Steps are (seconds since the call's start, AMI headers or FastAGI facts); time is passed in."""

from __future__ import annotations

from typing import Any

import pytest

from ivrserver.domain import contact_tracking as ct
from ivrserver.domain import reports as rp
from ivrserver.domain.contact_tracking import CallBook, CallFacts
from ivrserver.domain.menu_engine import ExitReason, PathEvent, PathKind, counted_exit
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import ContactKind, Outcome

T0 = 1_718_000_000.0
CALLER = "1718000000.30"
AGENT_LEG = "1718000000.31"


def ami(event: str, uid: str = CALLER, **extra: str) -> dict[str, str]:
    return {"Event": event, "Channel": "PJSIP/callers-0000000a", "CallerIDNum": "15550102", "Uniqueid": uid,
            "Linkedid": CALLER, **extra}


START = [(0.0, ami("Newchannel")),
         (0.5, CallFacts(kind=ContactKind.INBOUND, number="15550102", customer_id="c1"))]
HANGUP = (9.0, ami("Hangup"))
IVR_DONE = "menu; ivr exit callback at faults"


def play(steps: list[tuple[float, Any]]) -> ct.CallState:
    book = CallBook()
    state: ct.CallState | None = None
    for offset, item in steps:
        if isinstance(item, dict):
            event = ct.event_from_headers(item)
            assert event is not None
            state = book.on_event(event, T0 + offset)[0]
        else:
            state = book.on_facts(CALLER, item, T0 + offset) or state
    assert state is not None
    return state


@pytest.mark.parametrize(("steps", "outcome"), [
    # pressed "call me back" in the faults menu; the IVR thanks and hangs up
    ([*START, (8.0, CallFacts(routing_reason=IVR_DONE, callback_requested=True, self_served=False)), HANGUP],
     Outcome.CALLBACK_REQUESTED),
    # the same, before the hang-up is seen: already what it will be
    ([*START, (8.0, CallFacts(callback_requested=True))], Outcome.CALLBACK_REQUESTED),
    # the hang-up came first, the IVR's facts a moment later (AMI is faster than the AGI side)
    ([*START, HANGUP, (9.1, CallFacts(callback_requested=True))], Outcome.CALLBACK_REQUESTED),
    # a caller who hung up in the menu without asking: abandoned, as before
    ([*START, (8.0, CallFacts(callback_requested=False, self_served=False)), HANGUP], Outcome.ABANDONED),
    # waited in a queue (virtual hold asked there) and left: not an abandoned queue call
    ([*START, (3.0, ami("QueueCallerJoin", Queue="ivr-faults")), (8.0, ami("QueueCallerLeave", Queue="ivr-faults")),
      (8.0, CallFacts(callback_requested=True)), HANGUP], Outcome.CALLBACK_REQUESTED),
    # served by the IVR outranks it; an agent connecting outranks everything
    ([*START, (8.0, CallFacts(callback_requested=True, self_served=True)), HANGUP], Outcome.SELF_SERVED),
    ([*START, (3.0, ami("QueueCallerJoin", Queue="ivr-faults")),
      (5.0, ami("AgentConnect", Queue="ivr-faults", Interface="PJSIP/agent1006", HoldTime="2",
                DestChannel="PJSIP/agent1006-00000001")),
      (8.0, CallFacts(callback_requested=True)), HANGUP], Outcome.ANSWERED),
    # an IVR failure after the request: the request stands (the callback is scheduled)
    ([*START, (8.0, CallFacts(callback_requested=True, failed=True)), HANGUP], Outcome.CALLBACK_REQUESTED),
], ids=["asked-then-hung-up", "asked-not-ended-yet", "facts-after-hangup", "hung-up-in-menu",
        "asked-from-a-queue", "self-served-wins", "answered-wins", "failure-after-asking"])
def test_contact_outcome(steps: list[tuple[float, Any]], outcome: Outcome) -> None:
    state = play(steps)
    contact = ct.to_contact(state, "k")
    assert contact.outcome is outcome
    assert contact.kind is ContactKind.INBOUND
    if any(isinstance(i, dict) and i.get("Event") == "QueueCallerJoin" for _, i in steps):
        assert contact.queue == "faults"


def test_the_funnel_counts_the_request_as_a_callback_exit_not_a_hang_up() -> None:
    events = (PathEvent(PathKind.ENTER, "main", 0.0), PathEvent(PathKind.KEY, "main", 1.0, key="3"),
              PathEvent(PathKind.ENTER, "faults", 2.0), PathEvent(PathKind.KEY, "faults", 3.0, key="2"),
              PathEvent(PathKind.EXIT, "faults", 4.0, target="queue:faults", detail=ExitReason.CALLBACK.value))
    assert counted_exit(ExitReason.CALLBACK.value, events) == "callback"
    assert rp.exit_category(events) == "callback"
    f = rp.Funnel()
    f.add(CallPath("c1", "hotline", "v1", 0.0, events))
    assert (f.exits["callback"], f.exits["caller_hangup"], f.human, sum(f.depth_hangups.values())) == (1, 0, 1, 0)
