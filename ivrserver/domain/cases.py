"""A case's lifecycle: states, allowed moves, the checklist of what is still needed, due times by
severity, hand-offs to back offices and their results.

Pure: stdlib and domain/ only, no clock reads (every function takes `now`). Each function takes a
case and returns a `Step` (the case after the change, the kind of change, why, detail) or raises
`CaseRuleError`; the store writes the step and its `CaseChange` in one Redis transaction.

States (`CaseStatus`)::

    open ──► in_progress ◄──► waiting_customer / waiting_backoffice
      │           │                    │
      └───────────┴──────► resolved ───┴──► closed ("confirmed")
                              │               │
                              └── reopen ─────┴──► in_progress   (event kind "reopened")

A case may be closed from any state (the old open → closed stays valid); `why` is required to
reopen, to wait (on the customer, on a back office) and to resolve.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ivrserver.domain.compensation import ROLES, Authority, CompensationPolicy
from ivrserver.domain.model import Case, CaseStatus, ChecklistItem

S = CaseStatus

TRANSITIONS: Mapping[CaseStatus, frozenset[CaseStatus]] = {
    S.OPEN: frozenset({S.IN_PROGRESS, S.WAITING_CUSTOMER, S.WAITING_BACKOFFICE, S.RESOLVED, S.CLOSED}),
    S.IN_PROGRESS: frozenset({S.WAITING_CUSTOMER, S.WAITING_BACKOFFICE, S.RESOLVED, S.CLOSED}),
    S.WAITING_CUSTOMER: frozenset({S.IN_PROGRESS, S.WAITING_BACKOFFICE, S.RESOLVED, S.CLOSED}),
    S.WAITING_BACKOFFICE: frozenset({S.IN_PROGRESS, S.WAITING_CUSTOMER, S.RESOLVED, S.CLOSED}),
    S.RESOLVED: frozenset({S.IN_PROGRESS, S.CLOSED}),
    S.CLOSED: frozenset({S.IN_PROGRESS}),
}
# moves into these states need a why (so does every reopen)
WHY_REQUIRED = frozenset({S.WAITING_CUSTOMER, S.WAITING_BACKOFFICE, S.RESOLVED})
# not done yet: these can be overdue
ACTIVE = frozenset({S.OPEN, S.IN_PROGRESS, S.WAITING_CUSTOMER, S.WAITING_BACKOFFICE})
DONE = frozenset({S.RESOLVED, S.CLOSED})

# the kinds of change (CaseChange.kind)
KINDS = ("opened", "moved", "resolved", "reopened", "closed", "checklist", "action_requested",
         "compensation_granted", "compensation_requested", "compensation_approved", "compensation_refused",
         "notice", "backoffice_result", "updated")

SOURCES = ("customer", "backoffice")
MAX_CHECKLIST = 50
MAX_ITEM_TEXT = 300
MAX_WHY = 500
MAX_RESULT = 1000
MAX_PARAMS = 20
MAX_PARAM_TEXT = 200
ITEM_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HOUR = 3600.0


class CaseRuleError(ValueError):
    """A change the lifecycle does not allow: `field` is what the caller got wrong."""

    def __init__(self, field: str, message: str, *, conflict: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.conflict = conflict  # the request was well-formed but the case's state refuses it (409)


@dataclass(frozen=True)
class ActionDef:
    """An agent action that hands a case to a back office (cases.yaml `actions`)."""

    name: str
    description: str
    backoffice: str  # the back-office token name that receives the case


@dataclass(frozen=True)
class CasePolicy:
    """cases.yaml, validated (files/case_policy.py): due hours by severity, the actions."""

    due_hours: Mapping[int, float] = field(default_factory=lambda: {1: 4.0, 2: 24.0, 3: 72.0, 4: 168.0, 5: 336.0})
    actions: Mapping[str, ActionDef] = field(default_factory=dict)
    compensation: CompensationPolicy = field(default_factory=CompensationPolicy)


@dataclass(frozen=True)
class Step:
    """One change decided: the case after it, what it was, why, and its detail (for events)."""

    case: Case
    kind: str
    why: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CaseChange:
    """A change as the case-changes stream delivers it (services/case_followup.py): `event_id` is
    the stream id of the change, unique and stable (handlers are idempotent by it)."""

    event_id: str
    case: Case
    previous: CaseStatus | None
    kind: str
    actor: str
    why: str
    at: float
    detail: Mapping[str, Any]


# --- reading the state ---------------------------------------------------------------------------

def is_open(case: Case) -> bool:
    """Open for pops and the open-cases index: anything but closed."""
    return case.status is not S.CLOSED


def is_overdue(case: Case, now: float) -> bool:
    return case.status in ACTIVE and case.due_at is not None and now > case.due_at


def open_items(case: Case) -> list[ChecklistItem]:
    return [i for i in case.checklist if not i.done]


def due_at(start: float, severity: int, policy: CasePolicy) -> float | None:
    hours = policy.due_hours.get(severity)
    return None if hours is None else round(start + hours * HOUR, 6)


def move_kind(old: CaseStatus, new: CaseStatus) -> str:
    """The event kind of a status change."""
    if new is S.CLOSED:
        return "closed"
    if new is S.RESOLVED:
        return "resolved"
    if old in DONE:
        return "reopened"
    return "moved"


# --- changes -------------------------------------------------------------------------------------

def _why(why: str) -> str:
    text = " ".join(why.split()) if isinstance(why, str) else ""
    return text[:MAX_WHY]


def opened(case: Case, policy: CasePolicy, now: float) -> Case:
    """A new case with its due time and last change set."""
    return dataclasses.replace(case, due_at=due_at(case.opened_at, case.severity, policy), updated_at=now)


def requested_status(current: CaseStatus, value: str) -> CaseStatus:
    """The status a request asks for. The old value "open" means reopen (→ in_progress) for a
    resolved or closed case and "no change" otherwise (clients from before the lifecycle)."""
    if value == S.OPEN.value:
        return S.IN_PROGRESS if current in DONE else current
    try:
        return S(value)
    except ValueError:
        raise CaseRuleError("status", f"must be one of {', '.join(s.value for s in S)}") from None


def move(case: Case, to: CaseStatus, *, why: str, now: float, policy: CasePolicy) -> Step:
    """Move `case` to status `to`; raises CaseRuleError for a move the lifecycle does not allow
    or a missing why. A reopened case gets a fresh due time (from now)."""
    why = _why(why)
    if to is case.status:
        raise CaseRuleError("status", f"the case is already {to.value}", conflict=True)
    if to not in TRANSITIONS[case.status]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[case.status]))
        raise CaseRuleError("status", f"cannot go from {case.status.value} to {to.value} (allowed: {allowed})",
                            conflict=True)
    kind = move_kind(case.status, to)
    if (to in WHY_REQUIRED or kind == "reopened") and not why:
        raise CaseRuleError("why", f"required to {'reopen' if kind == 'reopened' else 'move to ' + to.value}")
    changes: dict[str, Any] = {"status": to, "updated_at": now}
    if kind == "reopened":
        changes["due_at"] = due_at(now, case.severity, policy)
    return Step(dataclasses.replace(case, **changes), kind, why, {"from": case.status.value, "to": to.value})


EDITABLE = ("summary", "still_needed", "next_step", "owner_agent", "severity")


def edit(case: Case, fields: Mapping[str, Any], *, policy: CasePolicy, now: float) -> Case:
    """Validated field changes (summary, still_needed, next_step, owner_agent, severity); a new
    severity recomputes the due time from the opening."""
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise CaseRuleError(sorted(unknown)[0], "cannot be changed here")
    updated = dataclasses.replace(case, **fields)
    if updated.severity != case.severity:
        updated = dataclasses.replace(updated, due_at=due_at(case.opened_at, updated.severity, policy))
    return dataclasses.replace(updated, updated_at=now) if updated != case else case


def update(case: Case, fields: Mapping[str, Any], status: str | None, *, why: str, now: float,
           policy: CasePolicy) -> Step | None:
    """A PUT: field edits and an optional status (see requested_status); None if nothing changes."""
    edited = edit(case, fields, policy=policy, now=now)
    target = requested_status(case.status, status) if status is not None else case.status
    if target is not case.status:
        step = move(edited, target, why=why, now=now, policy=policy)
        return Step(step.case, step.kind, step.why, {**step.detail, **_changed(case, edited)})
    if edited == case:
        return None
    return Step(edited, "updated", _why(why), _changed(case, edited))


def _changed(old: Case, new: Case) -> dict[str, Any]:
    return {name: getattr(new, name) for name in EDITABLE if getattr(old, name) != getattr(new, name)}


def _item_id(existing: Iterable[ChecklistItem]) -> str:
    taken = {i.id for i in existing}
    n = len(taken) + 1
    while str(n) in taken:
        n += 1
    return str(n)


def add_items(case: Case, items: Sequence[tuple[str, str]], *, now: float) -> tuple[Case, list[ChecklistItem]]:
    """Append checklist items (text, source); ids are "1", "2", … in the case."""
    checklist = list(case.checklist)
    added = []
    for text, source in items:
        if source not in SOURCES:
            raise CaseRuleError("checklist.from", f"must be one of {', '.join(SOURCES)}")
        item = ChecklistItem(id=_item_id(checklist), text=text, source=source)
        checklist.append(item)
        added.append(item)
    if len(checklist) > MAX_CHECKLIST:
        raise CaseRuleError("checklist", f"a case holds at most {MAX_CHECKLIST} items", conflict=True)
    return dataclasses.replace(case, checklist=tuple(checklist), updated_at=now), added


def new_checklist(items: Sequence[tuple[str, str]]) -> tuple[ChecklistItem, ...]:
    """The checklist of a new case from [(text, source)]."""
    if len(items) > MAX_CHECKLIST:
        raise CaseRuleError("checklist", f"a case holds at most {MAX_CHECKLIST} items")
    for _, source in items:
        if source not in SOURCES:
            raise CaseRuleError("checklist.from", f"must be one of {', '.join(SOURCES)}")
    return tuple(ChecklistItem(id=str(n), text=text, source=source) for n, (text, source) in enumerate(items, 1))


def tick(case: Case, ids: Iterable[str], *, by: str, now: float, done: bool = True) -> tuple[Case, list[str]]:
    """Mark items done (or not done again) by `by`; unknown ids raise. Returns the ids changed."""
    wanted = list(dict.fromkeys(ids))
    known = {i.id for i in case.checklist}
    missing = [i for i in wanted if i not in known]
    if missing:
        raise CaseRuleError("checklist", f"no item {missing[0]!r} on this case")
    changed: list[str] = []
    items = []
    for item in case.checklist:
        if item.id in wanted and item.done != done:
            item = dataclasses.replace(item, done=done, done_by=by if done else None, done_at=now if done else None)
            changed.append(item.id)
        items.append(item)
    return dataclasses.replace(case, checklist=tuple(items), updated_at=now), changed


def checklist_step(case: Case, *, add: Sequence[tuple[str, str]], done: Sequence[str], undone: Sequence[str],
                   by: str, why: str, now: float) -> Step | None:
    """Add items and tick some off (or back on): one `checklist` change, None if nothing changes."""
    if case.status is S.CLOSED:
        raise CaseRuleError("status", "the case is closed", conflict=True)
    updated, added = add_items(case, add, now=now) if add else (case, [])
    updated, ticked = tick(updated, done, by=by, now=now) if done else (updated, [])
    updated, unticked = tick(updated, undone, by=by, now=now, done=False) if undone else (updated, [])
    if not (added or ticked or unticked):
        return None
    detail = {"added": [checklist_item_to_dict(i) for i in added], "done": ticked, "undone": unticked}
    return Step(updated, "checklist", _why(why), detail)


def hand_off(case: Case, action: str, params: Mapping[str, Any], *, to: str | None, why: str, now: float,
             policy: CasePolicy) -> Step:
    """An agent asks a back office to act (cases.yaml `actions`): the case waits on that back office,
    which may read it and post results from now on; a checklist item from the back office records
    what is awaited."""
    definition = policy.actions.get(action)
    if definition is None:
        known = ", ".join(sorted(policy.actions)) or "none configured"
        raise CaseRuleError("action", f"unknown action (allowed: {known})")
    if to is not None and to != definition.backoffice:
        raise CaseRuleError("to", f"action {action} goes to {definition.backoffice}, not {to}")
    if case.status in DONE:
        raise CaseRuleError("status", f"the case is {case.status.value}: reopen it first", conflict=True)
    updated, [item] = add_items(case, [(definition.description, "backoffice")], now=now)
    handed = case.handed_to if definition.backoffice in case.handed_to else (*case.handed_to, definition.backoffice)
    updated = dataclasses.replace(updated, status=S.WAITING_BACKOFFICE, handed_to=handed)
    detail = {"action": action, "to": definition.backoffice, "description": definition.description,
              "params": dict(params), "checklist_item": item.id, "from": case.status.value}
    return Step(updated, "action_requested", _why(why) or definition.description, detail)


def may_backoffice_see(case: Case, backoffice: str) -> bool:
    """A back office sees a case handed to it until the case is closed."""
    return backoffice in case.handed_to and case.status is not S.CLOSED


def backoffice_result(case: Case, backoffice: str, result: str, *, resolve: bool, done: Sequence[str],
                      now: float, policy: CasePolicy) -> Step:
    """A back office posts its result: its open checklist items (or the ones named) are ticked; with
    `resolve` the case is resolved (kind "resolved"), otherwise it goes back to the agent
    (in_progress) if it was waiting on a back office."""
    if not may_backoffice_see(case, backoffice):
        raise CaseRuleError("case", "not handed to this back office")
    by = f"backoffice:{backoffice}"
    ids = list(done) or [i.id for i in case.checklist if i.source == "backoffice" and not i.done]
    updated, ticked = tick(case, ids, by=by, now=now) if ids else (case, [])
    detail: dict[str, Any] = {"result": result, "backoffice": backoffice, "done": ticked,
                              "from": case.status.value}
    if resolve:
        if case.status is S.RESOLVED:
            return Step(updated, "backoffice_result", result, {**detail, "to": S.RESOLVED.value})
        step = move(updated, S.RESOLVED, why=result, now=now, policy=policy)
        return Step(step.case, "resolved", step.why, {**detail, "to": S.RESOLVED.value})
    if case.status is S.WAITING_BACKOFFICE:
        updated = dataclasses.replace(updated, status=S.IN_PROGRESS)
    return Step(dataclasses.replace(updated, updated_at=now), "backoffice_result", _why(result),
                {**detail, "to": updated.status.value})


def noted(case: Case, kind: str, detail: Mapping[str, Any], *, why: str, now: float) -> Step:
    """An event on the case without a state change (a notice's outcome, a compensation)."""
    if kind not in KINDS:
        raise CaseRuleError("kind", f"unknown kind of case event {kind[:32]!r}")
    return Step(dataclasses.replace(case, updated_at=now), kind, _why(why), dict(detail))


# --- wire forms ----------------------------------------------------------------------------------

def checklist_item_to_dict(item: ChecklistItem) -> dict[str, Any]:
    return {"id": item.id, "text": item.text, "from": item.source, "done": item.done, "done_by": item.done_by,
            "done_at": item.done_at}


def checklist_item_from_dict(d: Mapping[str, Any]) -> ChecklistItem:
    done_at = d.get("done_at")
    return ChecklistItem(id=str(d["id"]), text=str(d.get("text", "")), source=str(d.get("from", "customer")),
                         done=bool(d.get("done")), done_by=None if d.get("done_by") is None else str(d["done_by"]),
                         done_at=None if done_at is None else float(done_at))


# --- cases.yaml ----------------------------------------------------------------------------------

SEVERITIES = (1, 2, 3, 4, 5)
_TOP_KEYS = ("due_hours", "actions", "compensation")
_ACTION_KEYS = ("description", "backoffice")
_COMPENSATION_KEYS = ("currency", "timezone", "seniors", "authority")
_AUTHORITY_KEYS = ("per_case", "per_day")
MAX_DUE_HOURS = 24 * 366
PolicyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class PolicyProblem:
    path: PolicyPath  # where in the file (mapping keys, list indexes)
    message: str


def _unknown(data: Mapping[str, Any], allowed: Sequence[str], at: PolicyPath, out: list[PolicyProblem]) -> None:
    for key in data:
        if key not in allowed:
            where = ".".join(str(p) for p in (*at, key))
            out.append(PolicyProblem((*at, key), f"{where}: unknown key; allowed: {', '.join(allowed)}"))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _severity_table(data: Any, at: PolicyPath, out: list[PolicyProblem], *, what: str, hi: float,
                    whole: bool) -> dict[int, Any]:
    where = ".".join(str(p) for p in at)
    if not isinstance(data, Mapping):
        out.append(PolicyProblem(at, f"{where}: expected a mapping severity (1-5) → {what}"))
        return {}
    table: dict[int, Any] = {}
    for key, value in data.items():
        if str(key) not in {str(s) for s in SEVERITIES}:
            out.append(PolicyProblem((*at, key), f"{where}: {key!r} is not a severity (1-5)"))
            continue
        ok = (isinstance(value, int) and not isinstance(value, bool)) if whole else _number(value)
        if not ok or not 0 <= value <= hi:
            out.append(PolicyProblem((*at, key), f"{where}.{key}: expected {what} 0-{hi:g}, got {value!r}"))
            continue
        table[int(key)] = value
    return table


def _actions(data: Any, out: list[PolicyProblem]) -> dict[str, ActionDef]:
    if not isinstance(data, Mapping):
        out.append(PolicyProblem(("actions",), "actions: expected a mapping name → {description, backoffice}"))
        return {}
    actions = {}
    for name, raw in data.items():
        at: PolicyPath = ("actions", name)
        if not NAME.match(str(name)):
            out.append(PolicyProblem(at, f"actions.{name}: a name is 1-64 letters, digits, _ . -"))
            continue
        if not isinstance(raw, Mapping):
            out.append(PolicyProblem(at, f"actions.{name}: expected a mapping with description, backoffice"))
            continue
        _unknown(raw, _ACTION_KEYS, at, out)
        description, backoffice = raw.get("description"), raw.get("backoffice")
        if not isinstance(description, str) or not description.strip() or len(description) > MAX_ITEM_TEXT:
            out.append(PolicyProblem((*at, "description"), f"actions.{name}.description: expected text "
                                                           f"(1-{MAX_ITEM_TEXT} characters)"))
        elif not isinstance(backoffice, str) or not NAME.match(backoffice):
            out.append(PolicyProblem((*at, "backoffice"), f"actions.{name}.backoffice: expected the name of a "
                                                          "back-office token (web.backoffice_tokens_file)"))
        else:
            actions[str(name)] = ActionDef(str(name), " ".join(description.split()), backoffice)
    return actions


def _authority(data: Any, at: PolicyPath, out: list[PolicyProblem]) -> Authority | None:
    where = ".".join(str(p) for p in at)
    if not isinstance(data, Mapping):
        out.append(PolicyProblem(at, f"{where}: expected a mapping with per_case, per_day"))
        return None
    _unknown(data, _AUTHORITY_KEYS, at, out)
    per_case = _severity_table(data.get("per_case"), (*at, "per_case"), out, what="cents", hi=10**12, whole=True)
    per_day = data.get("per_day")
    if per_day is not None and (isinstance(per_day, bool) or not isinstance(per_day, int)
                                or not 0 <= per_day <= 10**12):
        out.append(PolicyProblem((*at, "per_day"), f"{where}.per_day: expected cents 0-{10**12} or null "
                                                   f"(no daily limit), got {per_day!r}"))
        per_day = 0
    return Authority(per_case=per_case, per_day=per_day)


def _compensation(data: Any, out: list[PolicyProblem], valid_zone: Any) -> CompensationPolicy:
    at: PolicyPath = ("compensation",)
    if not isinstance(data, Mapping):
        out.append(PolicyProblem(at, "compensation: expected a mapping with currency, timezone, seniors, authority"))
        return CompensationPolicy()
    _unknown(data, _COMPENSATION_KEYS, at, out)
    currency = data.get("currency", "CNY")
    if not isinstance(currency, str) or not re.match(r"^[A-Z]{3}$", currency):
        out.append(PolicyProblem((*at, "currency"), f"compensation.currency: expected an ISO 4217 code like CNY, "
                                                    f"got {currency!r}"))
    zone = data.get("timezone", "UTC")
    if not isinstance(zone, str) or not valid_zone(zone):
        out.append(PolicyProblem((*at, "timezone"), f"compensation.timezone: unknown time zone {zone!r} "
                                                    "(an IANA name like Asia/Shanghai)"))
    seniors = data.get("seniors", [])
    if not isinstance(seniors, list) or not all(isinstance(s, str) and NAME.match(s) for s in seniors):
        out.append(PolicyProblem((*at, "seniors"), "compensation.seniors: expected a list of agent ids"))
        seniors = []
    raw_roles = data.get("authority")
    roles: dict[str, Authority] = {}
    if not isinstance(raw_roles, Mapping):
        out.append(PolicyProblem((*at, "authority"), f"compensation.authority: expected a mapping role "
                                                     f"({', '.join(ROLES)}) → {{per_case, per_day}}"))
    else:
        _unknown(raw_roles, ROLES, (*at, "authority"), out)
        for role in ROLES:
            if role in raw_roles:
                authority = _authority(raw_roles[role], (*at, "authority", role), out)
                if authority is not None:
                    roles[role] = authority
    return CompensationPolicy(currency=str(currency), roles=roles, seniors=frozenset(seniors), timezone=str(zone))


def parse_policy(data: Any, *, valid_zone: Any = lambda zone: True) -> tuple[CasePolicy | None, list[PolicyProblem]]:
    """cases.yaml data → CasePolicy, or None and every problem with its path. `valid_zone(name)`
    checks a time zone name (the file adapter passes zoneinfo's)."""
    out: list[PolicyProblem] = []
    if not isinstance(data, Mapping):
        return None, [PolicyProblem((), f"expected a mapping with {', '.join(_TOP_KEYS)}")]
    _unknown(data, _TOP_KEYS, (), out)
    due = (_severity_table(data["due_hours"], ("due_hours",), out, what="hours", hi=MAX_DUE_HOURS, whole=False)
           if "due_hours" in data else dict(CasePolicy().due_hours))
    actions = _actions(data.get("actions", {}), out)
    compensation = _compensation(data.get("compensation", {"authority": {}}), out, valid_zone)
    if out:
        return None, out
    return CasePolicy(due_hours={k: float(v) for k, v in due.items()}, actions=actions,
                      compensation=compensation), []


# --- request bodies (REST): every value from outside checked here ----------------------------------

Problems = list[tuple[str, str]]


def _control(text: str, multiline: bool) -> bool:
    return any(unicodedata.category(ch).startswith("C") and not (multiline and ch in "\n\t") for ch in text)


def _text_field(out: Problems, name: str, value: Any, *, max_len: int, required: bool = False,
                multiline: bool = False) -> str:
    if value is None or value == "":
        if required:
            out.append((name, "is required"))
        return ""
    if not isinstance(value, str):
        out.append((name, "must be text"))
        return ""
    value = value.strip()
    if required and not value:
        out.append((name, "must not be empty"))
    elif len(value) > max_len:
        out.append((name, f"must be at most {max_len} characters"))
    elif _control(value, multiline):
        out.append((name, "must not contain control characters"))
    else:
        return value
    return ""


def _body(data: Any, allowed: Sequence[str], out: Problems) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        out.append(("body", "must be a JSON object"))
        return {}
    for key in data:
        if key not in allowed:
            out.append((str(key)[:64], f"unknown field; allowed: {', '.join(allowed)}"))
    return data


def _ids(out: Problems, name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_CHECKLIST or not all(
            isinstance(i, str) and ITEM_ID.match(i) for i in value):
        out.append((name, f"must be a list of at most {MAX_CHECKLIST} checklist item ids"))
        return []
    return list(value)


def parse_items(out: Problems, name: str, value: Any) -> list[tuple[str, str]]:
    """[{"text", "from"?}] → [(text, source)]."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_CHECKLIST:
        out.append((name, f"must be a list of at most {MAX_CHECKLIST} items {{text, from}}"))
        return []
    items = []
    for i, raw in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(raw, Mapping) or set(raw) - {"text", "from"}:
            out.append((where, "must be an object {text, from}"))
            continue
        text = _text_field(out, f"{where}.text", raw.get("text"), max_len=MAX_ITEM_TEXT, required=True)
        source = raw.get("from", "customer")
        if source not in SOURCES:
            out.append((f"{where}.from", f"must be one of {', '.join(SOURCES)}"))
        elif text:
            items.append((text, str(source)))
    return items


def parse_why(out: Problems, value: Any) -> str:
    return _text_field(out, "why", value, max_len=MAX_WHY, multiline=True)


def parse_move(data: Any) -> tuple[dict[str, Any] | None, Problems]:
    """{status, why?} → {"status": CaseStatus, "why": str}."""
    if not isinstance(data, Mapping):
        return None, [("body", "must be a JSON object")]
    out: Problems = []
    body = _body(data, ("status", "why"), out)
    status = body.get("status")
    target = None
    if not isinstance(status, str) or status not in {s.value for s in S} - {S.OPEN.value}:
        out.append(("status", f"must be one of {', '.join(s.value for s in S if s is not S.OPEN)}"))
    else:
        target = S(status)
    why = parse_why(out, body.get("why"))
    return (None, out) if out else ({"status": target, "why": why}, [])


def parse_checklist(data: Any) -> tuple[dict[str, Any] | None, Problems]:
    """{add?: [{text, from}], done?: [id], undone?: [id], why?}."""
    if not isinstance(data, Mapping):
        return None, [("body", "must be a JSON object")]
    out: Problems = []
    body = _body(data, ("add", "done", "undone", "why"), out)
    result = {"add": parse_items(out, "add", body.get("add")), "done": _ids(out, "done", body.get("done")),
              "undone": _ids(out, "undone", body.get("undone")), "why": parse_why(out, body.get("why"))}
    if not out and not (result["add"] or result["done"] or result["undone"]):
        out.append(("body", "give add, done or undone"))
    return (None, out) if out else (result, [])


def _params(out: Problems, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_PARAMS:
        out.append(("params", f"must be an object of at most {MAX_PARAMS} values"))
        return {}
    params: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not NAME.match(key):
            out.append(("params", f"parameter names are 1-64 letters, digits, _ . - (got {str(key)[:32]!r})"))
        elif isinstance(item, bool) or item is None or (isinstance(item, (int, float)) and abs(item) < 1e15):
            params[key] = item
        elif isinstance(item, str):
            text = _text_field(out, f"params.{key}", item, max_len=MAX_PARAM_TEXT)
            params[key] = text
        else:
            out.append((f"params.{key}", "must be text, a number, true/false or null"))
    return params


def parse_action(data: Any) -> tuple[dict[str, Any] | None, Problems]:
    """{action, to?, params?, why?}."""
    if not isinstance(data, Mapping):
        return None, [("body", "must be a JSON object")]
    out: Problems = []
    body = _body(data, ("action", "to", "params", "why"), out)
    action = body.get("action")
    if not isinstance(action, str) or not NAME.match(action):
        out.append(("action", "must be the name of an action (cases.yaml)"))
    to = body.get("to")
    if to is not None and (not isinstance(to, str) or not NAME.match(to)):
        out.append(("to", "must be the name of a back office"))
    result = {"action": action, "to": to, "params": _params(out, body.get("params")),
              "why": parse_why(out, body.get("why"))}
    return (None, out) if out else (result, [])


def parse_result(data: Any) -> tuple[dict[str, Any] | None, Problems]:
    """A back office's result: {result, resolve?: bool, checklist?: [ids done]}."""
    if not isinstance(data, Mapping):
        return None, [("body", "must be a JSON object")]
    out: Problems = []
    body = _body(data, ("result", "resolve", "checklist"), out)
    result = _text_field(out, "result", body.get("result"), max_len=MAX_RESULT, required=True, multiline=True)
    resolve = body.get("resolve", False)
    if not isinstance(resolve, bool):
        out.append(("resolve", "must be true or false"))
    done = _ids(out, "checklist", body.get("checklist"))
    return (None, out) if out else ({"result": result, "resolve": resolve, "done": done}, [])
