"""Supervisors' reports (issue 20 §2), the pure part: what a figure means and how rows become a report.

- The IVR funnel of a menu (an entry point): per node entries, exits by reason and average time;
  abandon rate by depth; calls by exit reason. A call's exit reason is the menu's own
  (`ExitReason`), except `timed_out`: the caller's tries at a node were used up and the last miss
  was a timeout (no key pressed) — whatever the menu did then (a queue, a hang-up); and a caller
  who hung up after a self-service lookup answered them (heard the balance) is self_served
  (`menu_engine.counted_exit`, as the contact record and `menus stats` count it).
- Self-service share = self-served exits ÷ (self-served + exits to a human: queue, agent,
  callback), as `menus stats` counts it, against `target` (operators' 78%).
- Waits: histograms with fixed bins (WAIT_EDGES seconds) over whole seconds, as Asterisk gives a
  queue's HoldTime (a wait measured here is cut to whole seconds the same way): bin i holds waits w
  with WAIT_EDGES[i] < w <= WAIT_EDGES[i + 1] (bin 0 also 0 s). Percentiles interpolate inside a
  bin. The service level ("answered within N s", N one of the edges) counts answered calls with
  w <= N: the wallboard's definition (domain/wallboard.in_service_level), so both show one figure.
- Every table leaves as CSV through `csv_table`: each cell through `spreadsheet.csv_escape`.
- Queues are named as supervisors know them (`general`, queue_names.queue_label), as the wallboard
  does; a `queue` filter given Asterisk's name (`ivr-general`) means the same queue.
- A caller who asked for a callback in the IVR exits `callback` (a human exit) and their contact is
  `callback_requested`: neither a hang-up here nor an abandoned call in the queues report.

Hourly rows come from the record (record/reports.py); `local_day`/`local_hour` put them in the
reports' time zone. No clock here: `now` and ranges are passed in.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ivrserver.domain.menu_engine import HUMAN_REASONS, ExitReason, PathEvent, PathKind, counted_exit
from ivrserver.domain.menu_stats import CallPath, path_depth
from ivrserver.domain.queue_names import queue_label
from ivrserver.domain.spreadsheet import csv_escape

REPORTS = ("ivr", "selfservice", "queues", "repeats", "callbacks", "agents")
MAX_DAYS = 400  # the longest range one request may ask for

# Exit categories of the funnel, in the order the chart stacks them.
TIMED_OUT = "timed_out"
UNFINISHED = "unfinished"  # no exit recorded (the path ended with the channel)
EXIT_CATEGORIES = (ExitReason.SELF_SERVED.value, ExitReason.QUEUE.value, ExitReason.AGENT.value,
                   ExitReason.CALLBACK.value, ExitReason.CALLER_HANGUP.value, TIMED_OUT, ExitReason.ENDED.value,
                   UNFINISHED)
_HUMAN = frozenset(r.value for r in HUMAN_REASONS)

# Wait-time bins, whole seconds: bin i holds waits w with WAIT_EDGES[i] < w <= WAIT_EDGES[i + 1] (bin 0
# from 0 s); the last one is open (more than 1800 s). Closed at the top so that "answered within N s"
# (w <= N, as the wallboard counts it) is a sum of whole bins for every edge N.
WAIT_EDGES = (0, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 600, 900, 1800)
# The same bins as half-open ranges of whole seconds, lowest wait of each: [0, 6), [6, 11), … (the SQL
# rollup bins with width_bucket over these, record/reports.py).
WAIT_BIN_FLOORS = (0, *(edge + 1 for edge in WAIT_EDGES[1:]))
# Callback lateness bins, seconds (first attempt after the start of the requested window).
LATE_EDGES = (0, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)


# --- date ranges and time zones --------------------------------------------------------------------


class RangeError(ValueError):
    """A range or filter a request cannot have; the message says which and why."""


@dataclass(frozen=True)
class Range:
    """Whole local days [first, last] in `tz`, as the UTC instants [since, until)."""

    first: date
    last: date
    tz: str
    since: datetime
    until: datetime

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]


def parse_range(first: str, last: str, tz: str, *, max_days: int = MAX_DAYS) -> Range:
    """`from`/`to` as YYYY-MM-DD (both included) in time zone `tz` → the instants they cover."""
    try:
        d1, d2 = date.fromisoformat(first), date.fromisoformat(last)
    except (TypeError, ValueError):
        raise RangeError("from and to are dates YYYY-MM-DD") from None
    if len(first) != 10 or len(last) != 10:
        raise RangeError("from and to are dates YYYY-MM-DD")
    if d2 < d1:
        raise RangeError("to is before from")
    if (d2 - d1).days + 1 > max_days:
        raise RangeError(f"at most {max_days} days per request")
    zone = ZoneInfo(tz)
    since = datetime.combine(d1, datetime.min.time(), zone).astimezone(UTC)
    until = datetime.combine(d2 + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
    return Range(d1, d2, tz, since, until)


def local_day(hour: datetime, tz: str) -> date:
    return hour.astimezone(ZoneInfo(tz)).date()


def local_hour(hour: datetime, tz: str) -> int:
    return hour.astimezone(ZoneInfo(tz)).hour


# --- the IVR funnel ---------------------------------------------------------------------------------


_DECISIONS = frozenset({PathKind.KEY, PathKind.COLLECTED, PathKind.LOOKUP, PathKind.IDENTIFIED, PathKind.FAILURE,
                        PathKind.INCIDENT})


def exit_category(events: Sequence[PathEvent]) -> str:
    """The funnel's exit reason of one path (see the module docstring): `timed_out` when the last
    decision before the exit was a used-up node whose last miss was a timeout."""
    last_exit = next((e for e in reversed(events) if e.kind is PathKind.EXIT), None)
    if last_exit is None:
        return UNFINISHED
    last_miss: PathKind | None = None
    timed_out = False
    for e in events:
        if e.kind in (PathKind.TIMEOUT, PathKind.INVALID):
            last_miss = e.kind
        elif e.kind in _DECISIONS:
            timed_out = e.kind is PathKind.FAILURE and last_miss is PathKind.TIMEOUT
            last_miss = None
    reason = counted_exit(last_exit.detail, events)
    if timed_out and reason != ExitReason.SELF_SERVED.value:
        return TIMED_OUT
    return reason if reason in EXIT_CATEGORIES else ExitReason.ENDED.value


@dataclass
class FunnelNode:
    entries: int = 0
    exits: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    visits: int = 0


@dataclass
class Funnel:
    """Counts of a menu's calls, built one path at a time and mergeable (hourly rollups add up)."""

    calls: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # ExitReason value (as menus stats counts)
    exits: Counter[str] = field(default_factory=Counter)  # exit category
    nodes: dict[str, FunnelNode] = field(default_factory=dict)
    depth_calls: Counter[int] = field(default_factory=Counter)  # calls whose deepest level was d
    depth_hangups: Counter[int] = field(default_factory=Counter)  # calls that hung up at level d
    seconds: float = 0.0  # time in the menu, summed over calls with an exit

    def add(self, path: CallPath) -> None:
        events = sorted(path.events, key=lambda e: e.at)
        self.calls += 1
        category = exit_category(events)
        self.exits[category] += 1
        depth = path_depth(events)
        self.depth_calls[depth] += 1
        if category == ExitReason.CALLER_HANGUP.value:
            self.depth_hangups[depth] += 1
        current: str | None = None
        entered = 0.0
        first = events[0].at if events else 0.0
        for e in events:
            if e.kind is PathKind.ENTER:
                if current is not None:
                    self._close(current, e.at - entered)
                node = self.nodes.setdefault(e.node, FunnelNode())
                node.entries += 1
                current, entered = e.node, e.at
            elif e.kind is PathKind.EXIT:
                self.reasons[counted_exit(e.detail, events)] += 1
                self.nodes.setdefault(e.node, FunnelNode()).exits[category] += 1
                self.seconds += max(0.0, e.at - first)
                if current is not None:
                    self._close(current, e.at - entered)
                    current = None

    def _close(self, node: str, seconds: float) -> None:
        st = self.nodes.setdefault(node, FunnelNode())
        st.seconds += max(0.0, seconds)
        st.visits += 1

    @property
    def self_served(self) -> int:
        return self.reasons[ExitReason.SELF_SERVED.value]

    @property
    def human(self) -> int:
        return sum(n for r, n in self.reasons.items() if r in _HUMAN)

    def merge(self, other: Funnel) -> None:
        self.calls += other.calls
        self.reasons.update(other.reasons)
        self.exits.update(other.exits)
        self.depth_calls.update(other.depth_calls)
        self.depth_hangups.update(other.depth_hangups)
        self.seconds += other.seconds
        for name, theirs in other.nodes.items():
            st = self.nodes.setdefault(name, FunnelNode())
            st.entries += theirs.entries
            st.exits.update(theirs.exits)
            st.seconds += theirs.seconds
            st.visits += theirs.visits

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "reasons": dict(self.reasons), "exits": dict(self.exits),
                "depth_calls": {str(k): v for k, v in self.depth_calls.items()},
                "depth_hangups": {str(k): v for k, v in self.depth_hangups.items()}, "seconds": self.seconds,
                "nodes": {n: {"entries": s.entries, "exits": dict(s.exits), "seconds": s.seconds, "visits": s.visits}
                          for n, s in self.nodes.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Funnel:
        out = cls(calls=int(d["calls"]), reasons=Counter(d["reasons"]), exits=Counter(d["exits"]),
                  depth_calls=Counter({int(k): int(v) for k, v in d["depth_calls"].items()}),
                  depth_hangups=Counter({int(k): int(v) for k, v in d["depth_hangups"].items()}),
                  seconds=float(d["seconds"]))
        for name, n in d["nodes"].items():
            out.nodes[name] = FunnelNode(entries=int(n["entries"]), exits=Counter(n["exits"]),
                                         seconds=float(n["seconds"]), visits=int(n["visits"]))
        return out


def funnel(paths: Iterable[CallPath]) -> Funnel:
    out = Funnel()
    for p in paths:
        out.add(p)
    return out


def share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def abandon_by_depth(f: Funnel) -> list[dict[str, Any]]:
    """Per menu level d (1 = the entry menu): calls that reached it, hung up there, and the rate."""
    deepest = max(f.depth_calls, default=0)
    out = []
    for d in range(1, deepest + 1):
        reached = sum(n for depth, n in f.depth_calls.items() if depth >= d)
        hung_up = f.depth_hangups[d]
        out.append({"depth": d, "reached": reached, "hung_up": hung_up, "abandon_rate": share(hung_up, reached)})
    return out


def funnel_nodes(f: Funnel) -> list[dict[str, Any]]:
    """One row per node, busiest first: entries, exits by category, average seconds per visit."""
    rows = []
    for name, st in sorted(f.nodes.items(), key=lambda kv: (-kv[1].entries, kv[0])):
        rows.append({"node": name, "entries": st.entries,
                     **{f"exit_{c}": st.exits[c] for c in EXIT_CATEGORIES},
                     "average_seconds": round(st.seconds / st.visits, 1) if st.visits else None})
    return rows


# --- waits: histograms, percentiles, service level ----------------------------------------------------


def bin_of(seconds: float, edges: Sequence[int] = WAIT_EDGES) -> int:
    """The bin index of a duration in half-open bins [edge i, edge i + 1) (negative → the first bin):
    the lateness bins (LATE_EDGES). A wait's bin is `wait_bin`."""
    i = 0
    for j, edge in enumerate(edges):
        if seconds >= edge:
            i = j
    return i


def whole_seconds(seconds: float) -> int:
    """A wait as Asterisk counts a HoldTime: whole seconds, cut (19.9 s waited is 19)."""
    return max(0, math.floor(seconds)) if math.isfinite(seconds) else 0


def wait_bin(seconds: float) -> int:
    """The wait bin of a wait in seconds (WAIT_EDGES: closed at the top, over whole seconds)."""
    w = whole_seconds(seconds)
    return sum(1 for edge in WAIT_EDGES[1:] if w > edge)


def add_hist(total: list[int], part: Sequence[int]) -> list[int]:
    if len(total) < len(part):
        total = total + [0] * (len(part) - len(total))
    return [a + (part[i] if i < len(part) else 0) for i, a in enumerate(total)]


def percentile(hist: Sequence[int], q: float, edges: Sequence[int] = WAIT_EDGES) -> float | None:
    """The q-quantile (0 < q ≤ 1) of a histogram, interpolated inside its bin; inside the open last
    bin: its lower edge (read "more than" for waits, "at least" for lateness). None for an empty
    histogram."""
    total = sum(hist)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        if n and seen + n >= rank:
            low = edges[i]
            if i + 1 >= len(edges):
                return float(low)
            return round(low + (edges[i + 1] - low) * (rank - seen) / n, 1)
        seen += n
    return float(edges[min(len(hist), len(edges)) - 1])


def below(hist: Sequence[int], seconds: int, edges: Sequence[int] = WAIT_EDGES) -> int:
    """Counts in the bins up to the edge `seconds`: for a wait histogram (`wait_bin`), the waits of
    at most `seconds` whole seconds."""
    if seconds not in edges:
        raise ValueError(f"{seconds} s is not a bin edge ({', '.join(map(str, edges))})")
    return sum(hist[: edges.index(seconds)])


def service_level(answered_hist: Sequence[int], abandoned: int, seconds: int) -> float | None:
    """Answered within `seconds` (waited at most that many whole seconds) ÷ (answered + abandoned),
    exactly as the wallboard counts it (domain/wallboard.in_service_level: hold <= N)."""
    answered = sum(answered_hist)
    return share(below(answered_hist, seconds), answered + abandoned)


# --- CSV --------------------------------------------------------------------------------------------


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # a number is no formula: written as it is
        return "" if not math.isfinite(value) else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return str(value)
    return csv_escape(str(value))


def csv_table(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A CSV document (header + rows, `\\n` line ends), every cell formula-safe."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([csv_escape(c) for c in columns])
    for row in rows:
        writer.writerow([cell(row.get(c)) for c in columns])
    return out.getvalue()


# --- settings checks (config.py `reports` section) --------------------------------------------------


def check_service_level(seconds: int) -> None:
    if seconds not in WAIT_EDGES[1:]:
        raise ValueError(f"must be one of {', '.join(map(str, WAIT_EDGES[1:]))} (the wait bins' edges), got {seconds}")


def check_policy(name: str) -> None:
    from ivrserver.domain.menu_stats import POLICIES

    if name not in POLICIES:
        raise ValueError(f"must be one of {', '.join(sorted(POLICIES))}, got {name!r}")


# --- requests ---------------------------------------------------------------------------------------

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")
FILTERS = {"ivr": ("menu",), "selfservice": ("menu",), "queues": ("queue",), "repeats": ("queue",),
           "callbacks": (), "agents": ("agent",)}
TABLES = {"ivr": ("nodes", "exits", "depth", "order"), "selfservice": ("days", "menus"),
          "queues": ("queues", "hours", "days"), "repeats": ("reasons", "days"), "callbacks": ("kinds", "days"),
          "agents": ("agents",)}

# Every table's columns, in order: the JSON `columns`, the CSV header and the pages' catalogue keys
# (reports.col.<column>; tests/unit/test_i18n_catalogue.py checks each one). Values stay machine
# values in JSON and CSV (seconds, shares 0..1, minor currency units, ISO days); the page formats them.
_SELF = ("calls", "self_served", "human", "share", "target", "below_target")
_QUEUE = ("offered", "answered", "abandoned", "abandon_rate", "service_level", "service_level_seconds",
          "wait_average", "wait_p50", "wait_p90", "wait_p99", "abandoned_wait_p50", "talk_average")
REPEAT_FIELDS = ("calls", "repeat_24h", "repeat_7d", "same_24h", "same_7d", "repeat_answered", "story_carried")
_REPEAT = (*REPEAT_FIELDS, "repeat_rate_24h", "repeat_rate_7d", "first_contact_resolution", "story_carried_share")
CALLBACK_FIELDS = ("requested", "placed", "answered", "retried", "failed", "cancelled")
_CALLBACK = (*CALLBACK_FIELDS, "answer_rate", "late_average", "late_p50", "late_p90")
COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "ivr": {"nodes": ("menu", "node", "entries", *(f"exit_{c}" for c in EXIT_CATEGORIES), "average_seconds"),
            "exits": ("menu", "calls", *EXIT_CATEGORIES, "self_service_share", "average_seconds"),
            "depth": ("menu", "depth", "reached", "hung_up", "abandon_rate"),
            "order": ("menu", "node", "policy", "key", "does", "now_key", "busiest_rank", "calls")},
    "selfservice": {"days": ("day", "menu", *_SELF), "menus": ("menu", *_SELF)},
    "queues": {"queues": ("queue", *_QUEUE), "hours": ("queue", "hour", *_QUEUE), "days": ("day", "queue", *_QUEUE)},
    "repeats": {"reasons": ("reason", *_REPEAT), "days": ("day", *_REPEAT)},
    "callbacks": {"kinds": ("kind", *_CALLBACK), "days": ("day", "kind", *_CALLBACK)},
    # + one compensation_<CUR>_cents column per currency granted (compensation_column), sorted
    "agents": {"agents": ("agent", "calls", "talk_seconds", "talk_average", "wrap_up_seconds", "cases_resolved",
                          "compensation_grants")},
}
# The `kind` of a callbacks report row (record/reports.py labels its rows so): a callback a caller
# asked for, a notice the operator sent (issue 17).
CALLBACK_KINDS = ("callback", "notice")


def compensation_column(currency: str) -> str:
    """The agents table's column of the compensation granted in one currency, in its minor units
    (cents, fen): `compensation_CNY_cents`. `currency` is cut to its letters A-Z (at most 3)."""
    code = "".join(ch for ch in currency.upper() if "A" <= ch <= "Z")[:3] or "XXX"
    return f"compensation_{code}_cents"


@dataclass(frozen=True)
class Query:
    report: str
    range: Range
    filters: Mapping[str, str]
    table: str  # the CSV's table
    csv: bool


def parse_query(report: str, params: Mapping[str, str], *, tz: str, max_days: int = MAX_DAYS) -> Query:
    """A report request's parameters (hostile: every one checked) → Query; RangeError says what is wrong."""
    if report not in REPORTS:
        raise RangeError(f"no report {report[:40]!r}; reports: {', '.join(REPORTS)}")
    allowed = {"from", "to", "format", "table", *FILTERS[report]}
    unknown = sorted(k for k in params if k not in allowed)
    if unknown:
        raise RangeError(f"unknown parameter(s) {', '.join(repr(u[:40]) for u in unknown[:5])}; "
                         f"this report takes {', '.join(sorted(allowed))}")
    if "from" not in params or "to" not in params:
        raise RangeError("from and to are required (YYYY-MM-DD, both days included)")
    rng = parse_range(params["from"], params["to"], tz, max_days=max_days)
    fmt = params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise RangeError("format is json or csv")
    table = params.get("table", TABLES[report][0])
    if table not in TABLES[report]:
        raise RangeError(f"table is one of {', '.join(TABLES[report])}")
    filters: dict[str, str] = {}
    for name in FILTERS[report]:
        value = params.get(name, "")
        if value:
            if len(value) > 64 or not set(value) <= _NAME_CHARS:
                raise RangeError(f"{name}: letters, digits and _ . : - only, at most 64")
            # a queue as the wallboard and the reports name it; Asterisk's name finds the same one
            filters[name] = queue_label(value) if name == "queue" else value
    return Query(report, rng, filters, table, fmt == "csv")
