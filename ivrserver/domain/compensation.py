"""Compensation within authority: who may grant how much, on which case, per day.

Pure: stdlib and domain/ only, no clock reads. The authority table (cases.yaml `compensation`)
gives each role (agent, senior, supervisor) a maximum per case by the case's severity and a
maximum per day for one person. An agent's grant within both is granted at once; above either it
becomes a request a supervisor approves (within the supervisor's own authority) or refuses. The
page cannot change that: `decide` is the only judge, on the server.

Amounts are integer cents (minor units) of one currency, the policy's.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ROLES = ("agent", "senior", "supervisor")
CURRENCY = re.compile(r"^[A-Z]{3}$")
KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_AMOUNT = 10**12  # cents
MAX_REASON = 500


class CompensationState(enum.StrEnum):
    GRANTED = "granted"  # within the granter's authority
    REQUESTED = "requested"  # above it: waits for a supervisor
    APPROVED = "approved"
    REFUSED = "refused"


PAID = frozenset({CompensationState.GRANTED, CompensationState.APPROVED})


@dataclass(frozen=True)
class Authority:
    per_case: Mapping[int, int]  # severity → most cents on one case (all grants on it together)
    per_day: int | None = None  # most cents one person grants (or approves) in a day; None: no limit


@dataclass(frozen=True)
class CompensationPolicy:
    currency: str = "CNY"
    roles: Mapping[str, Authority] = field(default_factory=dict)
    seniors: frozenset[str] = frozenset()  # agent ids with the senior role
    timezone: str = "UTC"  # where a "day" starts and ends


@dataclass(frozen=True)
class Compensation:
    id: str
    case_id: str
    customer_id: str
    amount_cents: int
    currency: str
    reason: str
    granted_by: str  # the actor who granted or asked ("agent:<id>", "supervisor:<id>")
    state: CompensationState
    requested_at: float
    approved_by: str | None = None  # the supervisor who approved or refused
    decided_at: float | None = None
    decision_why: str = ""


@dataclass(frozen=True)
class Verdict:
    granted: bool
    reason: str  # why not granted ("" when granted)
    case_limit: int  # cents the role may put on this case (all grants together)
    day_left: int | None  # cents left today for this person (None: no daily limit)


class CompensationError(ValueError):
    def __init__(self, field: str, message: str, *, conflict: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.conflict = conflict


def role_of(agent_id: str, supervisor: bool, policy: CompensationPolicy) -> str:
    if supervisor:
        return "supervisor"
    return "senior" if agent_id in policy.seniors else "agent"


def day_of(at: float, policy: CompensationPolicy) -> str:
    """The day (YYYY-MM-DD in the policy's time zone) a grant at `at` counts towards."""
    tz = zoneinfo.ZoneInfo(policy.timezone)
    return datetime.datetime.fromtimestamp(at, tz).date().isoformat()


def decide(policy: CompensationPolicy, role: str, severity: int, *, amount: int, case_total: int,
           day_total: int) -> Verdict:
    """Whether `role` may grant `amount` more on a case of `severity` that already has `case_total`
    granted, having granted `day_total` today. A role or severity missing from the table: 0."""
    authority = policy.roles.get(role)
    case_limit = 0 if authority is None else int(authority.per_case.get(severity, 0))
    day_limit = None if authority is None else authority.per_day
    if authority is None:
        day_limit = 0
    day_left = None if day_limit is None else max(0, day_limit - day_total)
    if case_total + amount > case_limit:
        return Verdict(False, f"above the {role} authority for a severity {severity} case "
                              f"({case_limit} cents per case, {case_total} already granted)", case_limit, day_left)
    if day_left is not None and amount > day_left:
        return Verdict(False, f"above the {role} authority per day ({day_limit} cents, {day_total} already "
                              "granted today)", case_limit, day_left)
    return Verdict(True, "", case_limit, day_left)


def compensation_id(case_id: str, actor: str, key: str) -> str:
    """A stable id for a request with a client key (the same request twice → one compensation)."""
    return "cp-" + hashlib.sha256(f"{case_id}\0{actor}\0{key}".encode()).hexdigest()[:24]


def _printable(text: str) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def validate_request(data: Any, policy: CompensationPolicy) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """A grant request body {amount_cents, currency, reason, key?} → fields, or [(field, message)]."""
    if not isinstance(data, Mapping):
        return None, [("body", "must be a JSON object")]
    errors: list[tuple[str, str]] = []
    allowed = ("amount_cents", "currency", "reason", "key")
    for name in data:
        if name not in allowed:
            errors.append((str(name)[:64], f"unknown field; allowed: {', '.join(allowed)}"))
    amount = data.get("amount_cents")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
        errors.append(("amount_cents", f"must be a whole number of cents 1-{MAX_AMOUNT}"))
    currency = data.get("currency")
    if not isinstance(currency, str) or not CURRENCY.match(currency):
        errors.append(("currency", "must be an ISO 4217 code (3 capital letters)"))
    elif currency != policy.currency:
        errors.append(("currency", f"compensation is granted in {policy.currency}"))
    reason = data.get("reason")
    text = _printable(reason) if isinstance(reason, str) else ""
    if not text or len(text) > MAX_REASON:
        errors.append(("reason", f"required text, at most {MAX_REASON} characters"))
    key = data.get("key")
    if key is not None and (not isinstance(key, str) or not KEY.match(key)):
        errors.append(("key", "1-64 letters, digits, _ . : -"))
    if errors:
        return None, errors
    return {"amount_cents": amount, "currency": currency, "reason": text, "key": key}, []


def decision_why(data: Any) -> tuple[str | None, list[tuple[str, str]]]:
    """An approve/refuse body {why?}: the why as printable text (refusing requires one)."""
    if data is None:
        return "", []
    if not isinstance(data, Mapping):
        return None, [("body", "must be a JSON object")]
    unknown = [k for k in data if k != "why"]
    if unknown:
        return None, [(str(unknown[0])[:64], "unknown field; allowed: why")]
    why = data.get("why", "")
    if not isinstance(why, str) or len(why) > MAX_REASON:
        return None, [("why", f"text of at most {MAX_REASON} characters")]
    return _printable(why), []


def to_dict(c: Compensation) -> dict[str, Any]:
    return {"id": c.id, "case_id": c.case_id, "customer_id": c.customer_id, "amount_cents": c.amount_cents,
            "currency": c.currency, "reason": c.reason, "granted_by": c.granted_by, "state": c.state.value,
            "requested_at": c.requested_at, "approved_by": c.approved_by, "decided_at": c.decided_at,
            "decision_why": c.decision_why}


def from_dict(d: Mapping[str, Any]) -> Compensation:
    decided = d.get("decided_at")
    return Compensation(
        id=str(d["id"]), case_id=str(d["case_id"]), customer_id=str(d["customer_id"]),
        amount_cents=int(d["amount_cents"]), currency=str(d["currency"]), reason=str(d.get("reason", "")),
        granted_by=str(d["granted_by"]), state=CompensationState(d["state"]), requested_at=float(d["requested_at"]),
        approved_by=None if d.get("approved_by") is None else str(d["approved_by"]),
        decided_at=None if decided is None else float(decided), decision_why=str(d.get("decision_why") or ""))
