"""Who may read or change a customer's record, and for how long a pop opens that door.

Pure: the caller passes whether the agent holds a live grant and the current time. The service
(`ivrserver.services.privacy`) reads the grants, audits every decision and owns the I/O.

- Supervisors may access any customer for any purpose.
- Agents may access a customer only while they hold a live access grant for them (a screen pop
  of that customer's call opened it, `GRANT_SECONDS` per phase of the pop), never for
  `SUPERVISOR_PURPOSES`, and never for an operation on no particular customer (listing).
- Every decision carries its basis: the audit log records it as the "why".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# How long an agent may read the customer's record after each pop phase (seconds).
GRANT_SECONDS: dict[str, float] = {"ringing": 300.0, "answered": 4 * 3600.0, "transferred": 4 * 3600.0,
                                   "ended": 900.0}
# Purposes agents never get, even for a customer they are handling.
SUPERVISOR_PURPOSES: frozenset[str] = frozenset({"customer.list", "customer.delete"})
# Grants for contact records (write-back after a call) are stored beside customer grants with this prefix.
CONTACT_GRANT_PREFIX = "contact:"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    basis: str  # why, in words an auditor reads


def decide(*, supervisor: bool, customer_id: str | None, purpose: str, has_grant: bool) -> Decision:
    """May this agent access `customer_id` (None: no particular customer) for `purpose`?
    `has_grant`: the agent holds a live grant for this customer (ignored for supervisors)."""
    if supervisor:
        return Decision(True, "supervisor")
    if customer_id is None or purpose in SUPERVISOR_PURPOSES:
        return Decision(False, "supervisors only")
    if has_grant:
        return Decision(True, "handling this customer's call")
    return Decision(False, "not handling this customer")


def needs_grant_lookup(*, supervisor: bool, customer_id: str | None, purpose: str) -> bool:
    """True when `decide` depends on `has_grant` (so the service reads the grant only then)."""
    return not supervisor and customer_id is not None and purpose not in SUPERVISOR_PURPOSES


def audit_why(reason: str, basis: str) -> str:
    """The audit entry's "why": the caller's stated reason, if any, with the basis of the decision."""
    return f"{reason} ({basis})" if reason else basis


def role(supervisor: bool) -> str:
    return "supervisor" if supervisor else "agent"


def grant_until(phase: object, now: float) -> float | None:
    """Until when a pop in `phase` lets its agent read the customer and write back the contact;
    None for events that grant nothing (not a pop phase)."""
    if isinstance(phase, str) and phase in GRANT_SECONDS:
        return now + GRANT_SECONDS[phase]
    return None


def contact_grant(contact_id: str) -> str:
    """The grant name for write-back access to one contact record."""
    return CONTACT_GRANT_PREFIX + contact_id


def granted_customers(grants: Iterable[str]) -> list[str]:
    """The customer ids among an agent's live grants (contact grants left out), sorted."""
    return sorted(g for g in grants if not g.startswith(CONTACT_GRANT_PREFIX))
