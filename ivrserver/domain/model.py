"""Core domain records shared by menus, routing, screen-pop and callbacks.

Pure: stdlib only, frozen dataclasses, no clock reads (times are epoch seconds passed in).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Tier(enum.StrEnum):
    VIP = "vip"
    GOLD = "gold"
    STANDARD = "standard"


class Segment(enum.StrEnum):
    GOVERNMENT = "government"
    ENTERPRISE = "enterprise"
    FAMILY = "family"
    INDIVIDUAL = "individual"


@dataclass(frozen=True)
class ContactPreferences:
    """When a customer may be called: local hours [start, end) in their IANA time zone."""

    timezone: str = "UTC"
    allowed_from: str = "09:00"
    allowed_until: str = "20:00"
    do_not_call: bool = False
    holidays_ok: bool = False  # callbacks may be placed on public holidays (callbacks.calendar_country)


@dataclass(frozen=True)
class Customer:
    id: str
    name: str
    phones: tuple[str, ...]
    tier: Tier = Tier.STANDARD
    segment: Segment = Segment.INDIVIDUAL
    language: str = "en"
    account_manager: str | None = None
    account_number: str | None = None
    pin_hash: str | None = None
    preferences: ContactPreferences = field(default_factory=ContactPreferences)
    attributes: Mapping[str, str] = field(default_factory=dict)


class AgentState(enum.StrEnum):
    LOGGED_OUT = "logged_out"
    READY = "ready"
    PAUSED = "paused"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"


@dataclass(frozen=True)
class Agent:
    id: str
    name: str
    endpoint: str  # dialable interface, e.g. "PJSIP/agent1001"
    tiers: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    supervisor: bool = False


@dataclass(frozen=True)
class AgentStatus:
    agent_id: str
    state: AgentState
    since: float


class CaseStatus(enum.StrEnum):
    """A case's lifecycle (domain/cases.py has the allowed moves). `open` and `closed` are the
    values of cases from before the lifecycle; a case is open (pops, the open-cases index) unless
    closed. `closed` is "confirmed": the customer or the bill confirmed the result."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    WAITING_CUSTOMER = "waiting_customer"
    WAITING_BACKOFFICE = "waiting_backoffice"
    RESOLVED = "resolved"
    CLOSED = "closed"


@dataclass(frozen=True)
class ChecklistItem:
    """One thing a case still needs, from the customer or a back office, ticked off when done."""

    id: str
    text: str
    source: str = "customer"  # "customer" | "backoffice" (the wire form calls it `from`)
    done: bool = False
    done_by: str | None = None
    done_at: float | None = None


@dataclass(frozen=True)
class Case:
    id: str
    customer_id: str
    status: CaseStatus
    summary: str
    opened_at: float
    owner_agent: str | None = None
    severity: int = 3  # 1 = most severe
    still_needed: str = ""
    next_step: str = ""
    # the lifecycle (issue 18); cases from before it load with these defaults
    checklist: tuple[ChecklistItem, ...] = ()
    due_at: float | None = None  # by severity (cases.yaml); overdue = not resolved/closed past it
    updated_at: float | None = None  # the last change
    handed_to: tuple[str, ...] = ()  # back offices the case was handed to (they may read it, post results)
    compensated_cents: int = 0  # compensation granted or approved on the case so far
    currency: str = ""  # of compensated_cents ("" until the first grant)


class ContactKind(enum.StrEnum):
    INBOUND = "inbound"
    CALLBACK = "callback"
    NOTIFICATION = "notification"


class Outcome(enum.StrEnum):
    SELF_SERVED = "self_served"
    ANSWERED = "answered"
    ABANDONED = "abandoned"
    CALLBACK_REQUESTED = "callback_requested"  # the caller asked to be called back in the IVR, which hung up
    FAILED = "failed"
    IN_PROGRESS = "in_progress"


@dataclass(frozen=True)
class Contact:
    """One call as the contact history keeps it."""

    id: str
    kind: ContactKind
    number: str
    started_at: float
    customer_id: str | None = None
    ended_at: float | None = None
    ivr_path: tuple[str, ...] = ()
    routing_reason: str = ""
    queue: str | None = None
    wait_seconds: float | None = None
    agents: tuple[str, ...] = ()
    outcome: Outcome = Outcome.IN_PROGRESS
    talk_seconds: float | None = None  # from the agent connecting to the end of the call
    disposition: str = ""
    notes: str = ""


@dataclass(frozen=True)
class CallerSnapshot:
    """What one pipelined Redis round trip tells about a calling number at call entry."""

    number: str
    customer: Customer | None = None
    open_cases: tuple[Case, ...] = ()
    last_contact: Contact | None = None
    anonymous: bool = False


@dataclass(frozen=True)
class AuditEntry:
    """One access decision as the audit log keeps it (Redis stream, then PostgreSQL)."""

    id: str  # the Redis stream id it was appended under: unique, ordered
    at: float
    who: str
    role: str
    what: str
    target: str
    why: str
    allowed: bool
    source: str = ""
