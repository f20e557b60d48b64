"""Aggregate recorded IVR paths: per-node traffic, exits, abandon rate, depth, self-service share,
and a suggested option order from a pluggable ordering policy. Pure.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ivrserver.domain.menu_engine import HUMAN_REASONS, ExitReason, PathEvent, PathKind

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


def aggregate(menu: str, paths: Iterable[CallPath], policy: OrderingPolicy | None = None,
              human_key: str = "0") -> MenuStats:
    policy = policy or ThirdFourthFirst()
    nodes: dict[str, NodeStats] = {}
    exits: Counter[str] = Counter()
    depth: Counter[int] = Counter()
    calls = finished = 0

    def stats(name: str) -> NodeStats:
        if name not in nodes:
            nodes[name] = NodeStats(name)
        return nodes[name]

    for path in paths:
        calls += 1
        events = sorted(path.events, key=lambda e: e.at) if _unsorted(path.events) else list(path.events)
        depth[path_depth(events)] += 1
        current: str | None = None
        entered_at = 0.0
        for e in events:
            if e.kind is PathKind.ENTER:
                if current is not None:
                    st = stats(current)
                    st.total_seconds += max(0.0, e.at - entered_at)
                    st.timed_visits += 1
                stats(e.node).entries += 1
                current, entered_at = e.node, e.at
            elif e.kind is PathKind.KEY:
                st = stats(e.node)
                st.keys[e.key] += 1
                st.key_targets[e.key] = e.target
            elif e.kind is PathKind.INVALID:
                stats(e.node).invalid += 1
            elif e.kind is PathKind.TIMEOUT:
                stats(e.node).timeouts += 1
            elif e.kind is PathKind.FAILURE:
                stats(e.node).failures += 1
            elif e.kind is PathKind.EXIT:
                finished += 1
                exits[e.detail] += 1
                stats(e.node).exits[e.detail] += 1
                if current is not None:
                    st = stats(current)
                    st.total_seconds += max(0.0, e.at - entered_at)
                    st.timed_visits += 1
                    current = None

    suggestions: list[OrderSuggestion] = []
    for st in nodes.values():
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
    return MenuStats(menu=menu, calls=calls, finished=finished, exits=exits, nodes=nodes, depth=depth,
                     policy=policy.name, suggestions=suggestions)


def _unsorted(events: Sequence[PathEvent]) -> bool:
    return any(b.at < a.at for a, b in itertools.pairwise(events))
