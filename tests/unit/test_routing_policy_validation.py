"""Bad routing policies and agent files → the exact errors an admin reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ivrserver.config import RoutingSettings
from ivrserver.domain.routing import PolicyError, parse_policy, validate_policy
from ivrserver.files.menus import load_menu
from ivrserver.files.routing import (
    KNOWN_QUEUES,
    RoutingFileError,
    check,
    load_agents,
    load_policy,
    load_routing,
    parse_agents,
)

AGENT_IDS = {"agent1001", "agent1010"}
TARGETS = "account_manager, case_owner, last_agent, menu, tier_queue, {agent: ID}, {queue: NAME, priority: N}"
CONDITIONS = "anonymous, any, contacted_within_hours, known, open_case, pin_locked_out, segment, tier, time"


def one_rule(**rule: Any) -> dict[str, Any]:
    return {"rules": [{"name": "vip-first", **rule}]}


BAD_POLICIES = [
    ("not a mapping", [],
     ["policy: expected a mapping with version, timezone, ring_seconds, default_queue, tier_queues, rules, "
      "otherwise, got []"]),
    ("misspelt tier", one_rule(when={"tier": "vipp"}, then=["menu"]),
     ['rule #1 (vip-first): when.tier: unknown tier "vipp"; allowed: gold, standard, vip; did you mean "vip"?']),
    ("misspelt condition", one_rule(when={"tiers": "vip"}, then=["menu"]),
     [f'rule #1 (vip-first): when.tiers: unknown condition "tiers"; allowed: {CONDITIONS}; did you mean "tier"?']),
    ("unknown segment", one_rule(when={"segment": ["family", "goverment"]}, then=["menu"]),
     ['rule #1 (vip-first): when.segment: unknown segment "goverment"; allowed: enterprise, family, government, '
      'individual; did you mean "government"?']),
    ("misspelt target", one_rule(then=["last_agnet", "menu"]),
     [f'rule #1 (vip-first): then #1: unknown target "last_agnet"; allowed: {TARGETS}; did you mean "last_agent"?']),
    ("misspelt target mapping", one_rule(then=[{"queu": "vip"}]),
     [f'rule #1 (vip-first): then #1: unknown target mapping with keys queu; allowed: {TARGETS}; '
      'did you mean "queue"?']),
    ("chain without an end", one_rule(then=["case_owner"]),
     ["rule #1 (vip-first): then: the chain must end with a queue, tier_queue or menu target "
      "(where the call goes when no agent is free)"]),
    ("target after the end", one_rule(then=["menu", "case_owner"]),
     ["rule #1 (vip-first): then #2: unreachable: the chain already ends at 'menu' "
      "(queue, tier_queue and menu must come last)"]),
    ("empty chain", one_rule(then=[]), ["rule #1 (vip-first): then: expected a non-empty list of targets, got []"]),
    ("unknown queue", one_rule(then=[{"queue": "vipp", "priority": 10}]),
     ['rule #1 (vip-first): then #1.queue: unknown queue "vipp"; allowed: billing, faults, general, sales, vip; '
      'did you mean "vip"?']),
    ("negative priority", one_rule(then=[{"queue": "vip", "priority": -1}]),
     ["rule #1 (vip-first): then #1.priority: must be 0..1000, got -1"]),
    ("priority as text", one_rule(then=[{"queue": "vip", "priority": "high"}]),
     ["rule #1 (vip-first): then #1.priority: expected a whole number 0..1000, got 'high'"]),
    ("unknown agent", one_rule(then=[{"agent": "agent1011"}, "menu"]),
     ['rule #1 (vip-first): then #1.agent: unknown agent "agent1011"; defined: agent1001, agent1010; '
      'did you mean "agent1010"?']),
    ("duplicate rule names", {"rules": [{"name": "a", "then": ["menu"]}, {"name": "a", "then": ["menu"]}]},
     ['rule #2 (a): name: duplicate rule name "a" (also rule #1)']),
    ("nameless rule", {"rules": [{"then": ["menu"]}]}, ["rule #1: missing key name"]),
    ("rule without then", one_rule(), ["rule #1 (vip-first): missing key then (the target chain)"]),
    ("unquoted time and hour 25", one_rule(when={"time": {"from": 480, "until": "25:00"}}, then=["menu"]),
     ['rule #1 (vip-first): when.time.from: expected "HH:MM" in quotes, got 480 '
      "(YAML reads unquoted 08:30 as a number)",
      "rule #1 (vip-first): when.time.until: expected \"HH:MM\" (00:00..24:00), got '25:00'"]),
    ("empty time window", one_rule(when={"time": {"from": "08:00", "until": "08:00"}}, then=["menu"]),
     ["rule #1 (vip-first): when.time: from and until are both 08:00: the window is empty"]),
    ("misspelt day", one_rule(when={"time": {"from": "08:00", "until": "18:00", "days": ["mon", "fr"]}},
                              then=["menu"]),
     ['rule #1 (vip-first): when.time.days: unknown day "fr"; allowed: fri, mon, sat, sun, thu, tue, wed; '
      'did you mean "fri"?']),
    ("time window missing until", one_rule(when={"time": {"from": "08:00"}}, then=["menu"]),
     ["rule #1 (vip-first): when.time: missing key until"]),
    ("bad flag and bad hours", one_rule(when={"open_case": "yes", "contacted_within_hours": 0}, then=["menu"]),
     ["rule #1 (vip-first): when.open_case: expected true or false, got 'yes'",
      "rule #1 (vip-first): when.contacted_within_hours: expected a number of hours, more than 0 and at most "
      "8760, got 0"]),
    ("nested any", one_rule(when={"any": [{"open_case": True, "any": []}]}, then=["menu"]),
     ['rule #1 (vip-first): when.any #1.any: unknown condition "any"; allowed: anonymous, '
      "contacted_within_hours, known, open_case, pin_locked_out, segment, tier, time"]),
    ("rule-level keys", one_rule(ring_seconds=301, label="", then=[{"agent": 5}, "menu"]),
     ["rule #1 (vip-first): label: expected text, got ''",
      "rule #1 (vip-first): then #1.agent: expected an agent id, got 5",
      "rule #1 (vip-first): ring_seconds: must be 1..300, got 301"]),
    ("top-level keys", {"timezone": "Asia/Shanghia", "ring_seconds": 0, "tier_queues": {"platinum": "vip"},
                        "rule": []},
     ['rule: unknown key "rule"; allowed: default_queue, otherwise, ring_seconds, rules, tier_queues, timezone, '
      'version; did you mean "rules"?',
      "timezone: unknown IANA time zone 'Asia/Shanghia' (e.g. UTC, Asia/Shanghai)",
      "ring_seconds: must be 1..300, got 0",
      'tier_queues.platinum: unknown tier "platinum"; allowed: gold, standard, vip']),
    ("version and otherwise", {"version": 2, "otherwise": []},
     ["version: only version 1 is supported, got 2",
      "otherwise: expected a non-empty list of targets, got []"]),
    ("errors in two rules", {"rules": [{"name": "one", "then": ["menuu"]},
                                       {"name": "two", "when": {"known": 1}, "then": ["menu"]}]},
     [f'rule #1 (one): then #1: unknown target "menuu"; allowed: {TARGETS}; did you mean "menu"?',
      "rule #2 (two): when.known: expected true or false, got 1"]),
]


@pytest.mark.parametrize(("case", "policy", "expected"), BAD_POLICIES, ids=[c[0] for c in BAD_POLICIES])
def test_bad_policy(case: str, policy: Any, expected: list[str]) -> None:
    problems = validate_policy(policy, agent_ids=AGENT_IDS, queues=KNOWN_QUEUES)
    assert [str(p) for p in problems] == expected
    with pytest.raises(PolicyError) as info:
        parse_policy(policy, agent_ids=AGENT_IDS, queues=KNOWN_QUEUES)
    assert [str(p) for p in info.value.problems] == expected


def test_without_agent_and_queue_lists_names_are_only_checked_for_shape() -> None:
    policy = parse_policy(one_rule(then=[{"agent": "agent7777"}, {"queue": "overflow", "priority": 2}]))
    assert policy.rules[0].then[1].queue is not None
    assert policy.rules[0].then[1].queue.queue == "overflow"
    assert [str(p) for p in validate_policy(one_rule(then=[{"queue": "two words"}]))] == [
        "rule #1 (vip-first): then #1.queue: expected a queue name (letters, digits, _ . -), got 'two words'"]


def test_minimal_policy_defaults() -> None:
    policy = parse_policy({})
    assert (policy.rules, policy.ring_seconds, policy.default_queue.queue, policy.timezone) == ((), 20, "general",
                                                                                              "UTC")
    assert [t.kind.value for t in policy.otherwise] == ["menu"]


# --- files: line numbers, duplicate keys, agents.yaml

POLICY_YAML = """\
version: 1
timezone: UTC
rules:
  - name: vip
    when:
      tier: vipp
    then: [account_manager, tier_queue]
  - name: night
    when:
      time: {from: 22:00, until: "06:00"}
    then: [menu]
  - name: vip
    then:
      - {agent: agent1011}
      - menu
"""


def test_policy_file_errors_carry_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(POLICY_YAML)
    with pytest.raises(RoutingFileError) as info:
        load_policy(path, agents={a: None for a in AGENT_IDS})  # type: ignore[misc]
    assert info.value.problems == [
        f'{path}:6:7: error: rule #1 (vip): when.tier: unknown tier "vipp"; allowed: gold, standard, vip; '
        'did you mean "vip"?',
        f'{path}:10:14: error: rule #2 (night): when.time.from: expected "HH:MM" in quotes, got 1320 '
        "(YAML reads unquoted 08:30 as a number)",
        f'{path}:12:5: error: rule #3 (vip): name: duplicate rule name "vip" (also rule #1)',
        f'{path}:14:10: error: rule #3 (vip): then #1.agent: unknown agent "agent1011"; defined: agent1001, agent1010; '
        'did you mean "agent1010"?',
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("rules: [\n  {name: a, then: [menu]\n",
     "{path}:3:1: error: not valid YAML: expected ',' or '}', but got '<stream end>'"),
    ("timezone: UTC\ntimezone: Asia/Shanghai\n",
     "{path}:2:1: error: timezone: duplicate key 'timezone' (first defined on line 1) "
     "(YAML keeps only the last one: remove or rename one)"),
    ("", "{path}:1:1: error: the file is empty"),
    ("[" * 5000, "{path}:1:42: error: nested deeper than 40 levels (the limit for a routing file) "
     "(a routing file needs only a few levels; check for unclosed '[' or '{')"),
    ("a: &a [*a, *a]\n", "{path}:1:1: error: too large or too deeply nested once aliases are expanded "
     "(limit 20000 values, depth 40)"),
])
def test_policy_file_yaml_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(text)
    with pytest.raises(RoutingFileError) as info:
        load_policy(path)
    assert info.value.problems == [expected.replace("{path}", str(path))]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RoutingFileError) as info:
        load_policy(tmp_path / "nope.yaml")
    assert info.value.problems == [f"{tmp_path / 'nope.yaml'}:1:1: error: cannot read: No such file or directory"]


AGENTS_YAML = """\
wrap_up_seconds: -1
agents:
  - {id: agent1001, name: Wang Fang, endpoint: PJSIP/agent1001, tiers: [vip]}
  - {id: agent1001, name: Li Na, endpoint: PJSIP/agent1002}
  - id: agent1003
    name: Zhang Wei
    endpoint: agent1003
    tiers: [vip, platinum]
    skils: [billing]
  - {id: agent1004, name: Liu Yang, endpoint: pjsip/AGENT1001, supervisor: "yes"}
"""


def test_agents_file_errors_carry_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(AGENTS_YAML)
    with pytest.raises(RoutingFileError) as info:
        load_agents(path)
    assert info.value.problems == [
        f"{path}:1:1: error: wrap_up_seconds: expected seconds 0..3600, got -1",
        f'{path}:4:6: error: agent #2 (agent1001): id: duplicate agent id "agent1001"',
        f"{path}:9:5: error: agent #3 (agent1003): skils: unknown key; allowed: id, name, endpoint, tiers, skills, "
        'supervisor, password_hash; did you mean "skills"?',
        f"{path}:7:5: error: agent #3 (agent1003): endpoint: expected a dial string TECH/resource like "
        "PJSIP/agent1001, got 'agent1003'",
        f"{path}:8:5: error: agent #3 (agent1003): tiers: unknown tier 'platinum'; allowed: vip, gold, standard",
        f"{path}:10:37: error: agent #4 (agent1004): endpoint: pjsip/AGENT1001 is also the endpoint of agent1001",
        f"{path}:10:64: error: agent #4 (agent1004): supervisor: expected true or false, got 'yes'",
    ]


def test_agents_need_a_list() -> None:
    with pytest.raises(RoutingFileError) as info:
        parse_agents({"agents": []})
    assert info.value.problems == ["agents: expected a non-empty list of agents, got []"]


def test_shipped_files_are_valid() -> None:
    assert check(RoutingSettings()) == []
    policy, agents = load_routing(RoutingSettings())
    assert [r.name for r in policy.rules] == ["pin-locked-out", "anonymous", "repeat-vip", "vip", "repeat"]
    assert (len(agents.agents), agents.wrap_up_seconds) == (10, 10.0)


def test_check_reports_both_files(tmp_path: Path) -> None:
    (tmp_path / "routing.yaml").write_text("rules:\n  - {name: x, then: [case_owner]}\n")
    (tmp_path / "agents.yaml").write_text("agents:\n  - {id: agent1001, endpoint: SIP}\n")
    settings = RoutingSettings(policy_file=str(tmp_path / "routing.yaml"), agents_file=str(tmp_path / "agents.yaml"))
    assert check(settings) == [
        f"{tmp_path / 'agents.yaml'}:2:21: error: agent #1 (agent1001): endpoint: expected a dial string "
        "TECH/resource like PJSIP/agent1001, got 'SIP'",
        f"{tmp_path / 'routing.yaml'}:2:15: error: rule #1 (x): then: the chain must end with a queue, tier_queue "
        "or menu target (where the call goes when no agent is free)",
    ]


@pytest.mark.parametrize("text", ["timezone: UTC\ntimezone: Asia/Shanghai\n", "rules: [\n  {name: a\n", None])
def test_routing_and_menu_files_report_file_problems_alike(tmp_path: Path, text: str | None) -> None:
    """One loader (files/yaml_source.py), one error format: the same broken file reads the same as a
    menu and as a routing policy."""
    path = tmp_path / "same.yaml"
    if text is not None:
        path.write_text(text)
    menu, issues = load_menu(path)
    with pytest.raises(RoutingFileError) as info:
        load_policy(path)
    assert menu is None and issues
    assert info.value.problems == [i.format() for i in issues] == [i.format() for i in info.value.issues]
