"""The screen pop: what an agent's desktop shows about a call, built from the call context.

Pure: stdlib only, no clock reads (`now` is passed in). The result is a JSON-ready dict; every
string in it may be caller- or customer-supplied and must be rendered as text by the page.

Masking by role (`mask_customer`):

| field            | agent                         | supervisor              |
|------------------|-------------------------------|-------------------------|
| pin_hash         | never (only `has_pin`)        | never (only `has_pin`)  |
| account_number   | last 4 digits (`••••1234`)    | full                    |
| attributes       | whitelisted keys only         | all                     |
| IVR input of a   | `••••` (sensitive step)       | `••••` (sensitive step) |
| PIN/secret step  |                               |                         |
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ivrserver.domain import cases as case_rules
from ivrserver.domain.model import Case, Contact, ContactKind, Customer

MASK = "••••"
# Attribute keys an agent may see; everything else on a customer stays with supervisors.
AGENT_ATTRIBUTES: frozenset[str] = frozenset(
    {"plan", "region", "preferred_channel", "device", "contract_end", "company", "notes_hint"}
)
# IVR steps whose input is a secret (PIN, password, card digits): never shown to anyone. One list
# for the step's names and for what the IVR collected ("pass": password, passcode, passphrase).
SENSITIVE_STEP_WORDS: tuple[str, ...] = ("pin", "pass", "secret", "cvv", "card")
MAX_HISTORY = 5
MAX_TEXT = 2000


class Role(enum.StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"


class Phase(enum.StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    TRANSFERRED = "transferred"
    ENDED = "ended"


@dataclass(frozen=True)
class PopContext:
    """Everything the pop is built from. `ivr_path` items are plain dicts from the IVR run:
    {"menu": ..., "input": ..., "label"?: ..., "sensitive"?: bool}. `callback` is the callback
    record's context when this call is a callback: {"id", "reason", "requested_at", "case_id",
    "context", "attempt", "preferred_agent"} (all optional)."""

    call_id: str
    number: str
    phase: Phase = Phase.RINGING
    kind: ContactKind = ContactKind.INBOUND
    contact_id: str | None = None
    customer: Customer | None = None
    routing_reason: str = ""
    queue: str | None = None
    ivr_path: Sequence[Mapping[str, Any]] = ()
    recent_contacts: Sequence[Contact] = ()
    open_cases: Sequence[Case] = ()
    callback: Mapping[str, Any] | None = None
    transferred_from: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    # active incidents relevant to the caller: {"id","service_name","area_name","service_names",
    # "area_names","state","cause","expected_fix_at","opened_at"} (services/incidents.pop_entry)
    incidents: Sequence[Mapping[str, Any]] = ()


def mask_account(account_number: str | None) -> str | None:
    """Keep only the last 4 characters: '6222020212345678' -> '••••5678'."""
    if not account_number:
        return None
    if len(account_number) <= 4:
        return MASK
    return MASK + account_number[-4:]


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    return ("" if value is None else str(value))[:limit]


def mask_customer(customer: Customer, role: Role,
                  allowed_attributes: frozenset[str] = AGENT_ATTRIBUTES) -> dict[str, Any]:
    supervisor = role is Role.SUPERVISOR
    attributes = {
        _text(k, 64): _text(v, 500) for k, v in customer.attributes.items()
        if supervisor or k in allowed_attributes
    }
    prefs = customer.preferences
    return {
        "id": customer.id,
        "name": _text(customer.name, 200),
        "tier": str(customer.tier),
        "segment": str(customer.segment),
        "language": customer.language,
        "account_manager": customer.account_manager,
        "account_number": customer.account_number if supervisor else mask_account(customer.account_number),
        "has_pin": bool(customer.pin_hash),
        "attributes": dict(sorted(attributes.items())),
        "preferences": {
            "timezone": prefs.timezone,
            "allowed_from": prefs.allowed_from,
            "allowed_until": prefs.allowed_until,
            "do_not_call": prefs.do_not_call,
        },
    }


def is_sensitive_text(text: str) -> bool:
    """Whether a step's name or collected detail says its input is a secret (SENSITIVE_STEP_WORDS)."""
    lowered = text.lower()
    return any(word in lowered for word in SENSITIVE_STEP_WORDS)


def _is_sensitive(step: Mapping[str, Any]) -> bool:
    if step.get("sensitive") is True:
        return True
    return is_sensitive_text(f"{step.get('menu', '')} {step.get('node', '')} {step.get('label', '')}")


def steps_from_path(path: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The recorded IVR path (menu_engine PathEvents as dicts) as the pop's steps; a collected
    input whose detail names a secret is marked sensitive (masked by `ivr_steps`)."""
    steps: list[dict[str, Any]] = []
    for p in path:
        kind, node = p.get("kind"), p.get("node", "")
        if kind == "key":
            steps.append({"menu": node, "input": p.get("key", ""), "label": p.get("target", "")})
        elif kind == "collected":
            detail = str(p.get("detail", ""))
            steps.append({"menu": node, "input": detail, "label": "entered", "sensitive": is_sensitive_text(detail)})
        elif kind in ("invalid", "timeout", "identified", "lookup", "language"):
            steps.append({"menu": node, "label": f"{kind} {p.get('detail', '')}".strip(), "input": p.get("key", "")})
        elif kind == "exit":
            steps.append({"menu": node, "label": f"exit: {p.get('detail', '')} {p.get('target', '')}".strip()})
    return steps


def ivr_steps(path: Iterable[Mapping[str, Any]], limit: int = 50) -> list[dict[str, str]]:
    """The caller's IVR path as shown: menu, label, input (secret inputs masked for every role)."""
    steps: list[dict[str, str]] = []
    for step in path:
        if len(steps) >= limit:
            break
        raw_input = _text(step.get("input"), 64)
        steps.append({
            "menu": _text(step.get("menu"), 64),
            "label": _text(step.get("label"), 200),
            "input": MASK if raw_input and _is_sensitive(step) else raw_input,
        })
    return steps


def contact_entry(contact: Contact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "kind": str(contact.kind),
        "started_at": contact.started_at,
        "ended_at": contact.ended_at,
        "outcome": str(contact.outcome),
        "disposition": _text(contact.disposition, 200),
        "notes": _text(contact.notes),
        "agents": list(contact.agents),
        "queue": contact.queue,
        "routing_reason": _text(contact.routing_reason, 300),
        # A past call's path is summarised by menu names only: its inputs are not needed now.
        "ivr_path": [_text(p, 64) for p in contact.ivr_path[:20]],
    }


def case_entry(case: Case, now: float) -> dict[str, Any]:
    """A case on the pop, with its lifecycle: status, due time and overdue, what is still needed
    (open checklist items), back offices it waits on, compensation so far."""
    return {
        "id": case.id,
        "summary": _text(case.summary, 500),
        "status": str(case.status),
        "severity": case.severity,
        "opened_at": case.opened_at,
        "age_days": max(0, int((now - case.opened_at) // 86400)),
        "owner_agent": case.owner_agent,
        "still_needed": _text(case.still_needed, 500),
        "next_step": _text(case.next_step, 500),
        "due_at": case.due_at,
        "overdue": case_rules.is_overdue(case, now),
        "open_items": [{"id": i.id, "text": _text(i.text, 300), "from": i.source}
                       for i in case_rules.open_items(case)[:10]],
        "handed_to": [_text(b, 64) for b in case.handed_to[:5]],
        "compensated_cents": case.compensated_cents,
        "currency": case.currency,
    }


def callback_entry(callback: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("id", "reason", "requested_at", "case_id", "context", "attempt", "preferred_agent",
            "earliest", "latest")
    return {k: (callback[k] if isinstance(callback[k], (int, float)) and not isinstance(callback[k], bool)
                else _text(callback[k], 1000))
            for k in keep if k in callback and callback[k] is not None}


def build_pop(ctx: PopContext, *, role: Role, now: float, max_history: int = MAX_HISTORY,
              allowed_attributes: frozenset[str] = AGENT_ATTRIBUTES) -> dict[str, Any]:
    """The full pop card for one agent (role decides the masking). Newest contacts first;
    open cases most severe first, then oldest first."""
    contacts = sorted(ctx.recent_contacts, key=lambda c: c.started_at, reverse=True)
    contacts = [c for c in contacts if c.id != ctx.contact_id][:max_history]
    cases = sorted((c for c in ctx.open_cases if case_rules.is_open(c)), key=lambda c: (c.severity, c.opened_at))
    return {
        "type": "pop",
        "phase": str(ctx.phase),
        "call_id": ctx.call_id,
        "contact_id": ctx.contact_id,
        "kind": str(ctx.kind),
        "number": _text(ctx.number, 64),
        "at": now,
        "customer": None if ctx.customer is None else mask_customer(ctx.customer, role, allowed_attributes),
        "routing": {"reason": _text(ctx.routing_reason, 300), "queue": ctx.queue},
        "ivr_path": ivr_steps(ctx.ivr_path),
        "history": [contact_entry(c) for c in contacts],
        "open_cases": [case_entry(c, now) for c in cases],
        "callback": None if ctx.callback is None else callback_entry(ctx.callback),
        "transferred_from": ctx.transferred_from,
        "extra": {_text(k, 64): _text(v, 300) for k, v in ctx.extra.items()},
        "incidents": [incident_entry(i) for i in list(ctx.incidents)[:5]],
    }


def _epoch(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _names(value: Any) -> dict[str, str]:
    """Names per language ({"en": …, "zh": …}): two-letter language keys, texts bounded."""
    if not isinstance(value, Mapping):
        return {}
    return {k: _text(v, 80) for k, v in list(value.items())[:4] if isinstance(k, str) and len(k) == 2 and k.isalpha()}


def incident_entry(incident: Mapping[str, Any]) -> dict[str, Any]:
    """One incident on the pop: text fields bounded, times as numbers or None; `service` / `area`
    in English, `service_names` / `area_names` per language (the agent's page shows its own)."""
    return {"id": _text(incident.get("id", ""), 120), "service": _text(incident.get("service_name", ""), 80),
            "area": _text(incident.get("area_name", ""), 80),
            "service_names": _names(incident.get("service_names")), "area_names": _names(incident.get("area_names")),
            "state": _text(incident.get("state", ""), 20),
            "cause": _text(incident.get("cause", ""), 300), "expected_fix_at": _epoch(incident.get("expected_fix_at")),
            "opened_at": _epoch(incident.get("opened_at"))}


def phase_update(call_id: str, phase: Phase, *, now: float, contact_id: str | None = None,
                 detail: str = "") -> dict[str, Any]:
    """A small update for a pop already on screen (answered, transferred, ended)."""
    return {"type": "pop_phase", "call_id": call_id, "contact_id": contact_id, "phase": str(phase),
            "at": now, "detail": _text(detail, 300)}


def customer_id_of(event: Mapping[str, Any]) -> str | None:
    """The customer a pop event is about (for access grants), or None."""
    customer = event.get("customer")
    if isinstance(customer, Mapping):
        cid = customer.get("id")
        return cid if isinstance(cid, str) and cid else None
    return None
