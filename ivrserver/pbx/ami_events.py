"""Typed AMI events, parsed strictly from the header mapping of one AMI message.

Wire form (Asterisk 22, manager_channels.c / app_queue.c), e.g.::

    Event: AgentCalled
    Channel: PJSIP/callers-00000001
    CallerIDNum: 15550001
    Uniqueid: 1732330000.1
    Linkedid: 1732330000.1
    ChanVariable: IVR_CONTEXT_ID=c-4f2a
    DestChannel: PJSIP/agent1001-00000002
    DestUniqueid: 1732330000.2
    DestLinkedid: 1732330000.1
    Queue: vip
    MemberName: agent1001
    Interface: PJSIP/agent1001

A missing required header raises AmiParseError (panoramisk's Message returns '' for a missing
header, which silently turns bugs into empty strings; here every read is explicit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

CONTEXT_VAR = "IVR_CONTEXT_ID"


class AmiParseError(ValueError):
    """An event lacks a header it must carry, or carries an invalid value."""


def _req(h: Mapping[str, Any], name: str) -> str:
    value = h.get(name)
    if value is None:
        raise AmiParseError(f"{h.get('Event', '?')}: missing header {name}")
    if isinstance(value, list):
        value = value[-1]
    return str(value)


def _opt(h: Mapping[str, Any], name: str, default: str = "") -> str:
    value = h.get(name)
    if value is None:
        return default
    if isinstance(value, list):
        value = value[-1]
    return str(value)


def _int(h: Mapping[str, Any], name: str, default: int = 0) -> int:
    raw = _opt(h, name)
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise AmiParseError(f"{h.get('Event', '?')}: header {name} is not a number: {raw!r}") from exc


def _chan_var(h: Mapping[str, Any], header: str, name: str) -> str:
    values = h.get(header)
    if values is None:
        return ""
    for item in values if isinstance(values, list) else [values]:
        key, sep, val = str(item).partition("=")
        if sep and key == name:
            return val
    return ""


@dataclass(frozen=True)
class ChannelEvent:
    """Fields every channel-snapshot event carries."""

    event: ClassVar[str] = ""
    channel: str
    uniqueid: str
    linkedid: str
    caller_id_num: str
    caller_id_name: str
    context_id: str

    @staticmethod
    def snapshot(h: Mapping[str, Any]) -> dict[str, str]:
        return {
            "channel": _req(h, "Channel"),
            "uniqueid": _req(h, "Uniqueid"),
            "linkedid": _req(h, "Linkedid"),
            "caller_id_num": _opt(h, "CallerIDNum"),
            "caller_id_name": _opt(h, "CallerIDName"),
            "context_id": _chan_var(h, "ChanVariable", CONTEXT_VAR),
        }


@dataclass(frozen=True)
class QueueMemberEvent(ChannelEvent):
    """Queue events that name a member: the Dest… snapshot is the agent's leg."""

    queue: str
    member_name: str
    interface: str
    dest_channel: str
    dest_uniqueid: str

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> QueueMemberEvent:
        return cls(**cls.snapshot(h), **cls._member(h))

    @staticmethod
    def _member(h: Mapping[str, Any]) -> dict[str, str]:
        return {
            "queue": _req(h, "Queue"),
            "member_name": _opt(h, "MemberName"),
            "interface": _req(h, "Interface"),
            "dest_channel": _opt(h, "DestChannel"),
            "dest_uniqueid": _opt(h, "DestUniqueid"),
        }


@dataclass(frozen=True)
class AgentCalled(QueueMemberEvent):
    event: ClassVar[str] = "AgentCalled"


@dataclass(frozen=True)
class AgentConnect(QueueMemberEvent):
    event: ClassVar[str] = "AgentConnect"
    hold_time: int = 0
    ring_time: int = 0

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> AgentConnect:
        return cls(**cls.snapshot(h), **cls._member(h), hold_time=_int(h, "HoldTime"),
                   ring_time=_int(h, "RingTime"))


@dataclass(frozen=True)
class AgentComplete(QueueMemberEvent):
    event: ClassVar[str] = "AgentComplete"
    hold_time: int = 0
    talk_time: int = 0
    reason: str = ""

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> AgentComplete:
        return cls(**cls.snapshot(h), **cls._member(h), hold_time=_int(h, "HoldTime"),
                   talk_time=_int(h, "TalkTime"), reason=_opt(h, "Reason"))


@dataclass(frozen=True)
class AgentRingNoAnswer(QueueMemberEvent):
    event: ClassVar[str] = "AgentRingNoAnswer"
    ring_time: int = 0

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> AgentRingNoAnswer:
        return cls(**cls.snapshot(h), **cls._member(h), ring_time=_int(h, "RingTime"))


@dataclass(frozen=True)
class QueueCallerJoin(ChannelEvent):
    event: ClassVar[str] = "QueueCallerJoin"
    queue: str = ""
    position: int = 0
    count: int = 0
    priority: int = 0  # the caller's QUEUE_PRIO (manager.conf channelvars), 0 when absent

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> QueueCallerJoin:
        prio = _chan_var(h, "ChanVariable", "QUEUE_PRIO")
        return cls(**cls.snapshot(h), queue=_req(h, "Queue"), position=_int(h, "Position"),
                   count=_int(h, "Count"), priority=int(prio) if prio.isdigit() else 0)


@dataclass(frozen=True)
class QueueCallerLeave(ChannelEvent):
    event: ClassVar[str] = "QueueCallerLeave"
    queue: str = ""
    position: int = 0
    count: int = 0

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> QueueCallerLeave:
        return cls(**cls.snapshot(h), queue=_req(h, "Queue"), position=_int(h, "Position"),
                   count=_int(h, "Count"))


@dataclass(frozen=True)
class QueueCallerAbandon(ChannelEvent):
    event: ClassVar[str] = "QueueCallerAbandon"
    queue: str = ""
    position: int = 0
    original_position: int = 0
    hold_time: int = 0

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> QueueCallerAbandon:
        return cls(**cls.snapshot(h), queue=_req(h, "Queue"), position=_int(h, "Position"),
                   original_position=_int(h, "OriginalPosition"), hold_time=_int(h, "HoldTime"))


@dataclass(frozen=True)
class QueueMemberStatus:
    """Not a channel event: the state of one queue member (device state, pause)."""

    event: ClassVar[str] = "QueueMemberStatus"
    queue: str
    member_name: str
    interface: str
    status: int
    paused: bool
    in_call: bool
    calls_taken: int
    last_call: int

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> QueueMemberStatus:
        return cls(queue=_req(h, "Queue"), member_name=_opt(h, "MemberName"), interface=_req(h, "Interface"),
                   status=_int(h, "Status"), paused=_opt(h, "Paused") == "1", in_call=_opt(h, "InCall") == "1",
                   calls_taken=_int(h, "CallsTaken"), last_call=_int(h, "LastCall"))


@dataclass(frozen=True)
class QueueMember(QueueMemberStatus):
    """One member in the reply to the QueueStatus action (sent at every AMI login so agent state
    is right after a restart). Same meaning as QueueMemberStatus; the interface is `Location`."""

    event: ClassVar[str] = "QueueMember"

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> QueueMember:
        return cls(queue=_req(h, "Queue"), member_name=_opt(h, "Name"), interface=_req(h, "Location"),
                   status=_int(h, "Status"), paused=_opt(h, "Paused") == "1", in_call=_opt(h, "InCall") == "1",
                   calls_taken=_int(h, "CallsTaken"), last_call=_int(h, "LastCall"))


@dataclass(frozen=True)
class QueueMemberPause(QueueMemberStatus):
    event: ClassVar[str] = "QueueMemberPause"


@dataclass(frozen=True)
class QueueMemberAdded(QueueMemberStatus):
    event: ClassVar[str] = "QueueMemberAdded"


@dataclass(frozen=True)
class QueueMemberRemoved(QueueMemberStatus):
    event: ClassVar[str] = "QueueMemberRemoved"


@dataclass(frozen=True)
class Newchannel(ChannelEvent):
    event: ClassVar[str] = "Newchannel"
    exten: str = ""
    context: str = ""

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> Newchannel:
        return cls(**cls.snapshot(h), exten=_opt(h, "Exten"), context=_opt(h, "Context"))


@dataclass(frozen=True)
class Hangup(ChannelEvent):
    event: ClassVar[str] = "Hangup"
    cause: int = 0
    cause_txt: str = ""

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> Hangup:
        return cls(**cls.snapshot(h), cause=_int(h, "Cause"), cause_txt=_opt(h, "Cause-txt"))


@dataclass(frozen=True)
class DialBegin(ChannelEvent):
    """Caller snapshot may be absent (originated calls): the Dest… snapshot is required."""

    event: ClassVar[str] = "DialBegin"
    dest_channel: str = ""
    dest_uniqueid: str = ""
    dial_string: str = ""

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> DialBegin:
        base = cls._dial_base(h)
        return cls(**base, dest_channel=_req(h, "DestChannel"), dest_uniqueid=_req(h, "DestUniqueid"),
                   dial_string=_opt(h, "DialString"))

    @staticmethod
    def _dial_base(h: Mapping[str, Any]) -> dict[str, str]:
        if "Channel" in h:
            return ChannelEvent.snapshot(h)
        return {"channel": "", "uniqueid": "", "linkedid": _req(h, "DestLinkedid"),
                "caller_id_num": _opt(h, "DestConnectedLineNum"), "caller_id_name": "",
                "context_id": _chan_var(h, "DestChanVariable", CONTEXT_VAR)}


@dataclass(frozen=True)
class DialEnd(ChannelEvent):
    event: ClassVar[str] = "DialEnd"
    dest_channel: str = ""
    dest_uniqueid: str = ""
    dial_status: str = ""

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> DialEnd:
        return cls(**DialBegin._dial_base(h), dest_channel=_req(h, "DestChannel"),
                   dest_uniqueid=_req(h, "DestUniqueid"), dial_status=_req(h, "DialStatus"))


@dataclass(frozen=True)
class OriginateResponse:
    event: ClassVar[str] = "OriginateResponse"
    action_id: str
    response: str  # Success | Failure
    reason: int
    channel: str
    uniqueid: str

    @property
    def success(self) -> bool:
        return self.response == "Success"

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> OriginateResponse:
        return cls(action_id=_opt(h, "ActionID"), response=_req(h, "Response"), reason=_int(h, "Reason"),
                   channel=_opt(h, "Channel"), uniqueid=_opt(h, "Uniqueid"))


@dataclass(frozen=True)
class UserEvent:
    event: ClassVar[str] = "UserEvent"
    name: str
    headers: Mapping[str, str]

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> UserEvent:
        return cls(name=_req(h, "UserEvent"),
                   headers={str(k): str(v) for k, v in h.items() if k not in ("Event", "UserEvent")})


@dataclass(frozen=True)
class FullyBooted:
    event: ClassVar[str] = "FullyBooted"
    status: str

    @classmethod
    def parse(cls, h: Mapping[str, Any]) -> FullyBooted:
        return cls(status=_opt(h, "Status"))


AmiEvent = (AgentCalled | AgentConnect | AgentComplete | AgentRingNoAnswer | QueueCallerJoin | QueueCallerLeave
            | QueueCallerAbandon | QueueMemberStatus | QueueMember | QueueMemberPause | QueueMemberAdded
            | QueueMemberRemoved | Newchannel | Hangup | DialBegin | DialEnd
            | OriginateResponse | UserEvent | FullyBooted)

PARSERS: dict[str, Any] = {cls.event: cls.parse for cls in (
    AgentCalled, AgentConnect, AgentComplete, AgentRingNoAnswer, QueueCallerJoin, QueueCallerLeave,
    QueueCallerAbandon, QueueMemberStatus, QueueMember, QueueMemberPause, QueueMemberAdded, QueueMemberRemoved,
    Newchannel, Hangup, DialBegin, DialEnd, OriginateResponse,
    UserEvent, FullyBooted)}

EVENT_NAMES = frozenset(PARSERS)


def parse_event(headers: Mapping[str, Any]) -> AmiEvent | None:
    """Parse one AMI event; None for event types ivrserver does not use."""
    name = headers.get("Event")
    if not isinstance(name, str):
        raise AmiParseError("message has no Event header")
    parser = PARSERS.get(name)
    if parser is None:
        return None
    event: AmiEvent = parser(headers)
    return event
