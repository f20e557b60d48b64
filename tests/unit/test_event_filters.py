"""The fan-out filters of the AMI consumers with I/O: which events reach their queues.

A filter that drops an event its consumer would act on loses a pop or an agent state change, so
each table row is an event the consumer acts on (True) or ignores (False), parsed by the real
AMI parser. The filters decide from the event alone: no state, no I/O.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from ivrserver.domain.model import Agent
from ivrserver.pbx.ami_events import parse_event
from ivrserver.services.agent_state import AgentStateService
from ivrserver.services.screen_pop import ScreenPopService
from ivrserver.store.keys import Keys

AGENTS = {"agent1003": Agent(id="agent1003", name="Agent 1003", endpoint="PJSIP/agent1003")}
CALLER = "PJSIP/callers-00000001"
LEG = "PJSIP/agent1003-00000012"


def ami(event: str, **headers: str) -> Any:
    parsed = parse_event({"Event": event, "Uniqueid": "1.1", "Linkedid": "1.1", **headers})
    assert parsed is not None
    return parsed


QUEUE = {"Channel": CALLER, "DestChannel": LEG, "DestUniqueid": "1.2", "Queue": "vip", "MemberName": "agent1003",
         "Interface": "PJSIP/agent1003"}
ROWS = [
    # event, screen-pop acts on it, agent state acts on it
    (ami("Newchannel", Channel=CALLER, CallerIDNum="15550001"), False, False),
    (ami("Hangup", Channel=CALLER, Cause="16"), False, False),
    (ami("Hangup", Channel=LEG, Cause="16"), True, True),
    (ami("DialBegin", Channel=CALLER, DestChannel=LEG, DestUniqueid="1.2"), True, True),
    (ami("DialBegin", Channel=CALLER, DestChannel="PJSIP/trunk-00000003", DestUniqueid="1.3"), False, False),
    (ami("DialEnd", Channel=CALLER, DestChannel=LEG, DestUniqueid="1.2", DialStatus="ANSWER"), True, True),
    (ami("DialEnd", Channel=CALLER, DestChannel="PJSIP/trunk-00000003", DestUniqueid="1.3", DialStatus="BUSY"),
     False, False),
    (ami("AgentCalled", **QUEUE), True, True),
    (ami("AgentConnect", **QUEUE, HoldTime="3"), True, True),
    (ami("AgentRingNoAnswer", **QUEUE, RingTime="20"), True, True),
    (ami("QueueCallerJoin", Channel=CALLER, Queue="vip", Position="1", Count="1"), False, False),
    (ami("QueueMemberStatus", Queue="vip", MemberName="agent1003", Interface="PJSIP/agent1003", Status="1",
         Paused="0"), False, True),
    (ami("QueueMemberStatus", Queue="vip", MemberName="other", Interface="PJSIP/other", Status="1", Paused="0"),
     False, False),
]


@pytest.mark.parametrize(("event", "pop", "state"), ROWS, ids=[f"{type(r[0]).__name__}-{i}" for i, r in
                                                                enumerate(ROWS)])
def test_filters_let_in_exactly_the_events_their_consumers_act_on(event: Any, pop: bool, state: bool) -> None:
    redis = aioredis.Redis()  # never connected: the filters do no I/O
    keys = Keys("t")
    screen_pop = ScreenPopService(redis, keys, hub=None, agents=AGENTS)  # type: ignore[arg-type]
    agent_state = AgentStateService(redis, keys, AGENTS, wrap_up_seconds=10)
    assert screen_pop.wants(event) is pop
    assert agent_state.wants(event) is state
