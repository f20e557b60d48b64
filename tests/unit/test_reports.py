"""domain/reports.py: exit categories, the funnel, histograms, percentiles, service level, ranges,
request parameters and formula-safe CSV, as tables."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ivrserver.domain import reports as rp
from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath


def ev(*steps: str) -> tuple[PathEvent, ...]:
    """'enter:main', 'key:main:1', 'timeout:main', 'exit:main:queue' … one second apart."""
    out = []
    for i, step in enumerate(steps):
        kind, node, *rest = step.split(":")
        extra = rest[0] if rest else ""
        out.append(PathEvent(PathKind(kind), node, 100.0 + i, key=extra if kind in ("key", "invalid") else "",
                             detail=extra if kind in ("exit", "lookup") else ""))
    return tuple(out)


@pytest.mark.parametrize(("steps", "category"), [
    (("enter:m", "key:m:1", "enter:b", "exit:b:self_served"), "self_served"),
    (("enter:m", "key:m:2", "exit:m:queue"), "queue"),
    (("enter:m", "exit:m:caller_hangup"), "caller_hangup"),
    (("enter:m", "timeout:m", "timeout:m", "failure:m", "exit:m:queue"), "timed_out"),
    (("enter:m", "timeout:m", "invalid:m:9", "failure:m", "exit:m:queue"), "queue"),  # last miss a wrong key
    (("enter:m", "timeout:m", "failure:m", "enter:x", "key:x:1", "exit:x:agent"), "agent"),  # chose later
    (("enter:m", "timeout:m", "failure:m", "exit:m:self_served"), "self_served"),
    (("enter:m", "timeout:m", "failure:m", "exit:m:ended"), "timed_out"),
    (("enter:m", "key:m:1"), "unfinished"),
    (("enter:m", "exit:m:whatever"), "ended"),
    # heard the balance, then hung up: served (as the contact record and menus stats count it)
    (("enter:m", "key:m:1", "enter:b", "lookup:b:found", "enter:a", "exit:a:caller_hangup"), "self_served"),
    (("enter:m", "key:m:1", "enter:b", "lookup:b:missing", "enter:a", "exit:a:caller_hangup"), "caller_hangup"),
    (("enter:m", "key:m:1", "enter:b", "lookup:b:found", "enter:a", "exit:a:queue"), "queue"),
])
def test_exit_category(steps: tuple[str, ...], category: str) -> None:
    assert rp.exit_category(ev(*steps)) == category


def test_funnel_counts_merge_and_round_trip() -> None:
    paths = [CallPath("a", "m", "v", 100, ev("enter:main", "key:main:1", "enter:bal", "exit:bal:self_served")),
             CallPath("b", "m", "v", 100, ev("enter:main", "exit:main:caller_hangup")),
             CallPath("c", "m", "v", 100, ev("enter:main", "key:main:2", "exit:main:callback"))]
    whole = rp.funnel(paths)
    parts = rp.funnel(paths[:1])
    parts.merge(rp.funnel(paths[1:]))
    assert parts == whole == rp.Funnel.from_dict(whole.to_dict())
    assert (whole.calls, whole.self_served, whole.human) == (3, 1, 1)
    assert rp.abandon_by_depth(whole) == [
        {"depth": 1, "reached": 3, "hung_up": 1, "abandon_rate": 1 / 3},
        {"depth": 2, "reached": 1, "hung_up": 0, "abandon_rate": 0.0}]
    main = rp.funnel_nodes(whole)[0]
    assert (main["node"], main["entries"], main["exit_caller_hangup"], main["exit_callback"],
            main["average_seconds"]) == ("main", 3, 1, 1, 1.7)


def test_a_caller_who_heard_the_balance_and_hung_up_is_self_served_not_a_hang_up() -> None:
    f = rp.funnel([CallPath("a", "m", "v", 100, ev("enter:main", "key:main:1", "enter:bal", "lookup:bal:found",
                                                   "enter:after", "exit:after:caller_hangup"))])
    assert (f.self_served, f.human, dict(f.exits)) == (1, 0, {"self_served": 1})
    assert f.depth_hangups == {}
    after = next(n for n in rp.funnel_nodes(f) if n["node"] == "after")
    assert (after["exit_self_served"], after["exit_caller_hangup"]) == (1, 0)


@pytest.mark.parametrize(("seconds", "bin_"), [(-1, 0), (0, 0), (4.9, 0), (5, 1), (19.99, 3), (20, 4),
                                               (1799, 14), (1800, 15), (99999, 15)])
def test_wait_bins(seconds: float, bin_: int) -> None:
    assert rp.bin_of(seconds) == bin_


@pytest.mark.parametrize(("hist", "q", "expected"), [
    ([], 0.5, None),
    ([0, 0, 0], 0.5, None),
    ([2], 0.5, 2.5),                  # two in [0, 5): the median half way
    ([1, 0, 0, 0, 1], 0.5, 5.0),      # the first one's bin, at its top
    ([1, 0, 0, 0, 1], 0.9, 28.0),     # [20, 30), 0.8 of the way
    ([0] * 15 + [3], 0.5, 1800.0),    # the open last bin: "at least"
])
def test_percentile(hist: list[int], q: float, expected: float | None) -> None:
    assert rp.percentile(hist, q) == expected


@pytest.mark.parametrize(("answered", "abandoned", "seconds", "expected"), [
    ([1, 0, 0, 0, 1], 1, 20, 1 / 3),
    ([1, 0, 0, 0, 1], 1, 30, 2 / 3),
    ([], 0, 20, None),
    ([0, 0], 4, 20, 0.0),
])
def test_service_level(answered: list[int], abandoned: int, seconds: int, expected: float | None) -> None:
    assert rp.service_level(answered, abandoned, seconds) == expected


def test_service_level_threshold_must_be_an_edge() -> None:
    with pytest.raises(ValueError, match="bin edge"):
        rp.below([1, 2], 21)
    with pytest.raises(ValueError, match="20"):
        rp.check_service_level(21)
    rp.check_service_level(20)


@pytest.mark.parametrize(("first", "last", "tz", "since", "until"), [
    ("2026-11-03", "2026-11-03", "UTC", datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC)),
    ("2026-11-03", "2026-11-04", "Asia/Shanghai", datetime(2026, 11, 2, 16, tzinfo=UTC),
     datetime(2026, 11, 4, 16, tzinfo=UTC)),
    # a DST change inside: the local midnights, 25 h apart
    ("2026-10-25", "2026-10-25", "Europe/Paris", datetime(2026, 10, 24, 22, tzinfo=UTC),
     datetime(2026, 10, 25, 23, tzinfo=UTC)),
])
def test_ranges_in_a_time_zone(first: str, last: str, tz: str, since: datetime, until: datetime) -> None:
    r = rp.parse_range(first, last, tz)
    assert (r.since, r.until) == (since, until)
    assert r.days[0] == date.fromisoformat(first)


@pytest.mark.parametrize(("report", "params", "error"), [
    ("nope", {"from": "2026-11-01", "to": "2026-11-02"}, "no report"),
    ("ivr", {"to": "2026-11-02"}, "required"),
    ("ivr", {"from": "2026-11-03", "to": "2026-11-02"}, "before"),
    ("ivr", {"from": "2026-1-3", "to": "2026-11-02"}, "YYYY-MM-DD"),
    ("ivr", {"from": "'; drop", "to": "2026-11-02"}, "YYYY-MM-DD"),
    ("ivr", {"from": "2020-01-01", "to": "2026-11-02"}, "at most 400 days"),
    ("ivr", {"from": "2026-11-01", "to": "2026-11-02", "queue": "x"}, "unknown parameter"),
    ("ivr", {"from": "2026-11-01", "to": "2026-11-02", "menu": "<script>"}, "letters, digits"),
    ("queues", {"from": "2026-11-01", "to": "2026-11-02", "format": "xlsx"}, "json or csv"),
    ("queues", {"from": "2026-11-01", "to": "2026-11-02", "table": "x"}, "table is one of"),
])
def test_hostile_parameters_are_refused(report: str, params: dict[str, str], error: str) -> None:
    with pytest.raises(rp.RangeError, match=error):
        rp.parse_query(report, params, tz="UTC")


def test_a_good_query() -> None:
    q = rp.parse_query("queues", {"from": "2026-11-01", "to": "2026-11-30", "queue": "vip", "format": "csv",
                                  "table": "hours"}, tz="UTC")
    assert (q.report, q.filters, q.table, q.csv, len(q.range.days)) == ("queues", {"queue": "vip"}, "hours", True, 30)


@pytest.mark.parametrize(("value", "text"), [
    ("=1+1", "'=1+1"), ("+86138", "'+86138"), ("-2", "'-2"), ("@sum", "'@sum"), ("\tx", "'\tx"),
    ("'quoted", "''quoted"), ("plain", "plain"), (None, ""), (0.5, "0.5"), (0.33333, "0.3333"), (2.0, "2"),
    (True, "true"), (-3, "-3"),
])
def test_cells(value: object, text: str) -> None:
    assert rp.cell(value) == text


def test_csv_table_escapes_header_and_cells() -> None:
    text = rp.csv_table(["menu", "=calls"], [{"menu": "=cmd|' /C calc'!A0", "=calls": 3}, {"menu": "a,b"}])
    assert text == "menu,'=calls\n'=cmd|' /C calc'!A0,3\n\"a,b\",\n"
