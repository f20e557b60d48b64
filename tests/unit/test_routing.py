"""route() over a table of situations, against the shipped default policy and agents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from ivrserver.domain.model import (
    Agent,
    AgentState,
    AgentStatus,
    CallerSnapshot,
    Case,
    CaseStatus,
    Contact,
    ContactKind,
    Customer,
    Segment,
    Tier,
)
from ivrserver.domain.routing import Action, Route, TraceStep, candidate_agent_ids, parse_policy, route
from ivrserver.files.routing import parse_agents

DEFAULTS = Path(__file__).resolve().parents[2] / "ivrserver" / "defaults"
POLICY = parse_policy(yaml.safe_load((DEFAULTS / "routing.yaml").read_text()))
AGENTS = parse_agents(yaml.safe_load((DEFAULTS / "agents.yaml").read_text())).agents
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)  # a Monday morning
T = NOW.timestamp()
HOUR = 3600.0

READY, BUSY, PAUSED, OUT = AgentState.READY, AgentState.ON_CALL, AgentState.PAUSED, AgentState.LOGGED_OUT
RINGING, WRAP = AgentState.RINGING, AgentState.WRAP_UP


def caller(tier: Tier | None = Tier.STANDARD, *, manager: str | None = None,
           cases: tuple[tuple[str, str | None], ...] = (), last: tuple[float, tuple[str, ...]] | None = None,
           segment: Segment = Segment.INDIVIDUAL) -> CallerSnapshot:
    """tier None = unknown number; cases: (id, owner); last: (hours ago, agents of that contact)."""
    customer = None if tier is None else Customer(
        id="c1", name="Zhou Xun", phones=("13800000001",), tier=tier, segment=segment, account_manager=manager)
    open_cases = tuple(Case(id=cid, customer_id="c1", status=CaseStatus.OPEN, summary="premium SMS charge",
                            opened_at=T - (10 + n) * HOUR, owner_agent=owner)
                       for n, (cid, owner) in enumerate(cases))
    contact = None if last is None else Contact(
        id="k1", kind=ContactKind.INBOUND, number="13800000001", started_at=T - last[0] * HOUR, agents=last[1])
    return CallerSnapshot(number="13800000001", customer=customer, open_cases=open_cases, last_contact=contact)


ANONYMOUS = CallerSnapshot(number="", anonymous=True)


def states(**by_agent: AgentState) -> dict[str, AgentStatus]:
    return {agent: AgentStatus(agent_id=agent, state=state, since=T - 60) for agent, state in by_agent.items()}


def to_agent(agent: str, queue: str, priority: int, rule: str | None, reason: str) -> Route:
    return Route(action=Action.AGENT, reason=reason, rule=rule, agent_id=agent, dial=f"PJSIP/{agent}",
                 ring_seconds=20, queue=queue, priority=priority, skip_menu=True)


def to_queue(queue: str, priority: int, rule: str | None, reason: str) -> Route:
    return Route(action=Action.QUEUE, reason=reason, rule=rule, queue=queue, priority=priority, skip_menu=True)


def to_menu(rule: str | None, reason: str) -> Route:
    return Route(action=Action.MENU, reason=reason, rule=rule)


SITUATIONS = [
    # --- VIP, no history: skip the menu, account manager if free
    ("vip, account manager free", caller(Tier.VIP, manager="agent1002"), states(agent1002=READY), False,
     to_agent("agent1002", "vip", 10, "vip", "VIP caller → account manager agent1002, then vip queue")),
    ("vip, account manager busy", caller(Tier.VIP, manager="agent1002"), states(agent1002=BUSY), False,
     to_queue("vip", 10, "vip", "VIP caller: account manager agent1002 busy → vip queue")),
    ("vip, account manager paused", caller(Tier.VIP, manager="agent1002"), states(agent1002=PAUSED), False,
     to_queue("vip", 10, "vip", "VIP caller: account manager agent1002 paused → vip queue")),
    ("vip, account manager logged out", caller(Tier.VIP, manager="agent1002"), states(agent1002=OUT), False,
     to_queue("vip", 10, "vip", "VIP caller: account manager agent1002 logged out → vip queue")),
    ("vip, account manager never seen", caller(Tier.VIP, manager="agent1002"), {}, False,
     to_queue("vip", 10, "vip", "VIP caller: account manager agent1002 logged out → vip queue")),
    ("vip, account manager ringing", caller(Tier.VIP, manager="agent1002"), states(agent1002=RINGING), False,
     to_queue("vip", 10, "vip", "VIP caller: account manager agent1002 ringing → vip queue")),
    ("vip, account manager in wrap-up", caller(Tier.VIP, manager="agent1002"), states(agent1002=WRAP), False,
     to_queue("vip", 10, "vip", "VIP caller: account manager agent1002 in wrap-up → vip queue")),
    ("vip, no account manager", caller(Tier.VIP), states(agent1002=READY), False,
     to_queue("vip", 10, "vip", "VIP caller → vip queue")),
    ("vip, account manager not in agents.yaml", caller(Tier.VIP, manager="agent9999"), states(agent9999=READY),
     False, to_queue("vip", 10, "vip", "VIP caller: account manager agent9999 not defined in agents → vip queue")),
    # --- VIP / gold calling again
    ("vip, open case, owner free", caller(Tier.VIP, manager="agent1002", cases=(("123", "agent1003"),)),
     states(agent1003=READY, agent1002=READY), False,
     to_agent("agent1003", "vip", 10, "repeat-vip",
              "repeat caller: open case #123 → case owner agent1003, then vip queue")),
    ("vip, open case, owner busy, manager free",
     caller(Tier.VIP, manager="agent1002", cases=(("123", "agent1003"),)),
     states(agent1003=BUSY, agent1002=READY), False,
     to_agent("agent1002", "vip", 10, "repeat-vip",
              "repeat caller: open case #123, case owner agent1003 busy → account manager agent1002, "
              "then vip queue")),
    ("the issue's example: open case, last agent busy",
     caller(Tier.VIP, cases=(("123", None),), last=(2, ("agent1003",))), states(agent1003=BUSY), False,
     to_queue("vip", 10, "repeat-vip",
              "repeat caller: open case #123, last call 2 h ago, last agent agent1003 busy → vip queue")),
    ("vip, owner is also last agent: asked once",
     caller(Tier.VIP, manager="agent1001", cases=(("7", "agent1003"),), last=(30, ("agent1003",))),
     states(agent1003=PAUSED, agent1001=READY), False,
     to_agent("agent1001", "vip", 10, "repeat-vip",
              "repeat caller: open case #7, case owner agent1003 paused → account manager agent1001, "
              "then vip queue")),
    ("vip, most recent of two open cases decides",
     caller(Tier.VIP, cases=(("41", "agent1001"), ("40", "agent1002"))), states(agent1001=READY, agent1002=READY),
     False, to_agent("agent1001", "vip", 10, "repeat-vip",
                     "repeat caller: open case #41 (+1 more) → case owner agent1001, then vip queue")),
    ("gold, called 3 h ago, last agent free", caller(Tier.GOLD, last=(3, ("agent1004", "agent1003"))),
     states(agent1003=READY), False,
     to_agent("agent1003", "vip", 5, "repeat-vip",
              "repeat caller: last call 3 h ago → last agent agent1003, then vip queue")),
    ("gold, called 40 min ago, last agent logged out, no manager", caller(Tier.GOLD, last=(2 / 3, ("agent1003",))),
     states(agent1003=OUT), False,
     to_queue("vip", 5, "repeat-vip",
              "repeat caller: last call 40 min ago, last agent agent1003 logged out → vip queue")),
    ("gold, called 30 h ago: outside the window → menu", caller(Tier.GOLD, last=(30, ("agent1003",))),
     states(agent1003=READY), False, to_menu(None, "no rule matched → menu")),
    ("vip, called 30 h ago: plain VIP rule", caller(Tier.VIP, manager="agent1002", last=(30, ("agent1003",))),
     states(agent1003=READY, agent1002=READY), False,
     to_agent("agent1002", "vip", 10, "vip", "VIP caller → account manager agent1002, then vip queue")),
    # --- standard customers
    ("standard, open case, owner free", caller(cases=(("9", "agent1005"),)), states(agent1005=READY), False,
     to_agent("agent1005", "general", 0, "repeat",
              "repeat caller: open case #9 → case owner agent1005, then general queue")),
    ("standard, open case, owner busy → menu", caller(cases=(("9", "agent1005"),)), states(agent1005=BUSY), False,
     to_menu("repeat", "repeat caller: open case #9, case owner agent1005 busy → menu")),
    ("standard, self-served 2 h ago: nobody to continue with", caller(last=(2, ())), {}, False,
     to_menu("repeat", "repeat caller: last call 2 h ago → menu")),
    ("standard, called 25 h ago → menu", caller(last=(25, ("agent1005",))), states(agent1005=READY), False,
     to_menu(None, "no rule matched → menu")),
    ("standard, nothing pending → menu", caller(manager="agent1004"), states(agent1004=READY), False,
     to_menu(None, "no rule matched → menu")),
    # --- unknown, anonymous, locked out
    ("unknown number → menu", caller(None), {}, False, to_menu(None, "no rule matched → menu")),
    ("anonymous → menu", ANONYMOUS, {}, False, to_menu("anonymous", "anonymous caller → menu")),
    ("anonymous, locked out of PIN → general queue", ANONYMOUS, {}, True,
     to_queue("general", 0, "pin-locked-out", "PIN locked out → general queue")),
    ("known vip, locked out of PIN (shared phone) → general queue",
     caller(Tier.VIP, manager="agent1002"), states(agent1002=READY), True,
     to_queue("general", 0, "pin-locked-out", "PIN locked out → general queue")),
]


@pytest.mark.parametrize(("situation", "snapshot", "live", "locked", "expected"), SITUATIONS,
                         ids=[s[0] for s in SITUATIONS])
def test_route(situation: str, snapshot: CallerSnapshot, live: dict[str, AgentStatus], locked: bool,
               expected: Route) -> None:
    got = route(snapshot, live, AGENTS, NOW, POLICY, pin_locked_out=locked)
    assert (got.action, got.agent_id, got.dial, got.ring_seconds, got.queue, got.priority, got.skip_menu,
            got.rule, got.reason) == (
        expected.action, expected.agent_id, expected.dial, expected.ring_seconds, expected.queue,
        expected.priority, expected.skip_menu, expected.rule, expected.reason)


def test_trace_names_every_rule_tried_and_every_candidate_skipped() -> None:
    snapshot = caller(Tier.VIP, manager="agent1002", cases=(("123", "agent1003"),), last=(2, ("agent1003",)))
    got = route(snapshot, states(agent1003=BUSY, agent1002=PAUSED), AGENTS, NOW, POLICY)
    assert got.trace == (
        TraceStep("rule", "pin-locked-out", "no match", "PIN is not locked out"),
        TraceStep("rule", "anonymous", "no match", "number is not withheld"),
        TraceStep("rule", "repeat-vip", "matched", "open case #123; last call 2 h ago"),
        TraceStep("candidate", "case owner agent1003", "skipped", "busy"),
        TraceStep("candidate", "last agent agent1003", "skipped", "already considered"),
        TraceStep("candidate", "account manager agent1002", "skipped", "paused"),
        TraceStep("target", "vip queue", "chosen", "priority 10"),
    )


def test_trace_tells_why_a_rule_did_not_match() -> None:
    got = route(caller(Tier.GOLD, last=(30, ("agent1003",))), {}, AGENTS, NOW, POLICY)
    assert [s for s in got.trace if s.subject in ("repeat-vip", "vip", "repeat")] == [
        TraceStep("rule", "repeat-vip", "no match",
                  "none of: no open case | last call 30 h ago, wants within 24 h"),
        TraceStep("rule", "vip", "no match", "tier is gold, wants vip"),
        TraceStep("rule", "repeat", "no match", "none of: no open case | last call 30 h ago, wants within 24 h"),
    ]


# --- time of day: a policy of its own

HOURS_POLICY = parse_policy({
    "timezone": "Asia/Shanghai",
    "ring_seconds": 15,
    "rules": [
        {"name": "night-vip", "label": "VIP at night", "when": {"tier": "vip", "time": {"from": "20:00",
                                                                                     "until": "08:00"}},
         "then": [{"agent": "agent1010"}, {"queue": "general", "priority": 20}]},
        {"name": "weekday-enterprise", "label": "enterprise, office hours",
         "when": {"segment": ["enterprise", "government"],
                  "time": {"from": "09:00", "until": "18:00", "days": ["mon", "tue", "wed", "thu", "fri"]}},
         "then": ["account_manager", {"queue": "billing", "priority": 3}]},
    ],
    "otherwise": [{"queue": "general"}],
})

VIP_CALLER = caller(Tier.VIP)
ENTERPRISE = caller(Tier.STANDARD, manager="agent1004", segment=Segment.ENTERPRISE)
NO_RULE = to_queue("general", 0, None, "no rule matched → general queue")


@pytest.mark.parametrize(("local", "snapshot", "live", "expected"), [
    ("2026-11-23 21:30", VIP_CALLER, states(agent1010=READY),
     to_agent("agent1010", "general", 20, "night-vip", "VIP at night → agent agent1010, then general queue")),
    ("2026-11-24 07:59", VIP_CALLER, states(agent1010=BUSY),
     to_queue("general", 20, "night-vip", "VIP at night: agent agent1010 busy → general queue")),
    ("2026-11-24 08:00", VIP_CALLER, states(agent1010=READY), NO_RULE),
    ("2026-11-23 19:59", VIP_CALLER, states(agent1010=READY), NO_RULE),
    ("2026-11-27 17:59", ENTERPRISE, states(agent1004=READY),  # Friday
     to_agent("agent1004", "billing", 3, "weekday-enterprise",
              "enterprise, office hours → account manager agent1004, then billing queue")),
    ("2026-11-27 18:00", ENTERPRISE, states(agent1004=READY), NO_RULE),
    ("2026-11-28 10:00", ENTERPRISE, states(agent1004=READY),  # Saturday
     to_queue("general", 0, None, "no rule matched → general queue")),
])
def test_time_of_day(local: str, snapshot: CallerSnapshot, live: dict[str, AgentStatus], expected: Route) -> None:
    now = datetime.strptime(local, "%Y-%m-%d %H:%M").replace(tzinfo=SHANGHAI)
    got = route(snapshot, live, AGENTS, now, HOURS_POLICY)
    assert (got.action, got.agent_id, got.ring_seconds if got.agent_id else None, got.queue, got.priority,
            got.rule, got.reason) == (expected.action, expected.agent_id,
                                      15 if expected.agent_id else None, expected.queue, expected.priority,
                                      expected.rule, expected.reason)


def test_time_window_uses_the_policy_zone_whatever_zone_now_is_in() -> None:
    # 13:30 UTC is 21:30 in Shanghai: night.
    now = datetime(2026, 11, 23, 13, 30, tzinfo=UTC)
    assert route(VIP_CALLER, states(agent1010=READY), AGENTS, now, HOURS_POLICY).rule == "night-vip"
    assert route(VIP_CALLER, states(agent1010=READY), AGENTS, now - timedelta(hours=6), HOURS_POLICY).rule is None


def test_night_window_after_midnight_belongs_to_the_previous_days_window() -> None:
    policy = parse_policy({"rules": [{"name": "fri-night", "when": {"time": {"from": "22:00", "until": "06:00",
                                                                              "days": ["fri"]}},
                                      "then": [{"queue": "faults"}]}], "timezone": "UTC"})
    saturday_2am = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    friday_2am = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    assert route(caller(None), {}, AGENTS, saturday_2am, policy).queue == "faults"
    assert route(caller(None), {}, AGENTS, friday_2am, policy).action is Action.MENU


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        route(caller(None), {}, AGENTS, datetime(2026, 11, 23, 10, 0), POLICY)


@pytest.mark.parametrize(("snapshot", "expected"), [
    (caller(None), frozenset()),
    (ANONYMOUS, frozenset()),
    (caller(Tier.VIP, manager="agent1002"), {"agent1002"}),
    (caller(Tier.VIP, manager="agent1002", cases=(("1", "agent1003"),), last=(1, ("agent1004",))),
     {"agent1002", "agent1003", "agent1004"}),
])
def test_candidates_are_only_the_agents_the_policy_can_pick(snapshot: CallerSnapshot,
                                                            expected: frozenset[str]) -> None:
    assert candidate_agent_ids(snapshot, POLICY) == expected
    assert candidate_agent_ids(caller(None), HOURS_POLICY) == {"agent1010"}


def test_default_agents_file() -> None:
    assert list(AGENTS) == [f"agent{n}" for n in range(1001, 1011)]
    assert AGENTS["agent1003"] == Agent(id="agent1003", name="Zhang Wei", endpoint="PJSIP/agent1003",
                                        tiers=("vip", "gold"), skills=("billing", "sales"))
    assert [a.id for a in AGENTS.values() if a.supervisor] == ["agent1010"]
