"""cases.yaml (files/case_policy.py): the packaged file loads; every error names its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivrserver import config
from ivrserver.files import case_policy

GOOD = """\
due_hours: {1: 4, 2: 24}
actions:
  cancel_partner_charge:
    description: Cancel the partner's charge
    backoffice: partner-billing
compensation:
  currency: CNY
  timezone: Asia/Shanghai
  seniors: [agent1002]
  authority:
    agent: {per_case: {1: 10000, 2: 5000}, per_day: 30000}
    supervisor: {per_case: {1: 100000}, per_day: null}
"""


def test_the_packaged_policy_loads() -> None:
    policy = case_policy.load(config.Settings().cases.policy_file)
    assert policy.due_hours[1] == 4 and "cancel_partner_charge" in policy.actions
    assert policy.compensation.currency == "CNY" and policy.compensation.roles["supervisor"].per_day is None


def test_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "cases.yaml"
    path.write_text(GOOD)
    policy = case_policy.load(path)
    assert policy.due_hours == {1: 4.0, 2: 24.0}
    assert policy.actions["cancel_partner_charge"].backoffice == "partner-billing"
    assert policy.compensation.seniors == frozenset({"agent1002"})
    assert policy.compensation.roles["agent"].per_case == {1: 10000, 2: 5000}
    assert case_policy.check(path) == []


def test_defaults_when_keys_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "cases.yaml"
    path.write_text("actions: {}\n")
    policy = case_policy.load(path)
    assert policy.due_hours[3] == 72 and policy.compensation.roles == {}


@pytest.mark.parametrize(("replace", "by", "line", "message"), [
    ("due_hours: {1: 4, 2: 24}", "due_hours: {1: 4, 9: 24}", 1, "'9' is not a severity"),
    ("due_hours: {1: 4, 2: 24}", "due_hours: {1: -4}", 1, "expected hours"),
    ("due_hours: {1: 4, 2: 24}", "due_hours: {1: 4, 1: 5}", 1, "duplicate key"),
    ("    backoffice: partner-billing", "    backoffice: 'partner billing!'", 5, "back-office token"),
    ("    description: Cancel the partner's charge", "    description: ''", 4, "description"),
    ("  currency: CNY", "  currency: yuan", 7, "ISO 4217"),
    ("  timezone: Asia/Shanghai", "  timezone: Mars/Olympus", 8, "unknown time zone"),
    ("  seniors: [agent1002]", "  seniors: agent1002", 9, "list of agent ids"),
    ("    agent: {per_case: {1: 10000, 2: 5000}, per_day: 30000}",
     "    agent: {per_case: {1: 100.5}, per_day: 30000}", 11, "expected cents"),
    ("    agent: {per_case: {1: 10000, 2: 5000}, per_day: 30000}",
     "    agent: {per_case: {1: 1}, per_day: lots}", 11, "per_day"),
    ("    supervisor: {per_case: {1: 100000}, per_day: null}",
     "    manager: {per_case: {1: 100000}, per_day: null}", 12, "unknown key"),
    ("compensation:", "compensations:", 6, "unknown key"),
])
def test_errors_name_their_line(tmp_path: Path, replace: str, by: str, line: int, message: str) -> None:
    assert replace in GOOD
    path = tmp_path / "cases.yaml"
    path.write_text(GOOD.replace(replace, by))
    with pytest.raises(case_policy.CasePolicyError) as err:
        case_policy.load(path)
    text = "\n".join(err.value.problems)
    assert f"{path}:{line}:" in text and message in text, text


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "due_hours: [\n", "a: " + "[" * 100 + "]" * 100])
def test_broken_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "cases.yaml"
    path.write_text(text)
    assert case_policy.check(path)
    assert case_policy.check(tmp_path / "missing.yaml")


def test_doctor_checks_the_case_policy(tmp_path: Path) -> None:
    from ivrserver.commands.doctor import _check_cases

    assert _check_cases(config.Settings()).ok
    path = tmp_path / "cases.yaml"
    path.write_text("due_hours: {0: 4}\n")
    check = _check_cases(config.from_mapping({"cases": {"policy_file": str(path)}}))
    assert not check.ok and f"{path}:1:" in check.detail and check.fix == f"fix {path}"
