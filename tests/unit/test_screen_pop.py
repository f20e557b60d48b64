"""The pop's content and its masking by role: pure, tables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ivrserver.domain.model import (
    Case,
    CaseStatus,
    Contact,
    ContactKind,
    ContactPreferences,
    Customer,
    Outcome,
    Segment,
    Tier,
)
from ivrserver.domain.screen_pop import (
    MASK,
    Phase,
    PopContext,
    Role,
    build_pop,
    customer_id_of,
    ivr_steps,
    mask_account,
    phase_update,
    steps_from_path,
)

NOW = 1_700_000_000.0
DAY = 86400.0

CUSTOMER = Customer(
    id="C42", name="Wang Wei <script>alert(1)</script>", phones=("13800000001",), tier=Tier.VIP,
    segment=Segment.ENTERPRISE, language="zh", account_manager="Li Na", account_number="6222020212345678",
    pin_hash="scrypt$secret", preferences=ContactPreferences(timezone="Asia/Shanghai"),
    attributes={"plan": "Global 199", "region": "Beijing", "credit_score": "712", "id_card": "110101199001011234"},
)
CASES = (
    Case(id="K2", customer_id="C42", status=CaseStatus.OPEN, summary="roaming charge", opened_at=NOW - 2 * DAY,
         severity=3, still_needed="bill copy", next_step="refund review"),
    Case(id="K1", customer_id="C42", status=CaseStatus.OPEN, summary="premium SMS fraud",
         opened_at=NOW - 21 * DAY, severity=1, owner_agent="agent1002",
         still_needed="date of first charge", next_step="call back with refund decision"),
    Case(id="K0", customer_id="C42", status=CaseStatus.CLOSED, summary="old", opened_at=NOW - 90 * DAY),
)
CONTACTS = tuple(
    Contact(id=f"T{i}", kind=ContactKind.INBOUND, number="13800000001", started_at=NOW - i * DAY,
            customer_id="C42", outcome=Outcome.ANSWERED, notes=f"note {i}", disposition="follow_up",
            agents=("agent1002",), ivr_path=("hotline", "billing"))
    for i in range(1, 9)
)
PATH = (
    {"menu": "hotline", "input": "2", "label": "Billing"},
    {"menu": "account_pin", "input": "123456"},
    {"menu": "billing", "input": "1", "label": "Dispute a charge"},
    {"menu": "verify", "input": "9876", "sensitive": True},
)


def ctx(**kw: Any) -> PopContext:
    base: dict[str, Any] = dict(call_id="ctx-1", number="13800000001", contact_id="T0", customer=CUSTOMER,
                                routing_reason="repeat caller: back to agent who owns case K1", queue="vip",
                                ivr_path=PATH, recent_contacts=CONTACTS, open_cases=CASES)
    base.update(kw)
    return PopContext(**base)


@pytest.mark.parametrize(("role", "field", "expected"), [
    (Role.AGENT, "account_number", f"{MASK}5678"),
    (Role.SUPERVISOR, "account_number", "6222020212345678"),
    (Role.AGENT, "has_pin", True),
    (Role.SUPERVISOR, "has_pin", True),
    (Role.AGENT, "attributes", {"plan": "Global 199", "region": "Beijing"}),
    (Role.SUPERVISOR, "attributes", {"credit_score": "712", "id_card": "110101199001011234",
                                     "plan": "Global 199", "region": "Beijing"}),
    (Role.AGENT, "tier", "vip"),
    (Role.AGENT, "segment", "enterprise"),
    (Role.AGENT, "language", "zh"),
    (Role.AGENT, "account_manager", "Li Na"),
])
def test_customer_masking_by_role(role: Role, field: str, expected: Any) -> None:
    pop = build_pop(ctx(), role=role, now=NOW)
    assert pop["customer"][field] == expected


@pytest.mark.parametrize("role", list(Role))
def test_pin_hash_never_leaves_for_any_role(role: Role) -> None:
    text = json.dumps(build_pop(ctx(), role=role, now=NOW))
    assert "pin_hash" not in text
    assert "scrypt$secret" not in text


@pytest.mark.parametrize(("account", "masked"), [
    (None, None), ("", None), ("12", MASK), ("1234", MASK), ("12345", f"{MASK}2345"),
    ("6222020212345678", f"{MASK}5678"),
])
def test_mask_account(account: str | None, masked: str | None) -> None:
    assert mask_account(account) == masked


@pytest.mark.parametrize(("step", "shown"), [
    ({"menu": "hotline", "input": "2"}, "2"),
    ({"menu": "account_pin", "input": "123456"}, MASK),
    ({"menu": "verify", "input": "9876", "sensitive": True}, MASK),
    ({"menu": "x", "label": "Enter your card number", "input": "4111"}, MASK),
    ({"menu": "PASSWORD", "input": "1"}, MASK),
    ({"menu": "hotline", "input": ""}, ""),
    ({"menu": "hotline"}, ""),
])
def test_ivr_inputs_of_secret_steps_are_masked(step: dict[str, Any], shown: str) -> None:
    assert ivr_steps([step])[0]["input"] == shown


def test_pop_content() -> None:
    pop = build_pop(ctx(), role=Role.AGENT, now=NOW)
    assert pop["type"] == "pop"
    assert pop["phase"] == "ringing"
    assert pop["kind"] == "inbound"
    assert pop["number"] == "13800000001"
    assert pop["contact_id"] == "T0"
    assert pop["routing"] == {"reason": "repeat caller: back to agent who owns case K1", "queue": "vip"}
    assert [s["label"] or s["menu"] for s in pop["ivr_path"]] == ["Billing", "account_pin", "Dispute a charge",
                                                                  "verify"]
    # open cases only, most severe first; with still-needed and next step
    assert [c["id"] for c in pop["open_cases"]] == ["K1", "K2"]
    assert pop["open_cases"][0]["still_needed"] == "date of first charge"
    assert pop["open_cases"][0]["next_step"] == "call back with refund decision"
    assert pop["open_cases"][0]["age_days"] == 21
    # newest 5 contacts first, with notes and outcomes
    assert [h["id"] for h in pop["history"]] == ["T1", "T2", "T3", "T4", "T5"]
    assert pop["history"][0]["notes"] == "note 1"
    assert pop["history"][0]["outcome"] == "answered"
    assert pop["callback"] is None
    # caller-supplied text is carried verbatim (the page renders it as text)
    assert pop["customer"]["name"] == "Wang Wei <script>alert(1)</script>"
    json.dumps(pop, allow_nan=False)


@pytest.mark.parametrize(("status", "on_pop"), [
    (CaseStatus.OPEN, True),
    (CaseStatus.IN_PROGRESS, True),
    (CaseStatus.WAITING_CUSTOMER, True),
    (CaseStatus.WAITING_BACKOFFICE, True),
    (CaseStatus.RESOLVED, True),  # resolved but not confirmed: the notice call-back is about it
    (CaseStatus.CLOSED, False),
])
def test_every_case_not_closed_is_on_the_pop_with_its_status(status: CaseStatus, on_pop: bool) -> None:
    """Open on the pop = domain/cases.is_open (anything but closed), whatever the status."""
    case = Case(id="K9", customer_id="C42", status=status, summary="charge", opened_at=NOW - DAY, severity=2)
    pop = build_pop(ctx(open_cases=(case,)), role=Role.AGENT, now=NOW)
    assert [(c["id"], c["status"]) for c in pop["open_cases"]] == ([("K9", status.value)] if on_pop else [])


def test_current_contact_not_in_history() -> None:
    current = Contact(id="T0", kind=ContactKind.INBOUND, number="1", started_at=NOW)
    pop = build_pop(ctx(recent_contacts=(current, *CONTACTS)), role=Role.AGENT, now=NOW)
    assert "T0" not in [h["id"] for h in pop["history"]]


@pytest.mark.parametrize("phase", list(Phase))
def test_phases(phase: Phase) -> None:
    assert build_pop(ctx(phase=phase), role=Role.AGENT, now=NOW)["phase"] == phase.value
    update = phase_update("ctx-1", phase, now=NOW, contact_id="T0", detail="x")
    assert update == {"type": "pop_phase", "call_id": "ctx-1", "contact_id": "T0", "phase": phase.value,
                      "at": NOW, "detail": "x"}


def test_unknown_caller() -> None:
    pop = build_pop(ctx(customer=None, recent_contacts=(), open_cases=(), ivr_path=()), role=Role.AGENT, now=NOW)
    assert pop["customer"] is None
    assert pop["history"] == [] and pop["open_cases"] == [] and pop["ivr_path"] == []
    assert customer_id_of(pop) is None


def test_callback_context() -> None:
    cb = {"id": "CB7", "reason": "refund decision", "case_id": "K1", "attempt": 2, "context": "asked after 18:00",
          "secret": "dropped"}
    pop = build_pop(ctx(kind=ContactKind.CALLBACK, callback=cb), role=Role.AGENT, now=NOW)
    assert pop["kind"] == "callback"
    assert pop["callback"] == {"id": "CB7", "reason": "refund decision", "case_id": "K1", "attempt": 2,
                               "context": "asked after 18:00"}
    assert customer_id_of(pop) == "C42"


@pytest.mark.parametrize(("text_len", "limit_field"), [(10_000, "notes")])
def test_long_text_is_truncated(text_len: int, limit_field: str) -> None:
    long = Contact(id="TL", kind=ContactKind.INBOUND, number="1", started_at=NOW - 1, notes="x" * text_len)
    pop = build_pop(ctx(recent_contacts=(long,)), role=Role.AGENT, now=NOW)
    assert len(pop["history"][0][limit_field]) == 2000


@pytest.mark.parametrize(("path", "shown"), [
    ([{"kind": "collected", "node": "verify", "detail": "pin"}], MASK),  # the IVR's PIN entry
    ([{"kind": "collected", "node": "verify", "detail": "passcode"}], MASK),
    ([{"kind": "collected", "node": "verify", "detail": "card digits"}], MASK),
    ([{"kind": "collected", "node": "account", "detail": "80010001"}], "80010001"),
    ([{"kind": "key", "node": "pin_menu", "key": "1", "target": "x"}], MASK),  # the step's name says secret
    ([{"kind": "key", "node": "main", "key": "1", "target": "billing"}], "1"),
])
def test_one_masking_rule_from_recorded_path_to_pop(path: list[dict[str, Any]], shown: str) -> None:
    """The recorded IVR path → pop steps → what anyone sees: one list of secret words decides."""
    assert [s["input"] for s in ivr_steps(steps_from_path(path))] == [shown]
