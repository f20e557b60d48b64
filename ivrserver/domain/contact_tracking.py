"""Fold the AMI events of one call (correlated by Linkedid) plus what the FastAGI side reports into
a contact record: times, number, queue and wait, agents, outcome.

Pure: times are passed in (`now`, epoch seconds of reception; AMI events carry no timestamp unless
`timestampevents` is on). Events are read through `CallEvent`, a normalised view built from either
a typed event object (attributes `uniqueid`, `linkedid`, `channel`, `caller_id_num`, `context_id`,
`queue`, `member_name`, `interface`, `dest_channel`, optional `hold_time`, `dial_status`,
`response`) or a raw AMI header dict (`Event`, `Uniqueid`, `Linkedid`, `ChanVariable`, ...).

Outcome rules (first match wins):
1. an agent connected (AgentConnect, or DialEnd ANSWER towards an agent; on an agent-first callback
   the agent's own leg is the call's first channel, and the customer answering it connects) → answered
2. the IVR reported the caller served themselves (or a notification was delivered) → self_served
3. the IVR reported the caller asked to be called back (menu action `callback`, accepted: the IVR
   hung up; the callback itself is a contact of its own) → callback_requested, not abandoned
4. origination failed (OriginateResponse Failure) or the IVR reported a failure → failed
5. the call has not ended → in_progress
6. an outbound call (callback, notification) that reached nobody → failed
7. an inbound call that hung up before any agent connected (QueueCallerAbandon or earlier) → abandoned

A call ends when its first channel (Uniqueid == Linkedid) has hung up and no other channel of the
call that we saw is still up.

Wait and talk: `wait_seconds` is the queue's HoldTime (or the time since joining the queue / dialling
the agent); on an agent-first callback it is the time from the call's start (the agent's phone
ringing) until the customer answered. `talk_seconds` runs from the connection to the end of the call.

Queue: the name a supervisor knows (`general`, domain/queue_names.queue_label), not Asterisk's
(`ivr-general`), as the wallboard and the reports show it.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ivrserver.domain import phone
from ivrserver.domain.model import Contact, ContactKind, Outcome
from ivrserver.domain.queue_names import queue_label

TRACKED = frozenset({
    "Newchannel", "Hangup", "DialBegin", "DialEnd", "QueueCallerJoin", "QueueCallerLeave",
    "QueueCallerAbandon", "AgentCalled", "AgentConnect", "AgentComplete", "AgentRingNoAnswer",
    "OriginateResponse",
})

_HEADER_FIELDS = {
    "uniqueid": "Uniqueid", "linkedid": "Linkedid", "channel": "Channel",
    "caller_id_num": "CallerIDNum", "context_id": "ChanVariable", "queue": "Queue",
    "member_name": "MemberName", "interface": "Interface", "dest_channel": "DestChannel",
    "dial_status": "DialStatus", "response": "Response",
}
CONTEXT_VARIABLE = "IVR_CONTEXT_ID"
_CHANNEL_SUFFIX = re.compile(r"-[0-9a-fA-F]{6,}(;[12])?$")
_MAX_FIELD = 256
_CONTROL = re.compile(r"[\x00-\x1f]")  # one C scan per field (a generator over each character was 1 % of a call)


@dataclass(frozen=True)
class CallEvent:
    """The parts of one AMI event that contact tracking reads."""

    name: str
    linkedid: str
    uniqueid: str = ""
    channel: str = ""
    caller_id_num: str = ""
    context_id: str = ""
    queue: str = ""
    member_name: str = ""
    interface: str = ""
    dest_channel: str = ""
    hold_time: float | None = None
    dial_status: str = ""
    response: str = ""


def _clean(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    value = value.strip()
    if len(value) > _MAX_FIELD or _CONTROL.search(value):
        return ""
    return value


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = float(value.strip())
    else:
        return None
    return number if 0 <= number < 7 * 86400 else None


def _build(name: str, get: Any) -> CallEvent | None:
    if name not in TRACKED:
        return None
    fields = {f: _clean(get(f)) for f in _HEADER_FIELDS}
    # OriginateResponse carries no Linkedid: the pre-assigned Uniqueid (ChannelId) names the call.
    fields["linkedid"] = fields["linkedid"] or fields["uniqueid"]
    if not fields["linkedid"]:
        return None
    return CallEvent(name=name, hold_time=_seconds(get("hold_time")), **fields)


def event_from_object(event: object) -> CallEvent | None:
    """A CallEvent from a typed event (its `event` class attribute or class name is the AMI event
    name, as in `ivrserver.pbx.ami_events`); None if not tracked."""
    name = getattr(type(event), "event", "") or type(event).__name__
    return _build(name if isinstance(name, str) else "", lambda f: getattr(event, f, None))


def _last(value: Any) -> Any:
    """panoramisk gives a repeated header as a list: the last one counts."""
    return value[-1] if isinstance(value, list) and value else value


def _channel_variable(headers: Mapping[str, Any], name: str) -> str:
    """The value of `ChanVariable: NAME=value` (channelvars= in manager.conf), '' if absent."""
    values = headers.get("ChanVariable")
    for item in values if isinstance(values, list) else [values]:
        key, sep, value = str(item).partition("=")
        if sep and key == name:
            return value
    return ""


def event_from_headers(headers: Mapping[str, Any]) -> CallEvent | None:
    """A CallEvent from raw AMI headers; None if not tracked or without a Linkedid/Uniqueid."""
    name = _last(headers.get("Event", ""))

    def get(field: str) -> Any:
        if field == "hold_time":
            return _last(headers.get("HoldTime"))
        if field == "context_id":
            return _channel_variable(headers, CONTEXT_VARIABLE)
        return _last(headers.get(_HEADER_FIELDS[field]))
    return _build(name if isinstance(name, str) else "", get)


def channel_interface(channel: str) -> str:
    """``PJSIP/agent1003-0000001a`` → ``PJSIP/agent1003``; ``Local/1003@ctx-00000001;1`` → ``Local/1003@ctx``."""
    return _CHANNEL_SUFFIX.sub("", channel)


def _endpoint(interface: str) -> str:
    return interface.split("/", 1)[1] if "/" in interface else interface


@dataclass(frozen=True)
class CallFacts:
    """What the FastAGI side (or the callback/notification service) knows about a call.

    Only the fields that are not None change the call; `ivr_step` appends to the IVR path.
    """

    kind: ContactKind | None = None
    number: str | None = None
    customer_id: str | None = None
    ivr_step: str | None = None
    routing_reason: str | None = None
    context_id: str | None = None
    self_served: bool | None = None
    callback_requested: bool | None = None
    failed: bool | None = None


@dataclass(frozen=True)
class CallState:
    linkedid: str
    started_at: float
    last_seen_at: float
    kind: ContactKind = ContactKind.INBOUND
    number: str = ""
    customer_id: str | None = None
    context_id: str = ""
    ivr_path: tuple[str, ...] = ()
    routing_reason: str = ""
    queue: str | None = None
    joined_at: float | None = None
    dialled_at: float | None = None
    wait_seconds: float | None = None
    agents: tuple[str, ...] = ()
    origin_agent: str | None = None  # the agent whose phone is the call's first channel (callbacks)
    connected: bool = False
    connected_at: float | None = None
    abandoned: bool = False
    self_served: bool = False
    callback_requested: bool = False
    failed: bool = False
    reported: bool = False
    uniqueids: frozenset[str] = frozenset()
    live: frozenset[str] = frozenset()
    origin_gone: bool = False
    ended_at: float | None = None

    @property
    def interesting(self) -> bool:
        """Worth a contact record: the IVR, a queue, an agent or an originate was involved."""
        return self.reported or self.queue is not None or self.connected or self.failed


MAX_IVR_PATH = 50
MAX_AGENTS = 10


def _agent_for(ev: CallEvent, agents: Mapping[str, str] | None) -> str | None:
    """The agent id a queue/dial event connected to; None if the destination is not an agent."""
    interface = channel_interface(ev.dest_channel) if ev.dest_channel else ev.interface
    if agents is not None:
        return agents.get(interface) or (agents.get(ev.interface) if ev.interface else None)
    if interface:
        return _endpoint(interface)
    return ev.member_name or None


def _add_agent(state: CallState, agent: str | None) -> tuple[str, ...]:
    if not agent or agent in state.agents or len(state.agents) >= MAX_AGENTS:
        return state.agents
    return (*state.agents, agent)


def new_call(linkedid: str, now: float) -> CallState:
    return CallState(linkedid=linkedid, started_at=now, last_seen_at=now)


def apply_event(state: CallState, ev: CallEvent, now: float,
                agents: Mapping[str, str] | None = None) -> CallState:
    """The call after one of its events (events of other calls must not be passed).

    `agents` maps dial interfaces to agent ids (see `CallBook`).
    """
    changes: dict[str, Any] = {"last_seen_at": now}
    uid = ev.uniqueid
    if uid:
        changes["uniqueids"] = state.uniqueids | {uid}
        if ev.name != "Hangup":
            changes["live"] = state.live | {uid}
    if uid == state.linkedid:
        if ev.caller_id_num and not state.number:
            changes["number"] = ev.caller_id_num
        if state.origin_agent is None and ev.channel and ev.name == "Newchannel":
            changes["origin_agent"] = _origin_agent(ev.channel, agents)
    if ev.context_id and not state.context_id:
        changes["context_id"] = ev.context_id
    name = ev.name
    if name == "QueueCallerJoin":
        changes.update(queue=queue_label(ev.queue) if ev.queue else state.queue, joined_at=now)
    elif name == "AgentConnect":
        changes.update(connected=True, agents=_add_agent(state, _agent_for(ev, agents)),
                       wait_seconds=_wait(state, ev, now, state.joined_at),
                       connected_at=state.connected_at if state.connected_at is not None else now)
    elif name == "QueueCallerAbandon":
        changes.update(abandoned=True, wait_seconds=_wait(state, ev, now, state.joined_at))
    elif name == "DialBegin" and uid and state.dialled_at is None and state.joined_at is None:
        changes["dialled_at"] = now
    elif name == "DialEnd" and uid and ev.dial_status.upper() == "ANSWER":
        # A direct Dial of an agent (sticky routing); queue member dials also end here, harmlessly.
        agent = _agent_for(ev, agents)
        if agent is not None:
            since = state.joined_at if state.joined_at is not None else state.dialled_at
            wait = state.wait_seconds if state.connected else _wait(state, ev, now, since)
            changes.update(connected=True, agents=_add_agent(state, agent), wait_seconds=wait,
                           connected_at=state.connected_at if state.connected_at is not None else now)
        elif (uid == state.linkedid and state.origin_agent and state.kind is ContactKind.CALLBACK
              and not state.connected):
            # Agent-first callback: the agent's leg (the call's first channel) dialled the customer,
            # who answered: the agent and the customer are connected.
            changes.update(connected=True, agents=_add_agent(state, state.origin_agent),
                           wait_seconds=round(max(0.0, now - state.started_at), 3), connected_at=now)
    elif name == "Hangup":
        live = state.live - {uid}
        origin_gone = state.origin_gone or uid == state.linkedid
        changes.update(live=live, origin_gone=origin_gone)
        if origin_gone and not live:
            changes["ended_at"] = now
    elif name == "OriginateResponse" and ev.response.lower() == "failure":
        changes.update(failed=True, ended_at=now)
    return dataclasses.replace(state, **changes)


def _origin_agent(channel: str, agents: Mapping[str, str] | None) -> str | None:
    """The agent whose phone a call's first channel is (an agent-first callback), else None."""
    interface = channel_interface(channel)
    if agents is not None:
        return agents.get(interface)
    return _endpoint(interface) or None


def _wait(state: CallState, ev: CallEvent, now: float, since: float | None) -> float | None:
    """Queue HoldTime when Asterisk gave one, else the time since `since`."""
    if ev.hold_time is not None:
        return ev.hold_time
    if since is not None:
        return round(max(0.0, now - since), 3)
    return state.wait_seconds


def apply_facts(state: CallState, facts: CallFacts, now: float) -> CallState:
    changes: dict[str, Any] = {"reported": True, "last_seen_at": max(state.last_seen_at, now)}
    if facts.kind is not None:
        changes["kind"] = facts.kind
    if facts.number is not None:
        changes["number"] = facts.number
    if facts.customer_id is not None:
        changes["customer_id"] = facts.customer_id or None
    if facts.ivr_step and len(state.ivr_path) < MAX_IVR_PATH:
        changes["ivr_path"] = (*state.ivr_path, facts.ivr_step)
    if facts.routing_reason is not None:
        changes["routing_reason"] = facts.routing_reason
    if facts.context_id and not state.context_id:
        changes["context_id"] = facts.context_id
    if facts.self_served is not None:
        changes["self_served"] = facts.self_served
    if facts.callback_requested is not None:
        changes["callback_requested"] = facts.callback_requested
    if facts.failed is not None:
        changes["failed"] = facts.failed
    return dataclasses.replace(state, **changes)


def outcome(state: CallState) -> Outcome:
    if state.connected:
        return Outcome.ANSWERED
    if state.self_served:
        return Outcome.SELF_SERVED
    if state.callback_requested:
        return Outcome.CALLBACK_REQUESTED
    if state.failed:
        return Outcome.FAILED
    if state.ended_at is None:
        return Outcome.IN_PROGRESS
    if state.kind is not ContactKind.INBOUND:
        return Outcome.FAILED
    return Outcome.ABANDONED


def to_contact(state: CallState, contact_id: str, default_country: str = "") -> Contact:
    """The contact record of a call; a withheld or malformed number is recorded as ''."""
    return Contact(
        id=contact_id, kind=state.kind,
        number=phone.try_normalise(state.number, default_country) or "",
        started_at=state.started_at, customer_id=state.customer_id, ended_at=state.ended_at,
        ivr_path=state.ivr_path, routing_reason=state.routing_reason, queue=state.queue,
        wait_seconds=state.wait_seconds, agents=state.agents, outcome=outcome(state),
        talk_seconds=talk_seconds(state),
    )


def talk_seconds(state: CallState) -> float | None:
    """From the connection to the end of the call; None until both are known."""
    if state.connected_at is None or state.ended_at is None:
        return None
    return round(max(0.0, state.ended_at - state.connected_at), 3)


class CallBook:
    """Every call in progress, keyed by Linkedid. Pure bookkeeping: no I/O, time passed in.

    `agents` maps dial interfaces (``PJSIP/agent1003``) to agent ids; without it the endpoint name
    of a connected destination is taken as the agent id. Finished calls are remembered (the last
    `remember_finished`) so that late events are ignored and late FastAGI facts still count.
    """

    def __init__(self, agents: Mapping[str, str] | None = None, max_calls: int = 20000,
                 remember_finished: int = 5000) -> None:
        self.agents = dict(agents) if agents is not None else None
        self.max_calls = max_calls
        self._calls: OrderedDict[str, CallState] = OrderedDict()
        self._linked: dict[str, str] = {}
        self._pending: dict[str, list[tuple[CallFacts, float]]] = {}
        self._finished: OrderedDict[str, CallState] = OrderedDict()
        self._remember = remember_finished

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, linkedid: str) -> CallState | None:
        return self._calls.get(linkedid) or self._finished.get(linkedid)

    def on_event(self, ev: CallEvent, now: float) -> list[CallState]:
        """Apply one event. Returns the changed call states: the event's call (unless it had already
        finished: late events are ignored) and any call evicted to stay within `max_calls`.
        A state with `ended_at` set has left the book.
        """
        if ev.linkedid in self._finished:
            return []
        pending = self._pending.pop(ev.uniqueid, []) if ev.uniqueid not in self._linked else []
        state = self._calls.get(ev.linkedid) or new_call(ev.linkedid, min([now, *(at for _, at in pending)]))
        if ev.uniqueid:
            self._linked.setdefault(ev.uniqueid, ev.linkedid)
        for facts, at in pending:
            state = apply_facts(state, facts, at)
        state = apply_event(state, ev, now, self.agents)
        if state.ended_at is not None:
            return [self._finish(state)]
        return [state, *self._store(state)]

    def on_facts(self, uniqueid: str, facts: CallFacts, now: float) -> CallState | None:
        """Apply what the FastAGI side reports for the channel `uniqueid`; returns the call's state.

        If no AMI event has named that channel yet, the facts wait (see `expire`) and None is
        returned. Facts for a call that just finished update its final state (returned, ended).
        """
        linkedid = self._linked.get(uniqueid) or (uniqueid if uniqueid in self._finished else None)
        if linkedid is None:
            pending = self._pending.setdefault(uniqueid, [])
            if len(pending) < MAX_IVR_PATH * 2:
                pending.append((facts, now))
            return None
        done = self._finished.get(linkedid)
        if done is not None:
            state = apply_facts(done, facts, now)
            self._finished[linkedid] = state
            return state
        state = apply_facts(self._calls.get(linkedid) or new_call(linkedid, now), facts, now)
        self._store(state)
        return state

    def expire(self, now: float, max_age: float) -> list[CallState]:
        """End calls silent for `max_age` seconds (missed Hangup, AMI outage) and stale pending facts."""
        out: list[CallState] = []
        for state in list(self._calls.values()):
            if now - state.last_seen_at >= max_age:
                out.append(self._finish(dataclasses.replace(state, ended_at=state.last_seen_at)))
        for uniqueid, items in list(self._pending.items()):
            if now - items[0][1] >= max_age:
                del self._pending[uniqueid]
                state = new_call(uniqueid, items[0][1])
                for facts, at in items:
                    state = apply_facts(state, facts, at)
                out.append(self._finish(dataclasses.replace(state, ended_at=state.last_seen_at)))
        return out

    def _store(self, state: CallState) -> list[CallState]:
        self._calls[state.linkedid] = state
        self._calls.move_to_end(state.linkedid)
        evicted: list[CallState] = []
        while len(self._calls) > self.max_calls:
            oldest = next(iter(self._calls.values()))
            evicted.append(self._finish(dataclasses.replace(oldest, ended_at=oldest.last_seen_at)))
        return evicted

    def _finish(self, state: CallState) -> CallState:
        self._calls.pop(state.linkedid, None)
        for uid in state.uniqueids:
            self._linked.pop(uid, None)
        self._finished[state.linkedid] = state
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)
        return state
