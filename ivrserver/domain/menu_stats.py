"""Aggregate recorded IVR paths: per-node traffic, exits, abandon rate, depth, self-service share,
and a suggested option order from a pluggable ordering policy. Pure.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ivrserver.domain.menu_engine import HUMAN_REASONS, ExitReason, PathEvent, PathKind, counted_exit

SELF_SERVICE_TARGET = 0.78  # operators' figure: the IVR should serve about 78% of needs


@dataclass(frozen=True)
class CallPath:
    call_id: str
    menu: str
    version: str
    started_at: float
    events: tuple[PathEvent, ...]


@dataclass
class NodeStats:
    node: str
    entries: int = 0
    exits: Counter[str] = field(default_factory=Counter)  # ExitReason value → count
    keys: Counter[str] = field(default_factory=Counter)  # key → count (matched options only)
    key_targets: dict[str, str] = field(default_factory=dict)  # key → what it did (last seen)
    invalid: int = 0
    timeouts: int = 0
    failures: int = 0
    total_seconds: float = 0.0
    timed_visits: int = 0

    @property
    def abandon_rate(self) -> float:
        return self.exits[ExitReason.CALLER_HANGUP] / self.entries if self.entries else 0.0

    @property
    def average_seconds(self) -> float:
        return self.total_seconds / self.timed_visits if self.timed_visits else 0.0


class OrderingPolicy(Protocol):
    name: str
    description: str

    def order(self, ranked: Sequence[str]) -> list[str]:
        """Keys ranked busiest first → the order to present them in."""
        ...


@dataclass(frozen=True)
class ThirdFourthFirst:
    """Field notes §5: the 3rd and 4th busiest first, then the two busiest (callers who need the
    top services persist anyway), then the rest by traffic."""

    name: str = "third-fourth-first"
    description: str = "3rd and 4th busiest first, then the two busiest, then the rest"

    def order(self, ranked: Sequence[str]) -> list[str]:
        ranked = list(ranked)
        if len(ranked) < 3:
            return ranked
        return [*ranked[2:4], *ranked[:2], *ranked[4:]]


@dataclass(frozen=True)
class BusiestFirst:
    name: str = "busiest-first"
    description: str = "by traffic, busiest first"

    def order(self, ranked: Sequence[str]) -> list[str]:
        return list(ranked)


POLICIES: dict[str, OrderingPolicy] = {p.name: p for p in (ThirdFourthFirst(), BusiestFirst())}


@dataclass(frozen=True)
class OrderSuggestion:
    node: str
    policy: str
    current: tuple[str, ...]  # keys by traffic, busiest first, with counts
    counts: tuple[int, ...]
    suggested: tuple[tuple[str, str], ...]  # (new key position 1.., what it does) in order


@dataclass
class MenuStats:
    menu: str
    calls: int
    finished: int
    exits: Counter[str]
    nodes: dict[str, NodeStats]
    depth: Counter[int]
    policy: str
    suggestions: list[OrderSuggestion]

    @property
    def self_served_share(self) -> float:
        done = self.exits[ExitReason.SELF_SERVED] + self.human
        return self.exits[ExitReason.SELF_SERVED] / done if done else 0.0

    @property
    def human(self) -> int:
        return sum(self.exits[r] for r in HUMAN_REASONS)

    @property
    def abandon_rate(self) -> float:
        return self.exits[ExitReason.CALLER_HANGUP] / self.calls if self.calls else 0.0

    @property
    def max_depth(self) -> int:
        return max(self.depth, default=0)


def path_depth(events: Iterable[PathEvent]) -> int:
    """Nodes entered, not counting re-entries of the node just left (repeat, retries)."""
    depth, last = 0, None
    for e in events:
        if e.kind is PathKind.ENTER and e.node != last:
            depth += 1
            last = e.node
    return depth


@dataclass
class Tally:
    """The counts behind MenuStats: built from paths one at a time and mergeable, so counts of
    separate time buckets add up to the counts of their union (rollups kept by the record)."""

    calls: int = 0
    finished: int = 0
    exits: Counter[str] = field(default_factory=Counter)
    nodes: dict[str, NodeStats] = field(default_factory=dict)
    depth: Counter[int] = field(default_factory=Counter)

    def _node(self, name: str) -> NodeStats:
        st = self.nodes.get(name)
        if st is None:
            st = self.nodes[name] = NodeStats(name)
        return st

    def add(self, path: CallPath) -> None:
        self.calls += 1
        events = sorted(path.events, key=lambda e: e.at) if _unsorted(path.events) else list(path.events)
        self.depth[path_depth(events)] += 1
        current: str | None = None
        entered_at = 0.0
        for e in events:
            if e.kind is PathKind.ENTER:
                if current is not None:
                    st = self._node(current)
                    st.total_seconds += max(0.0, e.at - entered_at)
                    st.timed_visits += 1
                self._node(e.node).entries += 1
                current, entered_at = e.node, e.at
            elif e.kind is PathKind.KEY:
                st = self._node(e.node)
                st.keys[e.key] += 1
                st.key_targets[e.key] = e.target
            elif e.kind is PathKind.INVALID:
                self._node(e.node).invalid += 1
            elif e.kind is PathKind.TIMEOUT:
                self._node(e.node).timeouts += 1
            elif e.kind is PathKind.FAILURE:
                self._node(e.node).failures += 1
            elif e.kind is PathKind.EXIT:
                self.finished += 1
                reason = counted_exit(e.detail, events)
                self.exits[reason] += 1
                self._node(e.node).exits[reason] += 1
                if current is not None:
                    st = self._node(current)
                    st.total_seconds += max(0.0, e.at - entered_at)
                    st.timed_visits += 1
                    current = None

    def merge(self, other: Tally) -> None:
        """Add `other`'s counts; for a key's target, `other` (the later bucket) wins."""
        self.calls += other.calls
        self.finished += other.finished
        self.exits.update(other.exits)
        self.depth.update(other.depth)
        for name, theirs in other.nodes.items():
            st = self._node(name)
            st.entries += theirs.entries
            st.exits.update(theirs.exits)
            st.keys.update(theirs.keys)
            st.key_targets.update(theirs.key_targets)
            st.invalid += theirs.invalid
            st.timeouts += theirs.timeouts
            st.failures += theirs.failures
            st.total_seconds += theirs.total_seconds
            st.timed_visits += theirs.timed_visits

    def merge_dict(self, d: Mapping[str, Any]) -> None:
        """`merge(Tally.from_dict(d))` without building the other tally: a month of 15-minute
        rollups is thousands of them (reports, `menus stats`)."""
        self.calls += int(d["calls"])
        self.finished += int(d["finished"])
        _add(self.exits, d["exits"])
        depth = self.depth
        for k, v in d["depth"].items():
            depth[int(k)] += int(v)
        for name, n in d["nodes"].items():
            st = self._node(name)
            st.entries += int(n["entries"])
            _add(st.exits, n["exits"])
            _add(st.keys, n["keys"])
            st.key_targets.update(n["key_targets"])
            st.invalid += int(n["invalid"])
            st.timeouts += int(n["timeouts"])
            st.failures += int(n["failures"])
            st.total_seconds += float(n["total_seconds"])
            st.timed_visits += int(n["timed_visits"])

    def to_dict(self) -> dict[str, object]:
        return {"calls": self.calls, "finished": self.finished, "exits": dict(self.exits),
                "depth": {str(k): v for k, v in self.depth.items()},
                "nodes": {n: {"entries": st.entries, "exits": dict(st.exits), "keys": dict(st.keys),
                              "key_targets": dict(st.key_targets), "invalid": st.invalid,
                              "timeouts": st.timeouts, "failures": st.failures,
                              "total_seconds": st.total_seconds, "timed_visits": st.timed_visits}
                          for n, st in self.nodes.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Tally:
        tally = cls(calls=int(d["calls"]), finished=int(d["finished"]), exits=Counter(d["exits"]),
                    depth=Counter({int(k): int(v) for k, v in d["depth"].items()}))
        for name, n in d["nodes"].items():
            tally.nodes[name] = NodeStats(
                name, entries=int(n["entries"]), exits=Counter(n["exits"]), keys=Counter(n["keys"]),
                key_targets=dict(n["key_targets"]), invalid=int(n["invalid"]), timeouts=int(n["timeouts"]),
                failures=int(n["failures"]), total_seconds=float(n["total_seconds"]),
                timed_visits=int(n["timed_visits"]))
        return tally


def _add(counter: Counter[str], counts: Mapping[str, Any]) -> None:
    for k, v in counts.items():
        counter[k] += int(v)


def tally(paths: Iterable[CallPath]) -> Tally:
    out = Tally()
    for path in paths:
        out.add(path)
    return out


def summarize(menu: str, counts: Tally, policy: OrderingPolicy | None = None, human_key: str = "0") -> MenuStats:
    """MenuStats from counts: the suggested option order per node by `policy`."""
    policy = policy or ThirdFourthFirst()
    suggestions: list[OrderSuggestion] = []
    for st in counts.nodes.values():
        ranked = [(k, n) for k, n in st.keys.most_common() if k.isdigit() and k != human_key]
        ranked.sort(key=lambda kn: (-kn[1], kn[0]))
        if len(ranked) < 2:
            continue
        order = policy.order([k for k, _ in ranked])
        slots = sorted(k for k, _ in ranked)
        suggested = tuple((slot, st.key_targets[key]) for slot, key in zip(slots, order, strict=True))
        suggestions.append(OrderSuggestion(
            node=st.node, policy=policy.name, current=tuple(k for k, _ in ranked),
            counts=tuple(n for _, n in ranked), suggested=suggested))
    return MenuStats(menu=menu, calls=counts.calls, finished=counts.finished, exits=counts.exits,
                     nodes=counts.nodes, depth=counts.depth, policy=policy.name, suggestions=suggestions)


def aggregate(menu: str, paths: Iterable[CallPath], policy: OrderingPolicy | None = None,
              human_key: str = "0") -> MenuStats:
    return summarize(menu, tally(paths), policy, human_key)


def _unsorted(events: Sequence[PathEvent]) -> bool:
    return any(b.at < a.at for a, b in itertools.pairwise(events))
