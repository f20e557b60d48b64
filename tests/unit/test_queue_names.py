"""One name for a queue wherever a supervisor looks (issue 20): domain/queue_names.py, and the
wallboard, the contact record and the reports' filter all going through it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ivrserver.domain import contact_tracking as ct
from ivrserver.domain import queue_names as qn
from ivrserver.domain import reports as rp
from ivrserver.domain import wallboard as wb
from ivrserver.pbx import asterisk_conf


@pytest.mark.parametrize(("name", "ours", "label"), [
    ("ivr-general", "general", "general"),
    ("ivr-vip", "vip", "vip"),
    ("general", None, "general"),  # already ours (the menus' name)
    ("support", None, "support"),  # a queue outside ivrserver keeps its name
    ("ivr-", None, "ivr-"),  # no name after the prefix: not ours
    ("ivr-ivr-x", "ivr-x", "ivr-x"),  # one prefix taken off, once
    ("IVR-general", None, "IVR-general"),  # Asterisk queue names are case-sensitive
    ("", None, ""),
])
def test_asterisk_names_to_ours(name: str, ours: str | None, label: str) -> None:
    assert qn.ivr_queue(name) == ours
    assert qn.queue_label(name) == label


@pytest.mark.parametrize("name", ["general", "vip", "faults", "a.b:c-d_e"])
def test_round_trip(name: str) -> None:
    assert qn.asterisk_queue(name) == f"ivr-{name}"
    assert qn.ivr_queue(qn.asterisk_queue(name)) == name
    assert qn.queue_label(qn.asterisk_queue(name)) == qn.queue_label(name) == name


def test_the_adapters_use_the_same_conversion() -> None:
    assert asterisk_conf.ivr_queue is qn.ivr_queue
    assert asterisk_conf.asterisk_queue is qn.asterisk_queue
    assert asterisk_conf.QUEUE_PREFIX == qn.QUEUE_PREFIX


@dataclass
class QueueCallerJoin:
    uniqueid: str
    queue: str
    event: str = "QueueCallerJoin"


@pytest.mark.parametrize(("asterisk", "board"), [("ivr-general", "general"), ("ivr-vip", "vip"), ("support", None)])
def test_the_wallboard_and_the_contact_record_name_a_queue_alike(asterisk: str, board: str | None) -> None:
    facts = wb.facts_of(QueueCallerJoin("1.1", asterisk), 100.0)
    assert [f.queue for f in facts] == ([board] if board else [])
    state = ct.apply_event(ct.new_call("1.1", 99.0), ct.CallEvent("QueueCallerJoin", "1.1", "1.1", queue=asterisk),
                           100.0)
    # the contact keeps a foreign queue as Asterisk names it (it is still where the caller waited)
    assert state.queue == (board or asterisk)
    assert ct.to_contact(state, "k").queue == (board or asterisk)


def test_a_join_without_a_queue_keeps_the_known_one() -> None:
    state = ct.apply_event(ct.new_call("1.1", 99.0), ct.CallEvent("QueueCallerJoin", "1.1", "1.1",
                                                                  queue="ivr-faults"), 100.0)
    state = ct.apply_event(state, ct.CallEvent("QueueCallerJoin", "1.1", "1.1"), 101.0)
    assert state.queue == "faults"


@pytest.mark.parametrize(("report", "given", "filtered"), [
    ("queues", "general", "general"),
    ("queues", "ivr-general", "general"),  # Asterisk's name finds the same queue
    ("repeats", "ivr-faults", "faults"),
    ("repeats", "ivr", "ivr"),  # the reason of calls that reached no queue
    ("ivr", "ivr-main", "ivr-main"),  # a menu is not a queue: as given
])
def test_report_filters_accept_the_supervisors_name(report: str, given: str, filtered: str) -> None:
    name = rp.FILTERS[report][0]
    q = rp.parse_query(report, {"from": "2026-11-03", "to": "2026-11-03", name: given}, tz="UTC")
    assert q.filters == {name: filtered}
