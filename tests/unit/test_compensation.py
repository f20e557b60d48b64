"""Compensation within authority (domain/compensation.py): the table decides, never the page."""

from __future__ import annotations

from typing import Any

import pytest

from ivrserver.domain import compensation as comp
from ivrserver.domain.compensation import Authority, CompensationPolicy, CompensationState

POLICY = CompensationPolicy(
    currency="CNY", timezone="Asia/Shanghai", seniors=frozenset({"agent1002"}),
    roles={"agent": Authority(per_case={1: 10000, 2: 5000, 3: 2000}, per_day=30000),
           "senior": Authority(per_case={1: 30000, 2: 15000}, per_day=100000),
           "supervisor": Authority(per_case={1: 200000, 2: 100000, 3: 50000}, per_day=None)})


@pytest.mark.parametrize(("role", "severity", "amount", "case_total", "day_total", "granted", "why"), [
    ("agent", 2, 5000, 0, 0, True, ""),
    ("agent", 2, 5001, 0, 0, False, "per case"),
    ("agent", 2, 1000, 4500, 0, False, "4500 already granted"),  # the case's total counts
    ("agent", 1, 10000, 0, 25000, False, "per day"),
    ("agent", 1, 5000, 0, 25000, True, ""),
    ("agent", 5, 1, 0, 0, False, "per case"),  # a severity missing from the table: nothing
    ("senior", 2, 15000, 0, 0, True, ""),
    ("supervisor", 1, 200000, 0, 10**9, True, ""),  # no daily limit
    ("supervisor", 3, 50001, 0, 0, False, "per case"),
    ("trainee", 1, 1, 0, 0, False, "per case"),  # an unknown role: nothing
])
def test_decide(role: str, severity: int, amount: int, case_total: int, day_total: int, granted: bool,
                why: str) -> None:
    verdict = comp.decide(POLICY, role, severity, amount=amount, case_total=case_total, day_total=day_total)
    assert verdict.granted is granted and why in verdict.reason


@pytest.mark.parametrize(("agent", "supervisor", "role"), [
    ("agent1001", False, "agent"), ("agent1002", False, "senior"), ("agent1002", True, "supervisor"),
])
def test_role(agent: str, supervisor: bool, role: str) -> None:
    assert comp.role_of(agent, supervisor, POLICY) == role


def test_day_is_the_policys_local_day() -> None:
    at = 1_700_000_000.0 - 1_700_000_000.0 % 86400 + 17 * 3600  # 17:00 UTC = 01:00 next day in Shanghai
    assert comp.day_of(at, POLICY) != comp.day_of(at, CompensationPolicy(timezone="UTC"))


def test_ids_are_stable_per_case_actor_key() -> None:
    a = comp.compensation_id("7", "agent:a1", "k1")
    assert a == comp.compensation_id("7", "agent:a1", "k1") and a != comp.compensation_id("7", "agent:a2", "k1")
    assert a.startswith("cp-") and len(a) == 27


@pytest.mark.parametrize(("body", "fields"), [
    ({"amount_cents": 500, "currency": "CNY", "reason": "sorry"}, []),
    ({"amount_cents": 5.5, "currency": "CNY", "reason": "x"}, ["amount_cents"]),  # cents are whole
    ({"amount_cents": True, "currency": "CNY", "reason": "x"}, ["amount_cents"]),
    ({"amount_cents": -1, "currency": "CNY", "reason": "x"}, ["amount_cents"]),
    ({"amount_cents": 10**13, "currency": "CNY", "reason": "x"}, ["amount_cents"]),
    ({"amount_cents": "500", "currency": "CNY", "reason": "x"}, ["amount_cents"]),
    ({"amount_cents": 500, "currency": "USD", "reason": "x"}, ["currency"]),
    ({"amount_cents": 500, "currency": "cny", "reason": "x"}, ["currency"]),
    ({"amount_cents": 500, "currency": "CNY", "reason": "   "}, ["reason"]),
    ({"amount_cents": 500, "currency": "CNY", "reason": "x" * 501}, ["reason"]),
    ({"amount_cents": 500, "currency": "CNY", "reason": "x", "state": "granted"}, ["state"]),  # the page can't decide
    ({"amount_cents": 500, "currency": "CNY", "reason": "x", "approved_by": "me"}, ["approved_by"]),
    ({"amount_cents": 500, "currency": "CNY", "reason": "x", "key": "a b"}, ["key"]),
    ("500 CNY", ["body"]),
])
def test_request_body(body: Any, fields: list[str]) -> None:
    parsed, problems = comp.validate_request(body, POLICY)
    assert [f for f, _ in problems] == fields and (parsed is None) == bool(fields)


def test_reason_loses_control_characters() -> None:
    parsed, _ = comp.validate_request({"amount_cents": 1, "currency": "CNY", "reason": "a\x1b[31mb\nc"}, POLICY)
    assert parsed is not None and parsed["reason"] == "a [31mb c"


def test_round_trip() -> None:
    c = comp.Compensation(id="cp-1", case_id="7", customer_id="c1", amount_cents=500, currency="CNY", reason="x",
                          granted_by="agent:a1", state=CompensationState.REQUESTED, requested_at=1.5)
    assert comp.from_dict(comp.to_dict(c)) == c
