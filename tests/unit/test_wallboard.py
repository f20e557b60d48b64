"""domain/wallboard.py: facts from AMI events, the change wire form, the board's views (tables)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from ivrserver import config
from ivrserver.domain import reports as rp
from ivrserver.domain import wallboard as wb
from ivrserver.pbx import ami_events as ev

T0 = 1_733_300_000.0


def ami(name: str, **headers: Any) -> Any:
    base = {"Event": name, "Channel": "PJSIP/callers-00000001", "Uniqueid": "1.1", "Linkedid": "1.1"}
    base.update({k: str(v) for k, v in headers.items()})
    return ev.parse_event(base)


def ours(name: str) -> str | None:
    return name[4:] if name.startswith("ivr-") else None


@pytest.mark.parametrize(("event", "expected"), [
    (ami("QueueCallerJoin", Queue="ivr-vip", Position=1, Count=1),
     [wb.QueueFact("join", "vip", "1.1", T0)]),
    (ami("QueueCallerJoin", Queue="ivr-vip", ChanVariable="QUEUE_PRIO=7"),
     [wb.QueueFact("join", "vip", "1.1", T0, priority=7)]),
    (ami("AgentConnect", Queue="ivr-faults", Interface="PJSIP/agent1006", HoldTime=12, RingTime=2),
     [wb.QueueFact("answered", "faults", "1.1", T0, hold=12)]),
    (ami("QueueCallerAbandon", Queue="ivr-general", HoldTime=40),
     [wb.QueueFact("abandoned", "general", "1.1", T0, hold=40)]),
    (ami("QueueCallerLeave", Queue="ivr-general"), [wb.QueueFact("leave", "general", "1.1", T0)]),
    (ami("Hangup", Cause=16), [wb.QueueFact("gone", "", "1.1", T0)]),
    (ami("QueueCallerJoin", Queue="someone-elses"), []),  # not one of our queues
    (ami("AgentCalled", Queue="ivr-vip", Interface="PJSIP/agent1001"), []),  # ringing: the agents' side
    (ami("Newchannel"), []),
    (object(), []),
])
def test_facts_of_ami_events(event: Any, expected: list[wb.QueueFact]) -> None:
    assert wb.facts_of(event, T0, ours) == expected


@pytest.mark.parametrize(("counters", "level"), [
    (wb.Counters(), None),
    (wb.Counters(offered=3), None),  # nobody has left the queue yet
    (wb.Counters(offered=4, answered=4, answered_in_sl=3), 0.75),
    (wb.Counters(offered=4, answered=2, answered_in_sl=2, abandoned=2), 0.5),
    (wb.Counters(offered=1, abandoned=1), 0.0),
    (wb.Counters(answered=1, answered_in_sl=5), 1.0),  # never above 100 %
])
def test_service_level(counters: wb.Counters, level: float | None) -> None:
    assert counters.service_level() == level


@pytest.mark.parametrize(("hold", "threshold", "within"), [
    (0, 20, True), (20, 20, True), (21, 20, False), (-1, 20, False),
])
def test_in_service_level(hold: int, threshold: int, within: bool) -> None:
    assert wb.in_service_level(hold, threshold) is within


@pytest.mark.parametrize("threshold", rp.WAIT_EDGES[1:])
def test_the_reports_count_the_service_level_as_the_board_does(threshold: int) -> None:
    """One definition: "answered within N s" is hold <= N whole seconds on the board (AMI's HoldTime)
    and in the reports (wait histogram bins closed at the top), at and around every edge N."""
    holds = [0, 1, threshold - 1, threshold, threshold + 1, threshold + 0.5, threshold - 0.5, 2 * threshold, 5000]
    hist = [0] * len(rp.WAIT_EDGES)
    for h in holds:
        hist[rp.wait_bin(h)] += 1
    on_board = sum(wb.in_service_level(rp.whole_seconds(h), threshold) for h in holds)
    assert rp.below(hist, threshold) == on_board
    board = wb.Counters(answered=len(holds), answered_in_sl=on_board)
    assert rp.service_level(hist, 0, threshold) == board.service_level()


@pytest.mark.parametrize(("wall", "reports", "problem"), [
    ({}, {}, None),
    ({"service_level_seconds": 30}, {"service_level_seconds": 30}, None),
    ({"service_level_seconds": 30}, {}, "wallboard.service_level_seconds (30) and reports.service_level_seconds (20)"),
    ({}, {"timezone": "Asia/Shanghai"}, "wallboard.timezone ('UTC') and reports.timezone ('Asia/Shanghai')"),
    ({"timezone": "Asia/Shanghai"}, {"timezone": "Asia/Shanghai"}, None),
    ({"service_level_target": 1.5}, {}, "wallboard.service_level_target: must be 0..1"),
])
def test_the_wallboard_and_reports_settings_must_agree(wall: dict[str, Any], reports: dict[str, Any],
                                                      problem: str | None) -> None:
    if problem is None:
        settings = config.from_mapping({"wallboard": wall, "reports": reports})
        assert settings.wallboard.service_level_seconds == settings.reports.service_level_seconds
        assert settings.wallboard.timezone == settings.reports.timezone
    else:
        with pytest.raises(config.ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            config.from_mapping({"wallboard": wall, "reports": reports})


@pytest.mark.parametrize(("now", "tz", "day", "midnight"), [
    (datetime.datetime(2026, 12, 4, 23, 59, tzinfo=datetime.UTC).timestamp(), "UTC", "2026-12-04",
     datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC).timestamp()),
    # 18:00 UTC is 02:00 next day in Shanghai
    (datetime.datetime(2026, 12, 4, 18, 0, tzinfo=datetime.UTC).timestamp(), "Asia/Shanghai", "2026-12-05",
     datetime.datetime(2026, 12, 5, 16, 0, tzinfo=datetime.UTC).timestamp()),
    # a 23-hour day (DST starts): midnight is still the next local midnight
    (datetime.datetime(2026, 3, 29, 0, 30, tzinfo=datetime.UTC).timestamp(), "Europe/Berlin", "2026-03-29",
     datetime.datetime(2026, 3, 29, 22, 0, tzinfo=datetime.UTC).timestamp()),
])
def test_day_of(now: float, tz: str, day: str, midnight: float) -> None:
    assert wb.day_of(now, tz) == (day, midnight)


@pytest.mark.parametrize(("name", "ok"), [("UTC", True), ("Asia/Shanghai", True), ("Mars/Olympus", False),
                                          ("../etc/passwd", False), ("", False)])
def test_check_timezone(name: str, ok: bool) -> None:
    if ok:
        wb.check_timezone(name)
    else:
        with pytest.raises(ValueError, match="time zone"):
            wb.check_timezone(name)


@pytest.mark.parametrize("change", [
    wb.QueueChange("vip", day="2026-12-04", added=wb.Waiting("1.1", "vip", T0, 3), counters=wb.Counters(1, 0, 0, 0)),
    wb.QueueChange("vip", day="2026-12-04", removed="1.1", counters=wb.Counters(1, 1, 1, 0)),
    wb.QueueChange("general", day="2026-12-04", removed="9.9"),
])
def test_change_round_trip(change: wb.QueueChange) -> None:
    assert wb.decode_change(wb.encode_change(change)) == change


@pytest.mark.parametrize("text", [
    "", "nope", "[]", '{"q": ""}', '{"d": "x"}', '{"q": "vip", "add": {"u": 1, "at": 2}}',
    '{"q": "vip", "add": {"u": "1", "at": "soon"}}', '{"q": "vip", "del": 5}', '{"q": "vip", "c": [1, 2, 3]}',
    '{"q": "vip", "c": [1, 2, 3, -4]}', '{"q": "vip", "c": [1, 2, 3, true]}',
    '{"q": "vip", "add": {"u": "x", "at": NaN}}',
])
def test_decode_change_refuses_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        wb.decode_change(text)


def test_lua_appended_counters_decode() -> None:
    # the Lua script appends ,"c":[...] to the message Python encoded
    text = wb.encode_change(wb.QueueChange("vip", day="d", removed="1.1"))[:-1] + ',"c":[2,1,1,0]}'
    assert wb.decode_change(text).counters == wb.Counters(2, 1, 1, 0)


@pytest.mark.parametrize(("fields", "expected"), [
    ({"vip|offered": "3", "vip|answered": "2", "general|abandoned": "1"},
     {"vip": wb.Counters(offered=3, answered=2), "general": wb.Counters(abandoned=1)}),
    ({"vip|bogus": "3", "nobar": "1", "vip|answered": "x"}, {}),
    ({"a|b|answered": "4"}, {"a|b": wb.Counters(answered=4)}),
])
def test_counters_from_hash(fields: dict[str, str], expected: dict[str, wb.Counters]) -> None:
    assert wb.counters_from_hash(fields) == expected


def test_waiting_from_hash_skips_malformed() -> None:
    fields = {"1.1": json.dumps({"q": "vip", "at": T0, "p": 2}), "2.2": "not json", "3.3": json.dumps({"q": "vip"}),
              "4.4": json.dumps([1])}
    assert wb.waiting_from_hash(fields) == [wb.Waiting("1.1", "vip", T0, 2)]


@pytest.mark.parametrize(("cell", "now", "shown"), [
    (wb.AgentCell("a", "A", "on_call", T0), T0 + 60, ("on_call", T0)),
    (wb.AgentCell("a", "A", "wrap_up", T0, wrap_up_until=T0 + 10), T0 + 5, ("wrap_up", T0)),
    (wb.AgentCell("a", "A", "wrap_up", T0, wrap_up_until=T0 + 10), T0 + 10, ("ready", T0 + 10)),
    (wb.AgentCell("a", "A", "ready", T0, wrap_up_until=0), T0 + 10, ("ready", T0)),
])
def test_agent_cell_at(cell: wb.AgentCell, now: float, shown: tuple[str, float]) -> None:
    assert cell.at(now) == shown


def test_cell_of_unknown_state_is_logged_out_and_wrap_up_only_kept_for_wrap_up() -> None:
    assert wb.cell_of("a", "A", "dancing", T0, 0).state == "logged_out"
    assert wb.cell_of("a", "A", "ready", T0, T0 + 9).wrap_up_until == 0.0
    assert wb.cell_of("a", "A", "wrap_up", T0, T0 + 9).wrap_up_until == T0 + 9


def board(**kw: Any) -> wb.Board:
    b = wb.Board(service_level_seconds=20, queues=("vip", "general"), **kw)
    b.load("2026-12-04", [], {})
    return b


def test_board_applies_changes_in_order_and_never_lowers_counters() -> None:
    b = board()
    assert b.apply(wb.QueueChange("vip", day="2026-12-04", added=wb.Waiting("1.1", "vip", T0),
                                  counters=wb.Counters(1, 0, 0, 0)))
    b.apply(wb.QueueChange("vip", day="2026-12-04", added=wb.Waiting("2.2", "vip", T0 + 5),
                           counters=wb.Counters(2, 0, 0, 0)))
    view = b.queue_view("vip")
    assert (view["waiting"], view["oldest_joined_at"], view["offered"]) == (2, round(T0 * 1000), 2)
    b.apply(wb.QueueChange("vip", day="2026-12-04", removed="1.1", counters=wb.Counters(2, 1, 1, 0)))
    b.apply(wb.QueueChange("vip", day="2026-12-04", counters=wb.Counters(1, 0, 0, 0)))  # an older message
    view = b.queue_view("vip")
    assert (view["waiting"], view["oldest_joined_at"], view["answered"], view["service_level"]) == (
        1, round((T0 + 5) * 1000), 1, 100.0)
    # yesterday's counters do not land on today's board
    b.apply(wb.QueueChange("vip", day="2026-12-03", counters=wb.Counters(50, 50, 0, 0)))
    assert b.queue_view("vip")["offered"] == 2


def test_board_queue_names_and_listed_only() -> None:
    b = board()
    b.apply(wb.QueueChange("billing", day="2026-12-04", added=wb.Waiting("1.1", "billing", T0)))
    assert b.queue_names() == ["vip", "general", "billing"]
    only = board(only_listed=True)
    assert not only.apply(wb.QueueChange("billing", day="2026-12-04", added=wb.Waiting("1.1", "billing", T0)))
    assert only.queue_names() == ["vip", "general"]
    assert only.totals_view(T0)["waiting"] == 0


@pytest.mark.parametrize(("before", "per_queue", "total", "changed"), [
    ({}, {}, 0, []),
    ({}, {"vip": 2}, 3, ["vip", ""]),
    ({"vip": 2}, {"vip": 2}, 0, []),
    ({"vip": 2}, {}, 0, ["vip"]),
])
def test_set_callbacks_reports_what_changed(before: dict[str, int], per_queue: dict[str, int], total: int,
                                            changed: list[str]) -> None:
    b = board()
    b.set_callbacks(before, 0)
    assert b.set_callbacks(per_queue, total) == changed


def test_agents_counts_expiry_and_views() -> None:
    b = board()
    b.set_agent(wb.cell_of("a1", "Wang Fang", "on_call", T0, 0))
    b.set_agent(wb.cell_of("a2", "Li Na", "wrap_up", T0, T0 + 10))
    b.set_agent(wb.cell_of("a3", "Zhang Wei", "logged_out", T0, 0))
    assert not b.set_agent(wb.cell_of("a1", "Wang Fang", "on_call", T0, 0))  # nothing new
    assert b.next_expiry(T0) == T0 + 10
    assert b.next_expiry(T0 + 10) is None
    assert b.expired(T0, T0 + 9) == [] and b.expired(T0 + 9, T0 + 11) == ["a2"]
    counts = b.agent_counts(T0 + 11)
    assert (counts["on_call"], counts["ready"], counts["wrap_up"], counts["logged_out"]) == (1, 1, 0, 1)
    assert b.agent_counts(T0 + 5)["wrap_up"] == 1
    b.set_agent(wb.cell_of("a2", "Li Na", "ringing", T0 + 12, 0))  # counts follow every change
    assert b.next_expiry(T0) is None
    assert b.agent_counts(T0 + 12) == {"ready": 0, "ringing": 1, "on_call": 1, "wrap_up": 0, "paused": 0,
                                       "logged_out": 1}
    b.set_agent(wb.cell_of("a2", "Li Na", "wrap_up", T0, T0 + 10))
    assert b.agent_view("a2", T0 + 11) == {"id": "a2", "name": "Li Na", "state": "ready",
                                           "since": round((T0 + 10) * 1000)}
    assert b.agent_view("nobody", T0) is None
    snap = b.snapshot(T0)
    assert [a["id"] for a in snap["agents"]] == ["a1", "a2", "a3"]
    assert snap["incidents"] == {"known": False, "items": []}


class IncidentLike:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


NAMES = {"mobile_data": {"en": "mobile data", "zh": "移动数据", "fr": "données", "de": 7}}.get


@pytest.mark.parametrize(("source", "expected"), [
    ({"id": "inc-1", "service": "mobile_data", "area": "north", "state": "open", "opened_at": T0},
     wb.IncidentCell("inc-1", "mobile_data", "north", "open", T0, service_names=(("en", "mobile data"),
                                                                              ("zh", "移动数据")))),
    # the incident's own area names: the pages' languages only, hostile values dropped or cut
    ({"id": "inc-4", "service": "voice", "area": "cy", "state": "open", "opened_at": T0,
      "area_names": {"zh": " 朝阳 ", "en": "Chaoyang", "xx": "?", "de": None}},
     wb.IncidentCell("inc-4", "voice", "cy", "open", T0, area_names=(("en", "Chaoyang"), ("zh", "朝阳")))),
    ({"id": "inc-5", "service": "voice", "state": "open", "opened_at": T0, "area_names": ["zh"]},
     wb.IncidentCell("inc-5", "voice", "", "open", T0)),
    ({"id": "inc-6", "service": "voice", "state": "open", "opened_at": T0, "area_names": {"en": "y" * 500}},
     wb.IncidentCell("inc-6", "voice", "", "open", T0, area_names=(("en", "y" * wb.MAX_NAME),))),
    (IncidentLike(id="inc-2", service="voice", area="", state="acknowledged", opened_at=T0, expected_fix_at=T0 + 60),
     wb.IncidentCell("inc-2", "voice", "", "acknowledged", T0, T0 + 60)),
    ({"id": "inc-3", "service": "x" * 500, "opened_at": datetime.datetime.fromtimestamp(T0, datetime.UTC)},
     wb.IncidentCell("inc-3", "x" * wb.MAX_NAME, "", "", T0)),
    ({"service": "no id"}, None),
    ({"id": ""}, None),
])
def test_incident_cell(source: object, expected: wb.IncidentCell | None) -> None:
    assert wb.incident_cell(source, NAMES) == expected


def test_incident_names_in_the_frame() -> None:
    b = board()
    [cell] = wb.active_incidents([{"id": "a", "service": "mobile_data", "area": "cy", "state": "open",
                                   "opened_at": T0, "area_names": {"en": "Chaoyang", "zh": "朝阳"}}], NAMES)
    assert b.set_incidents([cell])
    [item] = b.incidents_view()["items"]
    assert (item["service_names"], item["area_names"]) == ({"en": "mobile data", "zh": "移动数据"},
                                                           {"en": "Chaoyang", "zh": "朝阳"})
    assert json.loads(json.dumps(b.snapshot(T0)))["incidents"]["items"] == [item]


def test_the_service_level_target_is_in_the_snapshot() -> None:
    assert board().snapshot(T0)["service_level_target"] == 80.0
    assert board(service_level_target=0.655).snapshot(T0)["service_level_target"] == 65.5


def test_incidents_ordered_and_known_flag() -> None:
    b = board()
    later = wb.IncidentCell("b", "voice", "", "open", T0 + 5)
    first = wb.IncidentCell("a", "data", "", "open", T0)
    assert b.set_incidents([later, first])
    assert [i["id"] for i in b.incidents_view()["items"]] == ["a", "b"]
    assert not b.set_incidents([first, later])
    assert b.set_incidents([]) and b.incidents_view() == {"known": True, "items": []}


def test_active_incidents_keeps_open_and_acknowledged() -> None:
    found = wb.active_incidents([
        {"id": "a", "state": "open", "opened_at": T0}, IncidentLike(id="b", state="acknowledged", opened_at=T0),
        {"id": "c", "state": "resolved", "opened_at": T0}, {"state": "open"}])
    assert [c.id for c in found] == ["a", "b"]


W = wb.Waiting


@pytest.mark.parametrize(("stored", "live", "remove", "add"), [
    ([], [], [], []),
    ([W("1", "vip", T0)], [W("1", "vip", T0 + 3)], [], []),  # same caller: the stored join time stays
    ([W("1", "vip", T0)], [], ["1"], []),  # left while no instance listened
    ([W("1", "vip", T0 + 20)], [], [], []),  # joined after the question: too new to judge
    ([], [W("2", "general", T0 - 40, 3)], [], [W("2", "general", T0 - 40, 3)]),  # joined unseen
    ([W("3", "vip", T0)], [W("3", "general", T0 + 1)], ["3"], [W("3", "general", T0 + 1)]),  # moved queue
])
def test_reconcile_with_asterisks_queue_status(stored: list[wb.Waiting], live: list[wb.Waiting],
                                               remove: list[str], add: list[wb.Waiting]) -> None:
    assert wb.reconcile(stored, live, T0 + 10) == (remove, add)
