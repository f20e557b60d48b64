"""AMI event sequences → agent state. Events go through the real AMI parser (pbx.ami_events)."""

from __future__ import annotations

from typing import Any

import pytest

from ivrserver.domain.agent_state import AgentDirectory, AgentLive, AgentStateFold, Leg, status_at
from ivrserver.domain.model import Agent, AgentState, AgentStatus
from ivrserver.pbx.ami_events import parse_event

AGENTS = {f"agent{n}": Agent(id=f"agent{n}", name=f"Agent {n}", endpoint=f"PJSIP/agent{n}")
          for n in range(1001, 1004)}
WRAP = 10.0
CALLER = "PJSIP/callers-00000001"
LEG = "PJSIP/agent1003-00000012"
LEG2 = "PJSIP/agent1003-00000013"


def ami(event: str, **headers: str) -> Any:
    parsed = parse_event({"Event": event, **headers})
    assert parsed is not None
    return parsed


def member_status(status: int, paused: int = 0, agent: str = "agent1003", queue: str = "vip") -> Any:
    return ami("QueueMemberStatus", Queue=queue, MemberName=agent, Interface=f"PJSIP/{agent}",
               Status=str(status), Paused=str(paused), InCall="0", CallsTaken="0", LastCall="0")


def queue_event(event: str, leg: str = LEG, agent: str = "agent1003") -> Any:
    return ami(event, Channel=CALLER, Uniqueid="1732330000.1", Linkedid="1732330000.1", CallerIDNum="13800000001",
               ChanVariable="IVR_CONTEXT_ID=c-1", DestChannel=leg, DestUniqueid="1732330000.2", Queue="vip",
               MemberName=agent, Interface=f"PJSIP/{agent}")


def dial_begin(leg: str = LEG) -> Any:
    return ami("DialBegin", Channel=CALLER, Uniqueid="1732330000.1", Linkedid="1732330000.1", DestChannel=leg,
               DestUniqueid="1732330000.2", DialString="agent1003")


def dial_end(status: str, leg: str = LEG) -> Any:
    return ami("DialEnd", Channel=CALLER, Uniqueid="1732330000.1", Linkedid="1732330000.1", DestChannel=leg,
               DestUniqueid="1732330000.2", DialStatus=status)


def hangup(channel: str = LEG) -> Any:
    return ami("Hangup", Channel=channel, Uniqueid="1732330000.2", Linkedid="1732330000.1", Cause="16")


def fold(timed: list[tuple[float, Any]]) -> dict[str, AgentLive]:
    engine = AgentStateFold(AGENTS, WRAP)
    live: dict[str, AgentLive] = {}
    for now, event in timed:
        changed = engine.apply(live, event, now)
        if changed is not None:
            live[changed.agent_id] = changed
    return live


READY, PAUSED, OUT = AgentState.READY, AgentState.PAUSED, AgentState.LOGGED_OUT
RINGING, ON_CALL, WRAP_UP = AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAP_UP

SEQUENCES = [
    # (case, [(t, event)], now, state, since)
    ("not in use", [(1, member_status(1))], 5, READY, 1),
    ("unavailable", [(1, member_status(5))], 5, OUT, 1),
    ("invalid", [(1, member_status(4))], 5, OUT, 1),
    ("unknown device state counts as logged in", [(1, member_status(0))], 5, READY, 1),
    ("paused", [(1, member_status(1)), (2, member_status(1, paused=1))], 5, PAUSED, 2),
    ("unpaused", [(1, member_status(1, paused=1)), (3, member_status(1))], 5, READY, 3),
    ("device ringing", [(1, member_status(6))], 5, RINGING, 1),
    ("device in use (own outbound call)", [(1, member_status(2))], 5, ON_CALL, 1),
    ("device busy", [(1, member_status(3))], 5, ON_CALL, 1),
    ("ring in use", [(1, member_status(7))], 5, ON_CALL, 1),
    ("on hold", [(1, member_status(8))], 5, ON_CALL, 1),
    ("unknown status code ignored", [(1, member_status(1)), (2, member_status(9))], 5, READY, 1),
    # queue calls
    ("queue rings", [(1, member_status(1)), (2, queue_event("AgentCalled"))], 5, RINGING, 2),
    ("queue ring not answered", [(1, member_status(1)), (2, queue_event("AgentCalled")),
                                 (17, queue_event("AgentRingNoAnswer"))], 20, READY, 17),
    ("queue call answered", [(1, member_status(1)), (2, queue_event("AgentCalled")),
                             (4, queue_event("AgentConnect"))], 50, ON_CALL, 4),
    ("queue call complete: wrap-up", [(1, member_status(1)), (2, queue_event("AgentCalled")),
                                      (4, queue_event("AgentConnect")), (100, queue_event("AgentComplete"))],
     105, WRAP_UP, 100),
    ("wrap-up over", [(1, member_status(1)), (2, queue_event("AgentCalled")), (4, queue_event("AgentConnect")),
                      (100, queue_event("AgentComplete")), (100.5, member_status(1))], 111, READY, 110),
    ("hangup then AgentComplete: one wrap-up", [(1, member_status(1)), (4, queue_event("AgentConnect")),
                                                (100, hangup()), (100.2, queue_event("AgentComplete"))],
     109, WRAP_UP, 100),
    ("paused during the call: paused after it", [(1, member_status(1)), (4, queue_event("AgentConnect")),
                                                 (5, member_status(2, paused=1)), (100, hangup()),
                                                 (100.1, member_status(1, paused=1))], 200, PAUSED, 100.1),
    # direct Dial() routing, no queue
    ("direct dial rings", [(1, member_status(1)), (2, dial_begin())], 5, RINGING, 2),
    ("direct dial answered", [(1, member_status(1)), (2, dial_begin()), (6, dial_end("ANSWER"))], 9, ON_CALL, 6),
    ("direct dial not answered", [(1, member_status(1)), (2, dial_begin()), (22, dial_end("NOANSWER"))],
     25, READY, 22),
    ("direct dial busy", [(1, member_status(1)), (2, dial_begin()), (2.1, dial_end("BUSY"))], 5, READY, 2.1),
    ("direct dial cancelled by caller hang-up", [(1, member_status(1)), (2, dial_begin()), (3, hangup())],
     5, READY, 3),
    ("direct call hung up: wrap-up", [(1, member_status(1)), (2, dial_begin()), (6, dial_end("ANSWER")),
                                      (60, hangup())], 65, WRAP_UP, 60),
    ("two legs: still on call while one remains", [(1, member_status(1)), (2, queue_event("AgentConnect")),
                                                   (3, queue_event("AgentCalled", LEG2)), (4, hangup(LEG2))],
     5, ON_CALL, 2),
    # missed events
    ("missed hangup: device not-in-use ends the call", [(1, member_status(1)), (4, queue_event("AgentConnect")),
                                                        (5, member_status(2)), (60, member_status(1))],
     65, WRAP_UP, 60),
    ("missed AgentConnect: AgentComplete still starts wrap-up", [(1, member_status(1)),
                                                                  (90, queue_event("AgentComplete"))],
     95, WRAP_UP, 90),
    ("started mid-day: the queue ringing proves presence", [(2, queue_event("AgentCalled"))], 5, RINGING, 2),
    ("logged out while ringing", [(1, member_status(1)), (2, dial_begin()), (3, member_status(5))], 5, OUT, 3),
    # not about this agent
    ("caller's own hangup is ignored", [(1, member_status(1)), (50, hangup(CALLER))], 55, READY, 1),
]


@pytest.mark.parametrize(("case", "events", "now", "state", "since"), SEQUENCES, ids=[s[0] for s in SEQUENCES])
def test_sequence(case: str, events: list[tuple[float, Any]], now: float, state: AgentState, since: float) -> None:
    live = fold(events)
    assert status_at(live["agent1003"], now) == AgentStatus(agent_id="agent1003", state=state, since=since)


def test_events_of_other_agents_and_strangers_change_nothing_here() -> None:
    live = fold([(1, member_status(1)), (2, member_status(5, agent="agent1001")),
                 (3, queue_event("AgentCalled", "PJSIP/agent1002-00000001", agent="agent1002")),
                 (4, member_status(2, agent="agent2000")), (5, hangup("PJSIP/agent2000-00000002"))])
    assert sorted(live) == ["agent1001", "agent1002", "agent1003"]
    assert {a: status_at(v, 6).state for a, v in live.items()} == {
        "agent1001": OUT, "agent1002": RINGING, "agent1003": READY}


def test_repeated_status_is_no_change() -> None:
    engine = AgentStateFold(AGENTS, WRAP)
    first = engine.apply({}, member_status(1), 1)
    assert first is not None
    assert engine.apply({"agent1003": first}, member_status(1, queue="general"), 2) is None


def test_legs_are_tracked_by_channel() -> None:
    live = fold([(1, member_status(1)), (2, queue_event("AgentCalled")), (3, queue_event("AgentConnect")),
                 (4, queue_event("AgentCalled", LEG2))])["agent1003"]
    assert live.legs == ((LEG, Leg.UP), (LEG2, Leg.RINGING))


def test_zero_wrap_up_means_ready_at_once() -> None:
    engine = AgentStateFold(AGENTS, 0)
    live: dict[str, AgentLive] = {}
    for now, event in [(1, member_status(1)), (4, queue_event("AgentConnect")), (60, hangup())]:
        changed = engine.apply(live, event, now)
        assert changed is not None
        live["agent1003"] = changed
    assert status_at(live["agent1003"], 60) == AgentStatus("agent1003", READY, 60)


def test_negative_wrap_up_is_refused() -> None:
    with pytest.raises(ValueError, match="wrap_up_seconds"):
        AgentStateFold(AGENTS, -1)


@pytest.mark.parametrize(("name", "agent"), [
    ("PJSIP/agent1003", "agent1003"),
    ("PJSIP/agent1003-00000012", "agent1003"),
    ("PJSIP/agent1003-0000001a", "agent1003"),
    ("pjsip/AGENT1003", "agent1003"),
    ("PJSIP/agent10031-00000001", None),
    ("PJSIP/agent1003-12", None),
    ("Local/agent1003@agents-00000001;1", None),
    ("PJSIP/callers-00000001", None),
    ("", None),
])
def test_channel_to_agent(name: str, agent: str | None) -> None:
    assert AgentDirectory(AGENTS).agent_for(name) == agent
