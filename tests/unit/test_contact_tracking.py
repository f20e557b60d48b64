"""Contact tracking over AMI event sequences shaped like real Asterisk 22 transcripts.

Each step is (seconds since call start, event) where an event is the raw AMI header dict or
CallFacts reported by the FastAGI side for a channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from ivrserver.domain import contact_tracking as ct
from ivrserver.domain.contact_tracking import CallBook, CallFacts, CallState
from ivrserver.domain.model import ContactKind, Outcome

T0 = 1_718_000_000.0
CALLER = "1718000000.10"
AGENT_LEG = "1718000000.11"
AGENT_LEG2 = "1718000000.12"


def ami(event: str, uid: str = CALLER, linked: str = CALLER, **extra: str) -> dict[str, str]:
    """An AMI event as panoramisk hands it over: header name → value."""
    channel = "PJSIP/callers-00000004" if uid == CALLER else f"PJSIP/agent-000000{uid[-2:]}"
    headers = {"Event": event, "Privilege": "call,all", "Channel": channel, "ChannelState": "6",
               "ChannelStateDesc": "Up", "CallerIDNum": "15550001" if uid == CALLER else "1004",
               "CallerIDName": "<unknown>", "Context": "ivrserver-inbound", "Exten": "1860", "Priority": "3",
               "Uniqueid": uid, "Linkedid": linked}
    headers.update(extra)
    return headers


def facts(**kw: Any) -> tuple[str, CallFacts]:
    return CALLER, CallFacts(**kw)


def queue_event(event: str, agent: str, leg: str, **extra: str) -> dict[str, str]:
    return ami(event, Queue="general", MemberName=f"Agent {agent[-4:]}", Interface=f"PJSIP/{agent}",
               DestChannel=f"PJSIP/{agent}-0000000{leg[-1]}", DestUniqueid=leg, DestLinkedid=CALLER, **extra)


ANSWERED_IN_QUEUE = [
    (0, ami("Newchannel", ChannelState="4", ChannelStateDesc="Ring")),
    (1, facts(customer_id="c-std-1", ivr_step="hotline", routing_reason="menu")),
    (4, facts(ivr_step="hotline/2")),
    (5, ami("QueueCallerJoin", Queue="general", Position="1", Count="1")),
    (5, queue_event("AgentCalled", "agent1004", AGENT_LEG)),
    (5, ami("Newchannel", uid=AGENT_LEG)),
    (5, ami("DialBegin", DestChannel="PJSIP/agent1004-00000005", DestUniqueid=AGENT_LEG,
            DialString="agent1004")),
    (20, ami("DialEnd", DestChannel="PJSIP/agent1004-00000005", DestUniqueid=AGENT_LEG, DialStatus="ANSWER")),
    (20, queue_event("AgentConnect", "agent1004", AGENT_LEG, HoldTime="15", RingTime="15")),
    (20, ami("QueueCallerLeave", Queue="general", Count="0", Position="1")),
    (95, ami("Hangup", uid=AGENT_LEG, Cause="16", **{"Cause-txt": "Normal Clearing"})),
    (95, ami("Hangup", Cause="16", **{"Cause-txt": "Normal Clearing"})),
    (95, queue_event("AgentComplete", "agent1004", AGENT_LEG, TalkTime="75", Reason="caller")),
]

ABANDONED_IN_QUEUE = [
    (0, ami("Newchannel")),
    (1, facts(customer_id="c-vip-1", routing_reason="vip → vip queue")),
    (2, ami("QueueCallerJoin", Queue="vip", Position="1", Count="1")),
    (2, queue_event("AgentCalled", "agent1001", AGENT_LEG)),
    (62, queue_event("AgentRingNoAnswer", "agent1001", AGENT_LEG, RingTime="60")),
    (63, ami("QueueCallerAbandon", Queue="vip", Position="1", OriginalPosition="1", HoldTime="61")),
    (63, ami("Hangup", Cause="16")),
]

SELF_SERVED = [
    (0, ami("Newchannel")),
    (1, facts(customer_id="c-std-1", ivr_step="hotline")),
    (3, facts(ivr_step="hotline/1/balance", self_served=True)),
    (30, ami("Hangup", Cause="16")),
]

HUNG_UP_IN_MENU = [
    (0, ami("Newchannel")),
    (1, facts(ivr_step="hotline")),
    (12, ami("Hangup", Cause="16")),
]

STICKY_DIAL_ANSWERED = [
    (0, ami("Newchannel")),
    (1, facts(customer_id="c-repeat-1", routing_reason="repeat caller: last agent agent1003 free")),
    (2, ami("DialBegin", DestChannel="PJSIP/agent1003-00000007", DestUniqueid=AGENT_LEG,
            DialString="PJSIP/agent1003")),
    (2, ami("Newchannel", uid=AGENT_LEG)),
    (6.5, ami("DialEnd", DestChannel="PJSIP/agent1003-00000007", DestUniqueid=AGENT_LEG, DialStatus="ANSWER")),
    (60, ami("Hangup")),
    (60, ami("Hangup", uid=AGENT_LEG)),
]

STICKY_NO_ANSWER_THEN_QUEUE = [
    (0, ami("Newchannel")),
    (1, facts(customer_id="c-vip-1", routing_reason="open case #1: agent1003, 20 s then vip")),
    (2, ami("DialBegin", DestChannel="PJSIP/agent1003-00000007", DestUniqueid=AGENT_LEG)),
    (22, ami("DialEnd", DestChannel="PJSIP/agent1003-00000007", DestUniqueid=AGENT_LEG, DialStatus="NOANSWER")),
    (22, ami("Hangup", uid=AGENT_LEG)),
    (22, ami("QueueCallerJoin", Queue="vip")),
    (30, ami("AgentConnect", Queue="vip", MemberName="agent1001", Interface="PJSIP/agent1001",
             DestChannel="PJSIP/agent1001-00000008", DestUniqueid=AGENT_LEG2, HoldTime="8", RingTime="3")),
    (90, ami("Hangup", uid=AGENT_LEG2)),
    (90, ami("Hangup")),
]

TRANSFERRED_TO_SECOND_AGENT = [
    *ANSWERED_IN_QUEUE[:10],
    (40, ami("DialBegin", uid=AGENT_LEG, DestChannel="PJSIP/agent1001-00000009", DestUniqueid=AGENT_LEG2)),
    (45, ami("DialEnd", uid=AGENT_LEG, DestChannel="PJSIP/agent1001-00000009", DestUniqueid=AGENT_LEG2,
             DialStatus="ANSWER")),
    (95, ami("Hangup", uid=AGENT_LEG)),
    (120, ami("Hangup", uid=AGENT_LEG2)),
    (120, ami("Hangup")),
]

CALLBACK_ANSWERED = [
    (0, ("cb-1", CallFacts(kind=ContactKind.CALLBACK, number="15550002", customer_id="c-repeat-1"))),
    (0, ami("Newchannel", uid="cb-1", linked="cb-1", CallerIDNum="15550002")),
    (9, ami("OriginateResponse", uid="cb-1", linked="", Response="Success", Reason="4")),
    (10, ami("QueueCallerJoin", uid="cb-1", linked="cb-1", Queue="general")),
    (12, ami("AgentConnect", uid="cb-1", linked="cb-1", Queue="general", HoldTime="2",
             DestChannel="PJSIP/agent1005-0000000a", MemberName="agent1005")),
    (80, ami("Hangup", uid="cb-1", linked="cb-1")),
]

CALLBACK_NOT_ANSWERED = [
    (0, ("cb-2", CallFacts(kind=ContactKind.CALLBACK, number="15550002"))),
    (0, ami("Newchannel", uid="cb-2", linked="cb-2")),
    (30, ami("Hangup", uid="cb-2", linked="cb-2", Cause="19", **{"Cause-txt": "No user responding"})),
]

AGENT_LEG_CB = "cb-4-1"
CUSTOMER_LEG = "1718000000.13"
AGENT_CHANNEL = {"Channel": "PJSIP/agent1004-0000000c", "CallerIDNum": "1004",
                 "Context": "ivrserver-callback", "Exten": "s"}

# Agent-first callback as Asterisk 22 reports it: the agent's phone is originated (ChannelId =
# "<callback id>-<attempt>", the call's first channel), and when the agent answers the dialplan
# dials the customer from that channel; the customer's answer connects them.
AGENT_FIRST_CALLBACK_ANSWERED = [
    (0, (AGENT_LEG_CB, CallFacts(kind=ContactKind.CALLBACK, number="15550027", customer_id="c-done-1"))),
    (0, ami("Newchannel", uid=AGENT_LEG_CB, linked=AGENT_LEG_CB, ChannelState="0", **AGENT_CHANNEL)),
    (3, ami("DialBegin", uid=AGENT_LEG_CB, linked=AGENT_LEG_CB, DestChannel="PJSIP/customers-0000000d",
            DestUniqueid=CUSTOMER_LEG, DialString="15550027@customers", **AGENT_CHANNEL)),
    (3, ami("Newchannel", uid=CUSTOMER_LEG, linked=AGENT_LEG_CB, Channel="PJSIP/customers-0000000d")),
    (7.5, ami("DialEnd", uid=AGENT_LEG_CB, linked=AGENT_LEG_CB, DestChannel="PJSIP/customers-0000000d",
              DestUniqueid=CUSTOMER_LEG, DialStatus="ANSWER", **AGENT_CHANNEL)),
    (70, ami("Hangup", uid=CUSTOMER_LEG, linked=AGENT_LEG_CB, Channel="PJSIP/customers-0000000d")),
    (70, ami("Hangup", uid=AGENT_LEG_CB, linked=AGENT_LEG_CB, **AGENT_CHANNEL)),
]

AGENT_FIRST_CALLBACK_CUSTOMER_NO_ANSWER = [
    *AGENT_FIRST_CALLBACK_ANSWERED[:4],
    (33, ami("DialEnd", uid=AGENT_LEG_CB, linked=AGENT_LEG_CB, DestChannel="PJSIP/customers-0000000d",
             DestUniqueid=CUSTOMER_LEG, DialStatus="NOANSWER", **AGENT_CHANNEL)),
    (33, ami("Hangup", uid=CUSTOMER_LEG, linked=AGENT_LEG_CB, Channel="PJSIP/customers-0000000d")),
    (33, ami("Hangup", uid=AGENT_LEG_CB, linked=AGENT_LEG_CB, **AGENT_CHANNEL)),
]

# An inbound caller whose own phone is an agent's (an agent calling the hotline) who then reaches
# a non-agent destination: not a callback, so the caller's phone never counts as the answering agent.
INBOUND_FROM_AN_AGENT_PHONE = [
    (0, ami("Newchannel", **AGENT_CHANNEL)),
    (1, facts(routing_reason="menu")),
    (2, ami("DialBegin", DestChannel="PJSIP/customers-0000000d", DestUniqueid=CUSTOMER_LEG, **AGENT_CHANNEL)),
    (5, ami("DialEnd", DestChannel="PJSIP/customers-0000000d", DestUniqueid=CUSTOMER_LEG, DialStatus="ANSWER",
            **AGENT_CHANNEL)),
    (9, ami("Hangup", **AGENT_CHANNEL)),
]

ORIGINATE_FAILED = [
    (0, ("cb-3", CallFacts(kind=ContactKind.NOTIFICATION, number="15550003"))),
    (1, {"Event": "OriginateResponse", "ActionID": "7", "Response": "Failure", "Channel": "PJSIP/15550003@customers",
         "Context": "ivrserver-notify", "Exten": "s", "Reason": "0", "Uniqueid": "cb-3",
         "CallerIDNum": "<unknown>"}),
]

NOTIFICATION_DELIVERED = [
    (0, ("nt-1", CallFacts(kind=ContactKind.NOTIFICATION, number="15550003", customer_id="c-std-1"))),
    (0, ami("Newchannel", uid="nt-1", linked="nt-1")),
    (5, ("nt-1", CallFacts(ivr_step="notify/case-closed", self_served=True))),
    (20, ami("Hangup", uid="nt-1", linked="nt-1")),
]

IVR_FAILED = [
    (0, ami("Newchannel")),
    (1, facts(failed=True, routing_reason="AGI error → general queue")),
    (2, ami("Hangup")),
]

FAILED_THEN_QUEUE_ANSWERED = [
    (0, ami("Newchannel")),
    (1, facts(failed=True)),
    (2, ami("QueueCallerJoin", Queue="general")),
    (9, ami("AgentConnect", Queue="general", HoldTime="7", DestChannel="PJSIP/agent1006-0000000b")),
    (50, ami("Hangup")),
]


# The agents file's endpoints, as the server passes them (only these destinations are agents).
AGENT_MAP = {f"PJSIP/agent{n}": f"agent{n}" for n in range(1001, 1011)}


@dataclass(frozen=True)
class Expect:
    outcome: Outcome
    queue: str | None = None
    wait: float | None = None
    agents: tuple[str, ...] = ()
    duration: float | None = None
    kind: ContactKind = ContactKind.INBOUND
    customer: str | None = None
    path: tuple[str, ...] = ()
    talk: float | None = None


def play(steps: list[tuple[float, Any]], book: CallBook | None = None) -> tuple[CallBook, list[CallState]]:
    book = book if book is not None else CallBook()
    ended: list[CallState] = []
    for offset, item in steps:
        now = T0 + offset
        if isinstance(item, dict):
            event = ct.event_from_headers(item)
            if event is not None:
                ended += [s for s in book.on_event(event, now) if s.ended_at is not None]
        else:
            uniqueid, call_facts = item
            state = book.on_facts(uniqueid, call_facts, now)
            if state is not None and state.ended_at is not None:
                ended = [s for s in ended if s.linkedid != state.linkedid] + [state]
    return book, ended


@pytest.mark.parametrize(("steps", "expect"), [
    (ANSWERED_IN_QUEUE, Expect(Outcome.ANSWERED, "general", 15.0, ("agent1004",), 95, customer="c-std-1",
                               path=("hotline", "hotline/2"), talk=75.0)),
    (ABANDONED_IN_QUEUE, Expect(Outcome.ABANDONED, "vip", 61.0, (), 63, customer="c-vip-1")),
    (SELF_SERVED, Expect(Outcome.SELF_SERVED, None, None, (), 30, customer="c-std-1",
                         path=("hotline", "hotline/1/balance"))),
    (HUNG_UP_IN_MENU, Expect(Outcome.ABANDONED, duration=12, path=("hotline",))),
    (STICKY_DIAL_ANSWERED, Expect(Outcome.ANSWERED, None, 4.5, ("agent1003",), 60, customer="c-repeat-1",
                                  talk=53.5)),
    (STICKY_NO_ANSWER_THEN_QUEUE, Expect(Outcome.ANSWERED, "vip", 8.0, ("agent1001",), 90, customer="c-vip-1",
                                         talk=60.0)),
    (TRANSFERRED_TO_SECOND_AGENT, Expect(Outcome.ANSWERED, "general", 15.0, ("agent1004", "agent1001"), 120,
                                         customer="c-std-1", path=("hotline", "hotline/2"), talk=100.0)),
    (CALLBACK_ANSWERED, Expect(Outcome.ANSWERED, "general", 2.0, ("agent1005",), 80, ContactKind.CALLBACK,
                               "c-repeat-1", talk=68.0)),
    (AGENT_FIRST_CALLBACK_ANSWERED, Expect(Outcome.ANSWERED, None, 7.5, ("agent1004",), 70, ContactKind.CALLBACK,
                                           "c-done-1", talk=62.5)),
    (AGENT_FIRST_CALLBACK_CUSTOMER_NO_ANSWER, Expect(Outcome.FAILED, duration=33, kind=ContactKind.CALLBACK,
                                                     customer="c-done-1")),
    (INBOUND_FROM_AN_AGENT_PHONE, Expect(Outcome.ABANDONED, duration=9)),
    (CALLBACK_NOT_ANSWERED, Expect(Outcome.FAILED, duration=30, kind=ContactKind.CALLBACK)),
    (ORIGINATE_FAILED, Expect(Outcome.FAILED, duration=1, kind=ContactKind.NOTIFICATION)),
    (NOTIFICATION_DELIVERED, Expect(Outcome.SELF_SERVED, duration=20, kind=ContactKind.NOTIFICATION,
                                    customer="c-std-1", path=("notify/case-closed",))),
    (IVR_FAILED, Expect(Outcome.FAILED, duration=2)),
    (FAILED_THEN_QUEUE_ANSWERED, Expect(Outcome.ANSWERED, "general", 7.0, ("agent1006",), 50, talk=41.0)),
], ids=["answered-in-queue", "abandoned-in-queue", "self-served", "hung-up-in-menu", "sticky-dial-answered",
        "sticky-no-answer-then-queue", "transferred", "callback-answered", "agent-first-callback-answered",
        "agent-first-callback-no-answer", "inbound-from-an-agent-phone", "callback-not-answered",
        "originate-failed", "notification-delivered", "ivr-failed", "ivr-failed-then-answered"])
def test_call_outcomes(steps: list[tuple[float, Any]], expect: Expect) -> None:
    book, ended = play(steps, CallBook(agents=AGENT_MAP))
    assert len(ended) == 1, ended
    state = ended[0]
    contact = ct.to_contact(state, "k1")
    assert contact.outcome is expect.outcome
    assert contact.queue == expect.queue
    assert contact.wait_seconds == expect.wait
    assert contact.agents == expect.agents
    assert contact.kind is expect.kind
    assert contact.customer_id == expect.customer
    assert contact.ivr_path == expect.path
    assert contact.talk_seconds == expect.talk
    assert contact.started_at == T0
    assert contact.ended_at is not None and contact.ended_at - T0 == expect.duration
    assert state.interesting
    assert len(book) == 0


def test_number_recorded_normalised_from_the_first_channel() -> None:
    _, ended = play(ANSWERED_IN_QUEUE)
    assert ct.to_contact(ended[0], "k").number == "15550001"


@pytest.mark.parametrize(("caller_id", "expected"), [
    ("anonymous", ""), ("<unknown>", ""), ("1555\x000001", ""), ("+1 (555) 0001", "+15550001"),
    ("030 1234567", "+49301234567"), ("10086", "10086"),  # a service code: as dialled
])
def test_number_is_hostile_input(caller_id: str, expected: str) -> None:
    steps = [(0, ami("Newchannel", CallerIDNum=caller_id)), (1, facts(ivr_step="hotline")),
             (2, ami("Hangup", CallerIDNum=caller_id))]
    _, ended = play(steps)
    assert ct.to_contact(ended[0], "k", default_country="DE").number == expected


def test_in_progress_until_the_first_channel_hangs_up() -> None:
    book, ended = play(ANSWERED_IN_QUEUE[:10])
    assert ended == []
    state = book.get(CALLER)
    assert state is not None and ct.outcome(state) is Outcome.ANSWERED and state.ended_at is None
    book2, _ = play(ANSWERED_IN_QUEUE[:4])
    state2 = book2.get(CALLER)
    assert state2 is not None and ct.outcome(state2) is Outcome.IN_PROGRESS


def test_call_ends_only_when_every_seen_leg_is_gone() -> None:
    steps = [*ANSWERED_IN_QUEUE[:10], (95, ami("Hangup"))]
    book, ended = play(steps)
    assert ended == []
    _, ended = play([(96, ami("Hangup", uid=AGENT_LEG))], book)
    assert len(ended) == 1 and ended[0].ended_at == T0 + 96


def test_late_events_of_a_finished_call_are_ignored() -> None:
    book, ended = play(ANSWERED_IN_QUEUE)
    assert len(ended) == 1
    late = ct.event_from_headers(queue_event("AgentComplete", "agent1004", AGENT_LEG))
    assert late is not None and book.on_event(late, T0 + 200) == []
    assert len(book) == 0


def test_late_facts_update_the_finished_call() -> None:
    steps = [*HUNG_UP_IN_MENU, (12.2, facts(self_served=True))]
    _, ended = play(steps)
    assert len(ended) == 1 and ct.outcome(ended[0]) is Outcome.SELF_SERVED


def test_facts_before_any_event_wait_for_the_channel() -> None:
    book = CallBook()
    assert book.on_facts(CALLER, CallFacts(customer_id="c1", ivr_step="hotline"), T0) is None
    _, ended = play([(0.1, ami("Newchannel")), (5, ami("Hangup"))], book)
    assert ended[0].customer_id == "c1" and ended[0].ivr_path == ("hotline",)


def test_facts_for_a_later_leg_follow_its_linkedid() -> None:
    # The callback AGI runs on the customer leg, which is not the first channel of the call.
    steps = [
        (0, ami("Newchannel", uid="cb-9", linked="cb-9")),
        (1, ami("Newchannel", uid="cb-9b", linked="cb-9")),
        (2, ("cb-9b", CallFacts(kind=ContactKind.CALLBACK, customer_id="c9"))),
        (3, ami("Hangup", uid="cb-9b", linked="cb-9")),
        (3, ami("Hangup", uid="cb-9", linked="cb-9")),
    ]
    _, ended = play(steps)
    assert ended[0].linkedid == "cb-9" and ended[0].customer_id == "c9"
    assert ct.outcome(ended[0]) is Outcome.FAILED


def test_interleaved_calls_are_kept_apart() -> None:
    other = "1718000000.20"
    second: list[tuple[float, Any]] = []
    for t, item in SELF_SERVED:
        if isinstance(item, dict):
            second.append((t + 0.5, {**item, "Uniqueid": other, "Linkedid": other, "CallerIDNum": "15550003"}))
        else:
            second.append((t + 0.5, (other, item[1])))
    steps = sorted([*ABANDONED_IN_QUEUE, *second], key=lambda step: step[0])
    _, ended = play(steps)
    outcomes = {s.linkedid: (ct.outcome(s), s.number, s.queue) for s in ended}
    assert outcomes == {CALLER: (Outcome.ABANDONED, "15550001", "vip"),
                        other: (Outcome.SELF_SERVED, "15550003", None)}


def test_internal_calls_are_not_interesting() -> None:
    steps = [(0, ami("Newchannel", uid="9.1", linked="9.1")),
             (1, ami("DialBegin", uid="9.1", linked="9.1", DestChannel="PJSIP/agent1002-01", DestUniqueid="9.2")),
             (4, ami("DialEnd", uid="9.1", linked="9.1", DestChannel="PJSIP/agent1002-01", DialStatus="ANSWER")),
             (9, ami("Hangup", uid="9.1", linked="9.1"))]
    _, ended = play(steps, CallBook(agents={"PJSIP/agent1003": "agent1003"}))
    assert len(ended) == 1 and not ended[0].interesting and ended[0].agents == ()


def test_agent_map_names_agents_and_ignores_other_destinations() -> None:
    agents = {"PJSIP/agent1003": "a1003", "PJSIP/agent1001": "a1001"}
    _, ended = play(STICKY_NO_ANSWER_THEN_QUEUE, CallBook(agents=agents))
    assert ended[0].agents == ("a1001",)
    trunk = [(0, ami("Newchannel")), (1, facts(kind=ContactKind.CALLBACK)),
             (2, ami("DialEnd", DestChannel="PJSIP/customers-0000000c", DialStatus="ANSWER")), (9, ami("Hangup"))]
    _, ended = play(trunk, CallBook(agents=agents))
    assert ended[0].agents == () and ct.outcome(ended[0]) is Outcome.FAILED


def test_expire_ends_silent_calls_and_orphan_facts() -> None:
    book, _ = play(ANSWERED_IN_QUEUE[:10])
    book.on_facts("never-seen", CallFacts(ivr_step="hotline"), T0 + 30)
    assert book.expire(T0 + 100, max_age=3600) == []
    expired = book.expire(T0 + 20 + 3600, max_age=3600)
    assert {s.linkedid for s in expired} == {CALLER}
    expired = book.expire(T0 + 30 + 3600, max_age=3600)
    assert [s.linkedid for s in expired] == ["never-seen"]
    assert ct.outcome(expired[0]) is Outcome.ABANDONED
    assert len(book) == 0


def test_book_is_bounded() -> None:
    book = CallBook(max_calls=2)
    evicted: list[CallState] = []
    for i in range(4):
        event = ct.event_from_headers(ami("Newchannel", uid=f"1.{i}", linked=f"1.{i}"))
        assert event is not None
        evicted += [s for s in book.on_event(event, T0 + i) if s.ended_at is not None]
    assert len(book) == 2 and [s.linkedid for s in evicted] == ["1.0", "1.1"]


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Event": "VarSet", "Uniqueid": "1", "Linkedid": "1"}, None),
    ({"Event": "Hangup", "Uniqueid": "", "Linkedid": ""}, None),
    ({"Event": "Hangup"}, None),
    ({"Event": "Hangup", "Uniqueid": "1.1", "Linkedid": "1.1\r\nEvent: Evil"}, None),   # injected: dropped
    ({"Event": "AgentConnect", "Uniqueid": "1.1", "Linkedid": "1.1", "HoldTime": "abc"},
     ct.CallEvent(name="AgentConnect", linkedid="1.1", uniqueid="1.1")),
    ({"Event": "AgentConnect", "Uniqueid": "1.1", "Linkedid": "1.1", "HoldTime": "-5"},
     ct.CallEvent(name="AgentConnect", linkedid="1.1", uniqueid="1.1")),
    ({"Event": "QueueCallerJoin", "Uniqueid": "1.1", "Linkedid": "1.1", "Queue": "vip",
      "ChanVariable": ["OTHER=1", "IVR_CONTEXT_ID=ctx9"]},
     ct.CallEvent(name="QueueCallerJoin", linkedid="1.1", uniqueid="1.1", queue="vip", context_id="ctx9")),
    ({"Event": "OriginateResponse", "Uniqueid": "cb-1", "Response": "Failure"},
     ct.CallEvent(name="OriginateResponse", linkedid="cb-1", uniqueid="cb-1", response="Failure")),
])
def test_event_from_headers(headers: dict[str, str], expected: ct.CallEvent | None) -> None:
    event = ct.event_from_headers(headers)
    if expected is None and "Linkedid" in headers and "\r" in headers["Linkedid"]:
        assert event is not None and event.linkedid == "1.1"  # falls back to the clean Uniqueid
    else:
        assert event == expected


@dataclass(frozen=True)
class AgentConnect:
    """Shaped like the typed event of ivrserver.pbx.ami_events (same attribute names)."""

    uniqueid: str
    linkedid: str
    channel: str
    caller_id_num: str
    context_id: str
    queue: str
    member_name: str
    interface: str
    dest_channel: str
    dest_uniqueid: str
    hold_time: int


@dataclass(frozen=True)
class Newexten:
    uniqueid: str
    linkedid: str


def test_event_from_typed_objects() -> None:
    typed = AgentConnect("1.1", "1.1", "PJSIP/callers-1", "15550001", "ctx1", "vip", "Agent 1001",
                         "PJSIP/agent1001", "PJSIP/agent1001-0000000d", "1.2", 12)
    assert ct.event_from_object(typed) == ct.CallEvent(
        name="AgentConnect", linkedid="1.1", uniqueid="1.1", channel="PJSIP/callers-1", caller_id_num="15550001",
        context_id="ctx1", queue="vip", member_name="Agent 1001", interface="PJSIP/agent1001",
        dest_channel="PJSIP/agent1001-0000000d", hold_time=12.0)
    assert ct.event_from_object(Newexten("1.1", "1.1")) is None


@pytest.mark.parametrize(("channel", "interface"), [
    ("PJSIP/agent1003-0000001a", "PJSIP/agent1003"),
    ("Local/1003@agents-00000001;1", "Local/1003@agents"),
    ("PJSIP/agent1003", "PJSIP/agent1003"),
    ("PJSIP/my-trunk-0000abcd", "PJSIP/my-trunk"),
])
def test_channel_interface(channel: str, interface: str) -> None:
    assert ct.channel_interface(channel) == interface


def test_ivr_path_is_bounded() -> None:
    state = ct.new_call("1", T0)
    for i in range(200):
        state = ct.apply_facts(state, CallFacts(ivr_step=f"m{i}"), T0)
    assert len(state.ivr_path) == ct.MAX_IVR_PATH


SCENARIOS = [ANSWERED_IN_QUEUE, ABANDONED_IN_QUEUE, SELF_SERVED, HUNG_UP_IN_MENU, STICKY_DIAL_ANSWERED,
             STICKY_NO_ANSWER_THEN_QUEUE, TRANSFERRED_TO_SECOND_AGENT, CALLBACK_ANSWERED, CALLBACK_NOT_ANSWERED,
             ORIGINATE_FAILED, NOTIFICATION_DELIVERED, IVR_FAILED, FAILED_THEN_QUEUE_ANSWERED]


@pytest.mark.parametrize("steps", SCENARIOS)
def test_typed_events_from_the_ami_parser_give_the_same_contacts(steps: list[tuple[float, Any]]) -> None:
    """The same transcripts through ivrserver.pbx.ami_events (the typed events the app feeds)."""
    ami_events = pytest.importorskip("ivrserver.pbx.ami_events")
    typed_steps: list[tuple[float, Any]] = []
    for offset, item in steps:
        if isinstance(item, dict):
            typed = ami_events.parse_event({"Interface": "", "DestChannel": "", "DestUniqueid": "", **item}
                                           if item["Event"].startswith(("Agent", "Dial")) else item)
            typed_steps.append((offset, typed))
        else:
            typed_steps.append((offset, item))
    book = CallBook()
    typed_ended: list[CallState] = []
    for offset, item in typed_steps:
        if isinstance(item, tuple):
            state = book.on_facts(item[0], item[1], T0 + offset)
            if state is not None and state.ended_at is not None:
                typed_ended = [s for s in typed_ended if s.linkedid != state.linkedid] + [state]
        elif item is not None:
            event = ct.event_from_object(item)
            if event is not None:
                typed_ended += [s for s in book.on_event(event, T0 + offset) if s.ended_at is not None]
    _, ended = play(steps)
    assert [ct.to_contact(s, "k") for s in typed_ended] == [ct.to_contact(s, "k") for s in ended]


def test_wait_without_hold_time_is_measured_from_queue_join() -> None:
    steps = [(0, ami("Newchannel")), (2, ami("QueueCallerJoin", Queue="vip")),
             (9.5, ami("AgentConnect", Queue="vip", DestChannel="PJSIP/agent1001-0000000e")), (30, ami("Hangup"))]
    _, ended = play(steps)
    assert ended[0].wait_seconds == 7.5 and ended[0].agents == ("agent1001",)
