"""Strict parsing of AMI events, from wire transcripts as Asterisk 22 writes them."""

import pytest

from ivrserver.pbx import ami_events as ev
from ivrserver.pbx.ami import parse_headers


def headers(transcript: str) -> dict[str, object]:
    """Parse a transcript as the AMI adapter does (panoramisk's rules: repeated headers become a list)."""
    return parse_headers(transcript.strip().replace("\n", "\r\n"))


DIAL_BEGIN_QUEUE = """
Event: DialBegin
Privilege: call,all
Channel: PJSIP/callers-00000004
Uniqueid: 1763870000.8
Linkedid: 1763870000.8
CallerIDNum: 15550001
CallerIDName: <unknown>
ChanVariable: IVR_CONTEXT_ID=c-0123456789abcdef
ChanVariable: CB_ID=
DestChannel: PJSIP/agent1001-00000005
DestUniqueid: 1763870000.9
DestLinkedid: 1763870000.8
DialString: agent1001
"""

DIAL_BEGIN_ORIGINATE = """
Event: DialBegin
Privilege: call,all
DestChannel: PJSIP/agent1003-00000007
DestUniqueid: cb-42-1
DestLinkedid: cb-42-1
DestChanVariable: IVR_CONTEXT_ID=cb-cb-42-1
DestChanVariable: CB_ID=cb-42
DialString: agent1003
"""

QUEUE_MEMBER = """
Event: QueueMember
Queue: ivr-vip
Name: agent1001
Location: PJSIP/agent1001
StateInterface: PJSIP/agent1001
Membership: static
Penalty: 0
CallsTaken: 3
LastCall: 1763869000
LastPause: 0
InCall: 0
Status: 1
Paused: 0
PausedReason:
ActionID: action/1
"""

HANGUP = """
Event: Hangup
Channel: PJSIP/callers-00000004
Uniqueid: 1763870000.8
Linkedid: 1763870000.8
CallerIDNum: 15550001
Cause: 16
Cause-txt: Normal Clearing
"""


def test_dial_begin_from_a_caller_carries_the_context_id() -> None:
    event = ev.parse_event(headers(DIAL_BEGIN_QUEUE))
    assert isinstance(event, ev.DialBegin)
    assert (event.linkedid, event.context_id, event.dest_channel, event.dest_uniqueid) == (
        "1763870000.8", "c-0123456789abcdef", "PJSIP/agent1001-00000005", "1763870000.9")


def test_dial_begin_of_an_originate_has_no_caller_and_reads_dest_variables() -> None:
    event = ev.parse_event(headers(DIAL_BEGIN_ORIGINATE))
    assert isinstance(event, ev.DialBegin)
    assert (event.channel, event.linkedid, event.context_id) == ("", "cb-42-1", "cb-cb-42-1")


def test_queue_member_reply_and_hangup() -> None:
    member = ev.parse_event(headers(QUEUE_MEMBER))
    assert isinstance(member, ev.QueueMember)
    assert (member.interface, member.status, member.paused, member.calls_taken) == ("PJSIP/agent1001", 1, False, 3)
    hangup = ev.parse_event(headers(HANGUP))
    assert isinstance(hangup, ev.Hangup)
    assert (hangup.cause, hangup.cause_txt) == (16, "Normal Clearing")


@pytest.mark.parametrize(("transcript", "missing"), [
    (HANGUP.replace("Uniqueid: 1763870000.8\n", ""), "Uniqueid"),
    (DIAL_BEGIN_QUEUE.replace("DestChannel: PJSIP/agent1001-00000005\n", ""), "DestChannel"),
    (QUEUE_MEMBER.replace("Location: PJSIP/agent1001\n", ""), "Location"),
])
def test_missing_required_header_is_an_error_not_an_empty_string(transcript: str, missing: str) -> None:
    with pytest.raises(ev.AmiParseError, match=missing):
        ev.parse_event(headers(transcript))


def test_bad_number_and_unused_events() -> None:
    with pytest.raises(ev.AmiParseError, match="Cause"):
        ev.parse_event(headers(HANGUP.replace("Cause: 16", "Cause: sixteen")))
    assert ev.parse_event({"Event": "VarSet", "Channel": "x"}) is None
    with pytest.raises(ev.AmiParseError):
        ev.parse_event({"Response": "Success"})


def test_user_event_keeps_its_headers() -> None:
    event = ev.parse_event({"Event": "UserEvent", "UserEvent": "CallbackResult", "CB_ID": "cb-1",
                            "Status": "ANSWER"})
    assert isinstance(event, ev.UserEvent)
    assert (event.name, event.headers["CB_ID"], event.headers["Status"]) == ("CallbackResult", "cb-1", "ANSWER")


def test_manager_conf_filters_exactly_the_events_ivrserver_parses() -> None:
    """asterisk-config/manager.conf whitelists events by name: the list must follow PARSERS, or
    Asterisk would silently stop sending an event ivrserver starts to consume."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "asterisk-config" / "manager.conf").read_text()
    filtered = set(re.findall(r"^eventfilter\(name\((\w+)\)\)\s*=\s*$", text, flags=re.MULTILINE))
    assert filtered == set(ev.EVENT_NAMES)
