"""Live queue state for virtual hold, folded from AMI events parsed by the real parser."""

from __future__ import annotations

from collections.abc import Iterable

from ivrserver.domain.callbacks import QueuePlace, virtual_hold_ready
from ivrserver.pbx import ami_events as ev
from ivrserver.services.queue_state import QueueState


def join(uniqueid: str, queue: str = "ivr-faults", prio: str | None = None) -> ev.AmiEvent | None:
    headers = {"Event": "QueueCallerJoin", "Channel": f"PJSIP/callers-{uniqueid}", "Uniqueid": uniqueid,
               "Linkedid": uniqueid, "Queue": queue, "Position": "1", "Count": "1"}
    if prio is not None:
        headers["ChanVariable"] = ["IVR_CONTEXT_ID=c-1", f"QUEUE_PRIO={prio}"]
    return ev.parse_event(headers)


def leave(uniqueid: str, queue: str = "ivr-faults") -> ev.AmiEvent | None:
    return ev.parse_event({"Event": "QueueCallerLeave", "Channel": "PJSIP/x", "Uniqueid": uniqueid,
                           "Linkedid": uniqueid, "Queue": queue, "Position": "1", "Count": "0"})


def member(interface: str, queue: str = "ivr-faults", event: str = "QueueMemberStatus") -> ev.AmiEvent | None:
    return ev.parse_event({"Event": event, "Queue": queue, "MemberName": interface[6:], "Interface": interface,
                           "Status": "1", "Paused": "0"})


async def test_waiting_callers_keep_their_priority_and_leave() -> None:
    ready: set[str] = {"agent1006"}

    async def free(ids: Iterable[str]) -> int:
        return sum(1 for i in ids if i in ready)

    clock = iter([100.0, 200.0, 300.0])
    state = QueueState({"PJSIP/agent1006": "agent1006"}.get, free, clock=lambda: next(clock))
    for event in (member("PJSIP/agent1006"), join("1.1", prio="2"), join("1.2"), join("9.9", queue="other")):
        state.handle(event)
    live, free_count = await state.snapshot("faults")
    assert sorted((e.entry_id, e.joined_at, e.priority) for e in live) == [("1.1", 100.0, 2), ("1.2", 200.0, 0)]
    assert free_count == 1
    # A callback kept at priority 2 from t=150 must wait for the priority-2 caller who joined at 100.
    assert not virtual_hold_ready(QueuePlace("faults", 150.0, 2), "cb-1", live, free_count)
    state.handle(leave("1.1"))
    live, free_count = await state.snapshot("faults")
    assert virtual_hold_ready(QueuePlace("faults", 150.0, 2), "cb-1", live, free_count)


async def test_members_removed_are_not_counted() -> None:
    async def free(ids: Iterable[str]) -> int:
        return len(list(ids))

    state = QueueState({"PJSIP/agent1006": "agent1006", "PJSIP/agent1007": "agent1007"}.get, free)
    for event in (member("PJSIP/agent1006"),
                  member("PJSIP/agent1007", event="QueueMemberAdded"),
                  member("PJSIP/agent1007", event="QueueMemberRemoved"),
                  member("PJSIP/unknown")):
        state.handle(event)
    assert (await state.snapshot("faults"))[1] == 1
    assert (await state.snapshot("sales")) == ([], 0)
