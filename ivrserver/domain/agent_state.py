"""Agents' live state, folded from AMI queue and channel events.

Pure: stdlib only, no clock reads (every fold step gets `now`, epoch seconds).

Two sources of truth are combined:

* the queue member's *device status* (`QueueMemberStatus` `Status` 1..8, `Paused` 0/1): whether
  the agent is logged in, paused, and what Asterisk's device state says;
* the agent's *legs*: channels on the agent's endpoint that ring (`AgentCalled`, `DialBegin`) or
  are up (`AgentConnect`, `DialEnd` ANSWER) until they end (`AgentRingNoAnswer`,
  `AgentComplete`, non-ANSWER `DialEnd`, `Hangup`). Legs also cover direct `Dial()` routing,
  which never touches a queue.

A leg that was up and ends starts the wrap-up (`wrap_up_seconds`); wrap-up ends by time alone, so
`status_at(live, now)` turns an expired wrap-up into READY without any event.

Events are read by attribute, with the field names of the typed AMI events
(`ivrserver.pbx.ami_events`); the fold dispatches on the AMI event name (`event_name()`), so this
module needs no import from the adapter.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ivrserver.domain.model import Agent, AgentState, AgentStatus


class DeviceStatus(enum.IntEnum):
    """`Status` of QueueMemberStatus (Asterisk's ast_device_state)."""

    UNKNOWN = 0
    NOT_INUSE = 1
    INUSE = 2
    BUSY = 3
    INVALID = 4
    UNAVAILABLE = 5
    RINGING = 6
    RINGINUSE = 7
    ONHOLD = 8


_OFFLINE = frozenset({DeviceStatus.INVALID, DeviceStatus.UNAVAILABLE})
_TALKING = frozenset({DeviceStatus.INUSE, DeviceStatus.BUSY, DeviceStatus.RINGINUSE, DeviceStatus.ONHOLD})
# Device says "no channel here": any leg we still track was missed (AMI reconnect, event order).
_IDLE = frozenset({DeviceStatus.NOT_INUSE, DeviceStatus.INVALID, DeviceStatus.UNAVAILABLE})


class Leg(enum.StrEnum):
    RINGING = "ringing"
    UP = "up"


# ---------------------------------------------------------------------------------------------
# Input: the fields this fold reads, named as in ivrserver.pbx.ami_events. The typed events of
# ivrserver.pbx.ami_events (and any object with an `event` name and these attributes) fit.


class MemberStatusEvent(Protocol):
    """QueueMemberStatus (also QueueMember / QueueMemberAdded if the adapter emits them)."""

    interface: str  # "PJSIP/agent1003"
    status: int  # DeviceStatus code 0..8
    paused: bool


class MemberEvent(Protocol):
    """AgentCalled, AgentConnect, AgentRingNoAnswer, AgentComplete (QueueMemberPause adds `paused`)."""

    interface: str
    dest_channel: str  # the agent's leg, "PJSIP/agent1003-00000012"


class DialEvent(Protocol):
    """DialBegin / DialEnd: `dest_channel` is the dialled leg."""

    dest_channel: str
    dial_status: str  # DialEnd only: ANSWER, NOANSWER, BUSY, CANCEL, CHANUNAVAIL, CONGESTION …


class HangupEvent(Protocol):
    channel: str


def event_name(event: object) -> str:
    """The AMI event name: the adapter's `event` class attribute, else the class name."""
    name = getattr(event, "event", None)
    return name if isinstance(name, str) and name else type(event).__name__


# ---------------------------------------------------------------------------------------------
# State


@dataclass(frozen=True)
class AgentLive:
    """Everything known about one agent's presence; `status_at()` derives the AgentState."""

    agent_id: str
    logged_in: bool = False
    paused: bool = False
    device: DeviceStatus | None = None  # None: no QueueMemberStatus seen yet
    legs: tuple[tuple[str, Leg], ...] = ()  # (channel name, phase), sorted by channel name
    wrap_up_until: float = 0.0
    since: float = 0.0  # when the derived state last changed

    def leg(self, channel: str) -> Leg | None:
        for name, phase in self.legs:
            if name == channel:
                return phase
        return None


def derive_state(live: AgentLive, now: float) -> AgentState:
    if not live.logged_in:
        return AgentState.LOGGED_OUT
    phases = {phase for _, phase in live.legs}
    if Leg.UP in phases or live.device in _TALKING:
        return AgentState.ON_CALL
    if Leg.RINGING in phases or live.device == DeviceStatus.RINGING:
        return AgentState.RINGING
    if live.paused:
        return AgentState.PAUSED
    if now < live.wrap_up_until:
        return AgentState.WRAP_UP
    return AgentState.READY


def status_at(live: AgentLive, now: float) -> AgentStatus:
    """The agent's state at `now`; an expired wrap-up is READY since the wrap-up ended."""
    state = derive_state(live, now)
    since = live.since
    if state is AgentState.READY and since < live.wrap_up_until <= now:
        since = live.wrap_up_until
    return AgentStatus(agent_id=live.agent_id, state=state, since=since)


# ---------------------------------------------------------------------------------------------
# Endpoint → agent


_CHANNEL_SUFFIX = re.compile(r"-[0-9a-fA-F]{8}$")


class AgentDirectory:
    """Maps queue interfaces (`PJSIP/agent1003`) and channels (`PJSIP/agent1003-00000012`) to ids."""

    def __init__(self, agents: Mapping[str, Agent]) -> None:
        self._by_endpoint = {agent.endpoint.lower(): agent.id for agent in agents.values()}

    def agent_for(self, name: str) -> str | None:
        if not name:
            return None
        key = name.lower()
        found = self._by_endpoint.get(key)
        if found is not None:
            return found
        return self._by_endpoint.get(_CHANNEL_SUFFIX.sub("", key))


# ---------------------------------------------------------------------------------------------
# Fold


def _with_leg(live: AgentLive, channel: str, phase: Leg | None) -> AgentLive:
    legs = {name: p for name, p in live.legs}
    if phase is None:
        legs.pop(channel, None)
    else:
        legs[channel] = phase
        if live.device is None:
            # No member status seen yet (started mid-day): a ringing or answered leg proves presence.
            live = replace(live, logged_in=True)
    return replace(live, legs=tuple(sorted(legs.items())))


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip() not in ("", "0", "false", "no")
    return bool(value)


class AgentStateFold:
    """Pure fold of AMI events into AgentLive records, configured with the agent definitions."""

    def __init__(self, agents: Mapping[str, Agent], wrap_up_seconds: float) -> None:
        if wrap_up_seconds < 0:
            raise ValueError(f"wrap_up_seconds must be >= 0, got {wrap_up_seconds}")
        self.directory = AgentDirectory(agents)
        self.wrap_up_seconds = wrap_up_seconds
        self._handlers: dict[str, Callable[[AgentLive, Any, float], AgentLive]] = {
            "QueueMemberStatus": self._member_status,
            "QueueMember": self._member_status,  # QueueStatus action's reply, same fields
            "QueueMemberAdded": self._member_status,
            "QueueMemberRemoved": self._member_removed,
            "QueueMemberPause": self._member_pause,
            "AgentCalled": self._agent_called,
            "AgentConnect": self._agent_connect,
            "AgentRingNoAnswer": self._leg_ended,
            "AgentComplete": self._agent_complete,
            "DialBegin": self._dial_begin,
            "DialEnd": self._dial_end,
            "Hangup": self._hangup,
        }

    def handles(self, event: object) -> bool:
        return event_name(event) in self._handlers

    def agent_of(self, event: object) -> str | None:
        """Which defined agent the event is about, or None (not an agent event)."""
        kind = event_name(event)
        if kind not in self._handlers:
            return None
        if kind in ("DialBegin", "DialEnd"):
            return self.directory.agent_for(getattr(event, "dest_channel", ""))
        if kind == "Hangup":
            return self.directory.agent_for(getattr(event, "channel", ""))
        return self.directory.agent_for(getattr(event, "interface", "")) or self.directory.agent_for(
            getattr(event, "dest_channel", ""))

    def apply(self, states: Mapping[str, AgentLive], event: object, now: float) -> AgentLive | None:
        """Fold one event; returns the agent's new record if anything changed, else None."""
        agent_id = self.agent_of(event)
        if agent_id is None:
            return None
        before = states.get(agent_id) or AgentLive(agent_id=agent_id, since=now)
        after = self._handlers[event_name(event)](before, event, now)
        if after == before:
            return None
        if derive_state(after, now) != derive_state(before, now):
            after = replace(after, since=now)
        return after

    # -- handlers: (record, event, now) -> record

    def _end_legs(self, live: AgentLive, channels: list[str], now: float) -> AgentLive:
        was_up = any(live.leg(channel) is Leg.UP for channel in channels)
        for channel in channels:
            live = _with_leg(live, channel, None)
        if was_up and self.wrap_up_seconds > 0:
            live = replace(live, wrap_up_until=now + self.wrap_up_seconds)
        return live

    def _member_status(self, live: AgentLive, event: Any, now: float) -> AgentLive:
        try:
            device = DeviceStatus(int(event.status))
        except ValueError:
            return live
        live = replace(live, device=device, logged_in=device not in _OFFLINE,
                       paused=_flag(event.paused))
        if device in _IDLE and live.legs:
            live = self._end_legs(live, [name for name, _ in live.legs], now)
        return live

    def _member_removed(self, live: AgentLive, event: Any, now: float) -> AgentLive:
        return replace(live, logged_in=False, device=DeviceStatus.UNAVAILABLE)

    def _member_pause(self, live: AgentLive, event: Any, now: float) -> AgentLive:
        return replace(live, paused=_flag(event.paused))

    def _agent_called(self, live: AgentLive, event: Any, now: float) -> AgentLive:
        channel = event.dest_channel
        if live.leg(channel) is Leg.UP:
            return live
        return _with_leg(live, channel, Leg.RINGING)

    def _agent_connect(self, live: AgentLive, event: Any, now: float) -> AgentLive:
        return _with_leg(live, event.dest_channel, Leg.UP)

    def _leg_ended(self, live: AgentLive, event: Any, now: float) -> AgentLive:
        channel = event.dest_channel
        if live.leg(channel) is None:
            return live
        return self._end_legs(live, [channel], now)

    def _agent_complete(self, live: AgentLive, event: Any, now: float) -> AgentLive:
        # A queue call that was talked through: wrap-up even if its connect was missed.
        channel = event.dest_channel
        if live.leg(channel) is not Leg.UP:
            live = _with_leg(live, channel, Leg.UP)
        return self._end_legs(live, [channel], now)

    def _dial_begin(self, live: AgentLive, event: Any, now: float) -> AgentLive:
        return self._agent_called(live, event, now)

    def _dial_end(self, live: AgentLive, event: Any, now: float) -> AgentLive:
        if str(event.dial_status).upper() == "ANSWER":
            return self._agent_connect(live, event, now)
        return self._leg_ended(live, event, now)

    def _hangup(self, live: AgentLive, event: Any, now: float) -> AgentLive:
        channel = event.channel
        if live.leg(channel) is None:
            return live
        return self._end_legs(live, [channel], now)
