"""domain/privacy.py: the access decision, grant durations and the audit's "why" as tables."""

from __future__ import annotations

import pytest

from ivrserver.domain import privacy
from ivrserver.domain.privacy import Decision

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("supervisor", "customer_id", "purpose", "has_grant", "expected"), [
    (True, "c1", "customer.read", False, Decision(True, "supervisor")),
    (True, None, "customer.list", False, Decision(True, "supervisor")),
    (True, "c1", "customer.delete", False, Decision(True, "supervisor")),
    (False, "c1", "customer.read", True, Decision(True, "handling this customer's call")),
    (False, "c1", "history.read", True, Decision(True, "handling this customer's call")),
    (False, "c1", "customer.read", False, Decision(False, "not handling this customer")),
    (False, None, "customer.create", True, Decision(False, "supervisors only")),  # no particular customer
    (False, None, "customer.list", True, Decision(False, "supervisors only")),
    (False, "c1", "customer.delete", True, Decision(False, "supervisors only")),  # never, even with a grant
    (False, "c1", "customer.list", True, Decision(False, "supervisors only")),
])
def test_decide(supervisor: bool, customer_id: str | None, purpose: str, has_grant: bool,
                expected: Decision) -> None:
    assert privacy.decide(supervisor=supervisor, customer_id=customer_id, purpose=purpose,
                          has_grant=has_grant) == expected


@pytest.mark.parametrize(("supervisor", "customer_id", "purpose", "needed"), [
    (True, "c1", "customer.read", False),
    (False, None, "customer.read", False),
    (False, "c1", "customer.delete", False),
    (False, "c1", "customer.read", True),
])
def test_grant_is_read_only_when_it_decides(supervisor: bool, customer_id: str | None, purpose: str,
                                            needed: bool) -> None:
    assert privacy.needs_grant_lookup(supervisor=supervisor, customer_id=customer_id, purpose=purpose) is needed
    if not needed:  # the answer must not depend on the grant then
        decisions = {privacy.decide(supervisor=supervisor, customer_id=customer_id, purpose=purpose, has_grant=g)
                     for g in (True, False)}
        assert len(decisions) == 1


@pytest.mark.parametrize(("phase", "until"), [
    ("ringing", NOW + 300),
    ("answered", NOW + 4 * 3600),
    ("transferred", NOW + 4 * 3600),
    ("ended", NOW + 900),
    ("queued", None),
    (None, None),
    (3, None),
    ("RINGING", None),
])
def test_grant_until(phase: object, until: float | None) -> None:
    assert privacy.grant_until(phase, NOW) == until


@pytest.mark.parametrize(("reason", "basis", "why"), [
    ("", "supervisor", "supervisor"),
    ("complaint 42", "not handling this customer", "complaint 42 (not handling this customer)"),
])
def test_audit_why(reason: str, basis: str, why: str) -> None:
    assert privacy.audit_why(reason, basis) == why


def test_granted_customers_leave_out_contact_grants() -> None:
    grants = ["c2", privacy.contact_grant("k1"), "c1", "contact:k2"]
    assert privacy.granted_customers(grants) == ["c1", "c2"]
    assert privacy.role(True) == "supervisor" and privacy.role(False) == "agent"
