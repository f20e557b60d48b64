"""Aggregation of recorded IVR paths and the option-ordering policies."""

from __future__ import annotations

import pytest

from ivrserver.domain import menu_stats as ms
from ivrserver.domain.menu_engine import ExitReason, PathEvent, PathKind


def path(call_id: str, *steps: tuple[str, str, float, str, str]) -> ms.CallPath:
    """steps: (kind, node, at, key, detail/target) — compact test notation."""
    events = []
    for kind, node, at, key, extra in steps:
        k = PathKind(kind)
        if k is PathKind.KEY:
            events.append(PathEvent(k, node, at, key=key, target=extra))
        else:
            events.append(PathEvent(k, node, at, key=key, detail=extra))
    return ms.CallPath(call_id, "hotline", "v1", steps[0][2], tuple(events))


def walk(call_id: str, key: str, target: str, exit_reason: ExitReason, t: float = 0.0) -> ms.CallPath:
    """main → key → the node `target` names ('goto:balance' → balance) → exit."""
    node = target.split(":")[-1]
    return path(call_id,
                ("enter", "main", t, "", ""),
                ("key", "main", t + 4, key, target),
                ("enter", node, t + 4, "", ""),
                ("exit", node, t + 10, "", str(exit_reason)))


@pytest.mark.parametrize(("policy", "ranked", "expected"), [
    (ms.ThirdFourthFirst(), ["a", "b", "c", "d", "e"], ["c", "d", "a", "b", "e"]),
    (ms.ThirdFourthFirst(), ["a", "b", "c", "d"], ["c", "d", "a", "b"]),
    (ms.ThirdFourthFirst(), ["a", "b", "c"], ["c", "a", "b"]),
    (ms.ThirdFourthFirst(), ["a", "b"], ["a", "b"]),
    (ms.BusiestFirst(), ["a", "b", "c", "d"], ["a", "b", "c", "d"]),
])
def test_ordering_policies(policy: ms.OrderingPolicy, ranked: list[str], expected: list[str]) -> None:
    assert policy.order(ranked) == expected


def test_aggregate_per_node_exits_abandon_time_and_share() -> None:
    paths = [
        walk("c1", "1", "goto:balance", ExitReason.SELF_SERVED),
        walk("c2", "1", "goto:balance", ExitReason.SELF_SERVED),
        walk("c3", "2", "goto:faults", ExitReason.QUEUE),
        path("c4", ("enter", "main", 0, "", ""), ("invalid", "main", 3, "7", ""),
             ("timeout", "main", 8, "", ""), ("exit", "main", 9, "", "caller_hangup")),
    ]
    stats = ms.aggregate("hotline", paths)
    assert (stats.calls, stats.finished) == (4, 4)
    assert stats.exits == {"self_served": 2, "queue": 1, "caller_hangup": 1}
    assert stats.self_served_share == pytest.approx(2 / 3)
    assert stats.abandon_rate == pytest.approx(1 / 4)
    main = stats.nodes["main"]
    assert (main.entries, main.invalid, main.timeouts) == (4, 1, 1)
    assert main.abandon_rate == pytest.approx(1 / 4)
    assert main.average_seconds == pytest.approx((4 + 4 + 4 + 9) / 4)
    assert stats.nodes["balance"].average_seconds == pytest.approx(6)
    assert stats.nodes["balance"].exits == {"self_served": 2}
    assert stats.depth == {2: 3, 1: 1}
    assert stats.max_depth == 2


def test_a_caller_who_heard_the_balance_and_hung_up_counts_as_self_served() -> None:
    heard = path("c1", ("enter", "main", 0, "", ""), ("key", "main", 1, "1", "goto:balance"),
                 ("enter", "balance", 2, "", ""), ("lookup", "balance", 3, "", "found"),
                 ("enter", "after_balance", 4, "", ""), ("exit", "after_balance", 9, "", "caller_hangup"))
    missing = path("c2", ("enter", "main", 0, "", ""), ("enter", "balance", 2, "", ""),
                   ("lookup", "balance", 3, "", "missing"), ("exit", "balance", 9, "", "caller_hangup"))
    stats = ms.aggregate("hotline", [heard, missing])
    assert stats.exits == {"self_served": 1, "caller_hangup": 1}
    assert stats.nodes["after_balance"].exits == {"self_served": 1}
    assert stats.nodes["after_balance"].abandon_rate == 0.0


def test_retries_of_the_same_node_do_not_count_as_depth() -> None:
    p = path("c1", ("enter", "main", 0, "", ""), ("enter", "main", 5, "", ""), ("enter", "sub", 6, "", ""),
             ("enter", "main", 7, "", ""), ("exit", "main", 8, "", "queue"))
    assert ms.path_depth(p.events) == 3


def test_suggested_order_follows_the_policy_and_says_which() -> None:
    traffic = {"1": ("goto:balance", 40), "2": ("goto:topup", 30), "3": ("goto:faults", 20),
               "4": ("goto:plans", 10), "0": ("human", 50)}
    paths = [walk(f"{key}-{i}", key, target, ExitReason.QUEUE)
             for key, (target, n) in traffic.items() for i in range(n)]
    stats = ms.aggregate("hotline", paths)
    (sug,) = stats.suggestions
    assert stats.policy == sug.policy == "third-fourth-first"
    assert sug.current == ("1", "2", "3", "4") and sug.counts == (40, 30, 20, 10)  # '0' stays the human key
    assert sug.suggested == (("1", "goto:faults"), ("2", "goto:plans"), ("3", "goto:balance"),
                             ("4", "goto:topup"))
    busiest = ms.aggregate("hotline", paths, ms.BusiestFirst())
    assert busiest.policy == "busiest-first"
    assert busiest.suggestions[0].suggested[0] == ("1", "goto:balance")


def test_no_calls() -> None:
    stats = ms.aggregate("hotline", [])
    assert (stats.calls, stats.self_served_share, stats.abandon_rate, stats.max_depth) == (0, 0.0, 0.0, 0)
    assert stats.suggestions == []


def _paths() -> list[ms.CallPath]:
    return [
        walk("c1", "1", "goto:balance", ExitReason.SELF_SERVED, t=0),
        walk("c2", "2", "goto:faults", ExitReason.QUEUE, t=100),
        path("c3", ("enter", "main", 200, "", ""), ("invalid", "main", 203, "7", ""),
             ("timeout", "main", 208, "", ""), ("failure", "main", 209, "", ""),
             ("exit", "main", 209, "", "caller_hangup")),
        walk("c4", "1", "goto:balance", ExitReason.CALLER_HANGUP, t=300),
        walk("c5", "3", "goto:plans", ExitReason.SELF_SERVED, t=400),
    ]


@pytest.mark.parametrize("split", [0, 1, 2, 3, 5])
def test_tallies_of_buckets_merge_into_the_tally_of_the_whole(split: int) -> None:
    paths = _paths()
    whole = ms.tally(paths)
    merged = ms.tally(paths[:split])
    merged.merge(ms.tally(paths[split:]))
    assert merged == whole
    assert ms.summarize("hotline", merged) == ms.aggregate("hotline", paths)


def test_a_tally_survives_its_json_form() -> None:
    import json

    whole = ms.tally(_paths())
    assert ms.Tally.from_dict(json.loads(json.dumps(whole.to_dict()))) == whole


@pytest.mark.parametrize("split", [0, 1, 2, 3, 5])
def test_merging_a_stored_tally_is_merging_the_tally(split: int) -> None:
    """merge_dict (the month of rollups a report reads) adds exactly what merge(from_dict) adds."""
    import json

    paths = _paths()
    stored = json.loads(json.dumps(ms.tally(paths[split:]).to_dict()))
    by_dict, by_tally = ms.tally(paths[:split]), ms.tally(paths[:split])
    by_dict.merge_dict(stored)
    by_tally.merge(ms.Tally.from_dict(stored))
    assert by_dict == by_tally == ms.tally(paths)
