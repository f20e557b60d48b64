"""Routing policy: who takes a call, decided from the caller snapshot and the agents' live state.

Pure: stdlib only, no clock reads — `now` (an aware datetime) is passed in.

A policy is an ordered list of rules. The first rule whose conditions (`when`) all hold decides;
its target chain (`then`) is walked in order: agent targets (`case_owner`, `last_agent`,
`account_manager`, `{agent: ID}`) are taken only if that agent is logged in and free (READY);
the first queue target (`{queue: NAME, priority: N}` or `tier_queue`) or `menu` ends the chain.
No rule matching → the `otherwise` chain (the menu by default).

Every decision carries a human `reason` ("repeat caller: open case #123, last agent agent1003
busy → vip queue") and a structured `trace` of the rules tried and the candidates skipped.

The policy is parsed from a plain mapping (the YAML is loaded by files/routing.py);
`parse_policy` raises PolicyError whose `.problems` name the rule (number and name), the key,
what is allowed and, for near misses, "did you mean".
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivrserver.domain import suggest
from ivrserver.domain.model import Agent, AgentState, AgentStatus, CallerSnapshot, Case, Segment, Tier

# ---------------------------------------------------------------------------------------------
# Policy model


class Action(enum.StrEnum):
    AGENT = "agent"
    QUEUE = "queue"
    MENU = "menu"


class TargetKind(enum.StrEnum):
    CASE_OWNER = "case_owner"
    LAST_AGENT = "last_agent"
    ACCOUNT_MANAGER = "account_manager"
    AGENT = "agent"
    QUEUE = "queue"
    TIER_QUEUE = "tier_queue"
    MENU = "menu"


_AGENT_KINDS = frozenset({TargetKind.CASE_OWNER, TargetKind.LAST_AGENT, TargetKind.ACCOUNT_MANAGER,
                          TargetKind.AGENT})
_TERMINAL_KINDS = frozenset({TargetKind.QUEUE, TargetKind.TIER_QUEUE, TargetKind.MENU})
_ROLE_TEXT = {
    TargetKind.CASE_OWNER: "case owner",
    TargetKind.LAST_AGENT: "last agent",
    TargetKind.ACCOUNT_MANAGER: "account manager",
    TargetKind.AGENT: "agent",
}
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class QueueTarget:
    queue: str
    priority: int = 0


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    agent_id: str | None = None  # for kind AGENT
    queue: QueueTarget | None = None  # for kind QUEUE


@dataclass(frozen=True)
class TimeWindow:
    """Local time-of-day window [start, end); end before start wraps past midnight."""

    start: time
    end: time | None  # None: "24:00"
    days: frozenset[int] = frozenset(range(7))  # 0 = Monday

    def contains(self, local: datetime) -> bool:
        t = local.time().replace(tzinfo=None)
        start_day = local.weekday()
        if self.end is None or self.start < self.end:
            inside = t >= self.start and (self.end is None or t < self.end)
        else:  # wraps midnight: the part after midnight belongs to the previous day's window
            inside = t >= self.start or t < self.end
            if t < self.end:
                start_day = (start_day - 1) % 7
        return inside and start_day in self.days

    def describe(self) -> str:
        end = "24:00" if self.end is None else self.end.strftime("%H:%M")
        text = f"{self.start.strftime('%H:%M')}-{end}"
        if self.days != frozenset(range(7)):
            text += " " + ",".join(_WEEKDAYS[d] for d in sorted(self.days))
        return text


@dataclass(frozen=True)
class Conditions:
    """All set conditions must hold (AND); `any_of` holds when at least one branch holds."""

    tiers: frozenset[str] | None = None
    segments: frozenset[str] | None = None
    known: bool | None = None
    anonymous: bool | None = None
    pin_locked_out: bool | None = None
    open_case: bool | None = None
    contacted_within_hours: float | None = None
    time: TimeWindow | None = None
    any_of: tuple[Conditions, ...] = ()


@dataclass(frozen=True)
class Rule:
    name: str
    label: str
    when: Conditions
    then: tuple[Target, ...]
    ring_seconds: int


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    otherwise: tuple[Target, ...]
    ring_seconds: int
    default_queue: QueueTarget
    tier_queues: Mapping[str, QueueTarget]
    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches instances by key

    def tier_queue(self, tier: str | None) -> QueueTarget:
        return self.tier_queues.get(tier or Tier.STANDARD.value, self.default_queue)


# ---------------------------------------------------------------------------------------------
# Decision


@dataclass(frozen=True)
class TraceStep:
    """One step of a decision: a rule tried or a candidate considered."""

    step: str  # "rule" | "candidate" | "target"
    subject: str  # rule name, "last agent agent1003", "vip queue", "menu"
    result: str  # rule: "matched" | "no match"; candidate: "chosen" | "skipped"; target: "chosen"
    detail: str = ""


@dataclass(frozen=True)
class Route:
    action: Action
    reason: str
    rule: str | None  # name of the deciding rule; None when `otherwise` decided
    agent_id: str | None = None  # action AGENT
    dial: str | None = None  # action AGENT: the agent's endpoint, e.g. "PJSIP/agent1003"
    ring_seconds: int | None = None  # action AGENT
    queue: str | None = None  # action QUEUE: the queue; action AGENT: the fallback queue
    priority: int = 0
    skip_menu: bool = False
    trace: tuple[TraceStep, ...] = ()


_UNAVAILABLE_TEXT = {
    AgentState.LOGGED_OUT: "logged out",
    AgentState.PAUSED: "paused",
    AgentState.RINGING: "ringing",
    AgentState.ON_CALL: "busy",
    AgentState.WRAP_UP: "in wrap-up",
}


def current_case(snapshot: CallerSnapshot) -> Case | None:
    """The open case a call is most likely about: the most recently opened, then most severe."""
    if not snapshot.open_cases:
        return None
    return max(snapshot.open_cases, key=lambda c: (c.opened_at, -c.severity, c.id))


def last_agent(snapshot: CallerSnapshot) -> str | None:
    contact = snapshot.last_contact
    if contact is None or not contact.agents:
        return None
    return contact.agents[-1]


def _role_agent(kind: TargetKind, target: Target, snapshot: CallerSnapshot) -> str | None:
    if kind is TargetKind.CASE_OWNER:
        case = current_case(snapshot)
        return case.owner_agent if case else None
    if kind is TargetKind.LAST_AGENT:
        return last_agent(snapshot)
    if kind is TargetKind.ACCOUNT_MANAGER:
        return snapshot.customer.account_manager if snapshot.customer else None
    return target.agent_id


def candidate_agent_ids(snapshot: CallerSnapshot, policy: Policy) -> frozenset[str]:
    """Agents route() may look at for this caller: read only these agents' live state."""
    chains = [rule.then for rule in policy.rules] + [policy.otherwise]
    ids = {_role_agent(t.kind, t, snapshot) for chain in chains for t in chain if t.kind in _AGENT_KINDS}
    return frozenset(i for i in ids if i)


def _ago(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return f"{minutes} min ago"
    return f"{minutes // 60} h ago"


@dataclass(frozen=True)
class _Facts:
    snapshot: CallerSnapshot
    tier: str | None
    segment: str | None
    pin_locked_out: bool
    local: datetime
    since_last_contact: float | None


def _check(cond: Conditions, facts: _Facts) -> tuple[bool, list[str], list[str]]:
    """(holds, facts worth telling in the reason, why not) for one condition set."""
    told: list[str] = []
    why_not: list[str] = []
    snap = facts.snapshot
    if cond.tiers is not None and facts.tier not in cond.tiers:
        why_not.append(f"tier is {facts.tier or 'unknown'}, wants {'/'.join(sorted(cond.tiers))}")
    if cond.segments is not None and facts.segment not in cond.segments:
        why_not.append(f"segment is {facts.segment or 'unknown'}, wants {'/'.join(sorted(cond.segments))}")
    if cond.known is not None and (snap.customer is not None) != cond.known:
        why_not.append("caller is identified" if snap.customer is not None else "caller is not identified")
    if cond.anonymous is not None and snap.anonymous != cond.anonymous:
        why_not.append("number is withheld" if snap.anonymous else "number is not withheld")
    if cond.pin_locked_out is not None and facts.pin_locked_out != cond.pin_locked_out:
        why_not.append("PIN is locked out" if facts.pin_locked_out else "PIN is not locked out")
    if cond.open_case is not None:
        case = current_case(snap)
        if (case is not None) != cond.open_case:
            why_not.append(f"open case #{case.id}" if case else "no open case")
        elif case is not None:
            more = len(snap.open_cases) - 1
            told.append(f"open case #{case.id}" + (f" (+{more} more)" if more else ""))
    if cond.contacted_within_hours is not None:
        ago = facts.since_last_contact
        if ago is None:
            why_not.append("no earlier contact")
        elif ago > cond.contacted_within_hours * 3600:
            why_not.append(f"last call {_ago(ago)}, wants within {cond.contacted_within_hours:g} h")
        else:
            told.append(f"last call {_ago(ago)}")
    if cond.time is not None and not cond.time.contains(facts.local):
        why_not.append(f"local time {facts.local.strftime('%a %H:%M')} outside {cond.time.describe()}")
    if cond.any_of:
        branches = [_check(branch, facts) for branch in cond.any_of]
        held = [b for b in branches if b[0]]
        if held:
            for _, branch_told, _ in held:
                told.extend(t for t in branch_told if t not in told)
        else:
            why_not.append("none of: " + " | ".join("; ".join(b[2]) for b in branches))
    return (not why_not, told, why_not)


def route(snapshot: CallerSnapshot, agents: Mapping[str, AgentStatus], agent_defs: Mapping[str, Agent],
          now: datetime, policy: Policy, *, pin_locked_out: bool = False) -> Route:
    """Decide where a call goes. `agents`: live status by agent id (missing = logged out).

    `pin_locked_out`: the caller used up the IVR's account+PIN attempts (known only to the IVR).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("route() needs an aware datetime for now")
    contact = snapshot.last_contact
    customer = snapshot.customer
    facts = _Facts(
        snapshot=snapshot,
        tier=customer.tier.value if customer else None,
        segment=customer.segment.value if customer else None,
        pin_locked_out=pin_locked_out,
        local=now.astimezone(policy.zone),
        since_last_contact=None if contact is None else now.timestamp() - contact.started_at,
    )
    trace: list[TraceStep] = []
    for rule in policy.rules:
        holds, told, why_not = _check(rule.when, facts)
        trace.append(TraceStep("rule", rule.name, "matched" if holds else "no match",
                               "; ".join(told if holds else why_not)))
        if holds:
            return _walk(rule.name, rule.label, told, rule.then, rule.ring_seconds, snapshot, agents,
                         agent_defs, policy, facts.tier, trace)
    return _walk(None, "no rule matched", [], policy.otherwise, policy.ring_seconds, snapshot, agents,
                 agent_defs, policy, facts.tier, trace)


def _queue_text(queue: QueueTarget) -> str:
    return f"{queue.queue} queue"


def _walk(rule: str | None, label: str, told: list[str], chain: Sequence[Target], ring_seconds: int,
          snapshot: CallerSnapshot, agents: Mapping[str, AgentStatus], agent_defs: Mapping[str, Agent],
          policy: Policy, tier: str | None, trace: list[TraceStep]) -> Route:
    notes = list(told)
    tried: set[str] = set()

    def reason(outcome: str) -> str:
        return f"{label}: {', '.join(notes)} → {outcome}" if notes else f"{label} → {outcome}"

    for index, target in enumerate(chain):
        if target.kind in _AGENT_KINDS:
            role = _ROLE_TEXT[target.kind]
            agent_id = _role_agent(target.kind, target, snapshot)
            if agent_id is None:
                trace.append(TraceStep("candidate", role, "skipped", f"no {role}"))
                continue
            subject = f"{role} {agent_id}"
            if agent_id in tried:
                trace.append(TraceStep("candidate", subject, "skipped", "already considered"))
                continue
            tried.add(agent_id)
            agent = agent_defs.get(agent_id)
            status = agents.get(agent_id)
            state = status.state if status else AgentState.LOGGED_OUT
            if agent is None:
                why = "not defined in agents"
            elif state is not AgentState.READY:
                why = _UNAVAILABLE_TEXT[state]
            else:
                fallback = _fallback(chain[index + 1:], policy, tier)
                trace.append(TraceStep("candidate", subject, "chosen", "ready"))
                return Route(action=Action.AGENT, reason=reason(f"{subject}, then {_queue_text(fallback)}"),
                             rule=rule, agent_id=agent_id, dial=agent.endpoint, ring_seconds=ring_seconds,
                             queue=fallback.queue, priority=fallback.priority, skip_menu=True,
                             trace=tuple(trace))
            trace.append(TraceStep("candidate", subject, "skipped", why))
            notes.append(f"{subject} {why}")
            continue
        if target.kind is TargetKind.MENU:
            trace.append(TraceStep("target", "menu", "chosen"))
            return Route(action=Action.MENU, reason=reason("menu"), rule=rule, trace=tuple(trace))
        queue = target.queue if target.kind is TargetKind.QUEUE and target.queue else policy.tier_queue(tier)
        trace.append(TraceStep("target", _queue_text(queue), "chosen", f"priority {queue.priority}"))
        return Route(action=Action.QUEUE, reason=reason(_queue_text(queue)), rule=rule, queue=queue.queue,
                     priority=queue.priority, skip_menu=True, trace=tuple(trace))
    # parse_policy guarantees a terminal target; a hand-built chain without one ends in the default queue
    queue = policy.default_queue
    trace.append(TraceStep("target", _queue_text(queue), "chosen", "chain exhausted"))
    return Route(action=Action.QUEUE, reason=reason(_queue_text(queue)), rule=rule, queue=queue.queue,
                 priority=queue.priority, skip_menu=True, trace=tuple(trace))


def _fallback(rest: Sequence[Target], policy: Policy, tier: str | None) -> QueueTarget:
    """Where an agent's unanswered ring goes: the chain's next queue, else the caller's tier queue."""
    for target in rest:
        if target.kind is TargetKind.QUEUE and target.queue:
            return target.queue
        if target.kind in _TERMINAL_KINDS:
            break
    return policy.tier_queue(tier)


# ---------------------------------------------------------------------------------------------
# Parsing and validation


@dataclass(frozen=True)
class Problem:
    """One policy error. `path` locates it in the source mapping (list indexes 0-based)."""

    path: tuple[str | int, ...]
    message: str
    rule_name: str | None = None

    @property
    def where(self) -> str:
        parts: list[str] = []
        path = list(self.path)
        if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
            head = f"rule #{path[1] + 1}"
            if self.rule_name:
                head += f" ({self.rule_name})"
            parts.append(head)
            path = path[2:]
        rest = ""
        for item in path:
            if isinstance(item, int):
                rest += f" #{item + 1}"
            else:
                rest += ("." if rest else "") + item
        if rest:
            parts.append(rest)
        return ": ".join(parts) if parts else "policy"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class PolicyError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("invalid routing policy:\n  " + "\n  ".join(map(str, problems)))
        self.problems = problems


_TOP_KEYS = ("version", "timezone", "ring_seconds", "default_queue", "tier_queues", "rules", "otherwise")
_RULE_KEYS = ("name", "label", "when", "then", "ring_seconds")
_WHEN_KEYS = ("tier", "segment", "known", "anonymous", "pin_locked_out", "open_case",
              "contacted_within_hours", "time", "any")
_TIME_KEYS = ("from", "until", "days")
_WORD_TARGETS = (TargetKind.CASE_OWNER, TargetKind.LAST_AGENT, TargetKind.ACCOUNT_MANAGER,
                 TargetKind.TIER_QUEUE, TargetKind.MENU)
_MAP_TARGETS = ("queue", "agent")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HHMM = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")
MAX_PRIORITY = 1000
MAX_RING_SECONDS = 300


def _did_you_mean(word: object, allowed: Collection[str]) -> str:
    hint = suggest.did_you_mean(word, allowed, quote='"')
    return f"; {hint}" if hint else ""


def _allowed(allowed: Collection[str]) -> str:
    return ", ".join(sorted(allowed))


class _Parser:
    def __init__(self, agent_ids: Collection[str] | None, queues: Collection[str] | None) -> None:
        self.agent_ids = agent_ids
        self.queues = queues
        self.problems: list[Problem] = []
        self.rule_name: str | None = None

    def err(self, path: tuple[str | int, ...], message: str) -> None:
        name = self.rule_name if path[:1] == ("rules",) else None
        self.problems.append(Problem(path, message, name))

    def unknown_keys(self, data: Mapping[Any, Any], allowed: Sequence[str], path: tuple[str | int, ...],
                     what: str) -> None:
        for key in data:
            if key not in allowed:
                self.err((*path, str(key)), f'unknown {what} "{key}"; allowed: {_allowed(allowed)}'
                         + _did_you_mean(key, allowed))

    def integer(self, raw: object, path: tuple[str | int, ...], low: int, high: int) -> int | None:
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.err(path, f"expected a whole number {low}..{high}, got {raw!r}")
            return None
        if not low <= raw <= high:
            self.err(path, f"must be {low}..{high}, got {raw}")
            return None
        return raw

    def boolean(self, raw: object, path: tuple[str | int, ...]) -> bool | None:
        if not isinstance(raw, bool):
            self.err(path, f"expected true or false, got {raw!r}")
            return None
        return raw

    def queue_name(self, raw: object, path: tuple[str | int, ...]) -> str | None:
        if not isinstance(raw, str) or not _NAME.match(raw):
            self.err(path, f"expected a queue name (letters, digits, _ . -), got {raw!r}")
            return None
        if self.queues is not None and raw not in self.queues:
            self.err(path, f'unknown queue "{raw}"; allowed: {_allowed(self.queues)}'
                     + _did_you_mean(raw, self.queues))
            return None
        return raw

    def queue_target(self, raw: object, path: tuple[str | int, ...]) -> QueueTarget | None:
        if isinstance(raw, str):
            name = self.queue_name(raw, path)
            return QueueTarget(name) if name else None
        if not isinstance(raw, Mapping):
            self.err(path, f"expected {{queue: NAME, priority: N}}, got {raw!r}")
            return None
        self.unknown_keys(raw, ("queue", "priority"), path, "key")
        if "queue" not in raw:
            self.err(path, "missing key queue")
            return None
        name = self.queue_name(raw["queue"], (*path, "queue"))
        priority = self.integer(raw.get("priority", 0), (*path, "priority"), 0, MAX_PRIORITY)
        if name is None or priority is None:
            return None
        return QueueTarget(name, priority)

    def names(self, raw: object, path: tuple[str | int, ...], allowed: Sequence[str],
              what: str) -> frozenset[str] | None:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items:
            self.err(path, f"expected a {what} or a list of them ({_allowed(allowed)}), got {raw!r}")
            return None
        ok = True
        for item in items:
            if item not in allowed:
                ok = False
                self.err(path, f'unknown {what} "{item}"; allowed: {_allowed(allowed)}'
                         + _did_you_mean(item, allowed))
        return frozenset(items) if ok else None

    def clock(self, raw: object, path: tuple[str | int, ...]) -> tuple[time | None, bool]:
        if isinstance(raw, int) and not isinstance(raw, bool):
            # YAML 1.1 reads an unquoted 08:30 as a base-60 number (510): quote times.
            self.err(path, f'expected "HH:MM" in quotes, got {raw!r} (YAML reads unquoted 08:30 as a number)')
            return None, False
        match = _HHMM.match(raw) if isinstance(raw, str) else None
        if not match or (int(match[1]) == 24 and match[2] != "00"):
            self.err(path, f'expected "HH:MM" (00:00..24:00), got {raw!r}')
            return None, False
        if int(match[1]) == 24:
            return None, True
        return time(int(match[1]), int(match[2])), True

    def window(self, raw: object, path: tuple[str | int, ...]) -> TimeWindow | None:
        if not isinstance(raw, Mapping):
            self.err(path, f'expected {{from: "HH:MM", until: "HH:MM", days: [mon, …]}}, got {raw!r}')
            return None
        self.unknown_keys(raw, _TIME_KEYS, path, "key")
        for key in ("from", "until"):
            if key not in raw:
                self.err(path, f"missing key {key}")
        if "from" not in raw or "until" not in raw:
            return None
        start, ok_start = self.clock(raw["from"], (*path, "from"))
        end, ok_end = self.clock(raw["until"], (*path, "until"))
        if ok_start and start is None:
            self.err((*path, "from"), 'must be before 24:00, got "24:00"')
            return None
        days = frozenset(range(7))
        if "days" in raw:
            found = self.names(raw["days"], (*path, "days"), _WEEKDAYS, "day")
            if found is None:
                return None
            days = frozenset(_WEEKDAYS.index(d) for d in found)
        if not (ok_start and ok_end) or start is None:
            return None
        if start == end:
            self.err(path, f"from and until are both {raw['from']}: the window is empty")
            return None
        return TimeWindow(start, end, days)

    def conditions(self, raw: object, path: tuple[str | int, ...], nested: bool = False) -> Conditions | None:
        if raw is None:
            return Conditions()
        if not isinstance(raw, Mapping):
            self.err(path, f"expected a mapping of conditions ({_allowed(_WHEN_KEYS)}), got {raw!r}")
            return None
        before = len(self.problems)
        allowed = tuple(k for k in _WHEN_KEYS if not (nested and k == "any"))
        self.unknown_keys(raw, allowed, path, "condition")
        kw: dict[str, Any] = {}
        if "tier" in raw:
            kw["tiers"] = self.names(raw["tier"], (*path, "tier"), [t.value for t in Tier], "tier")
        if "segment" in raw:
            kw["segments"] = self.names(raw["segment"], (*path, "segment"), [s.value for s in Segment],
                                        "segment")
        for key in ("known", "anonymous", "pin_locked_out", "open_case"):
            if key in raw:
                kw[key] = self.boolean(raw[key], (*path, key))
        if "contacted_within_hours" in raw:
            hours = raw["contacted_within_hours"]
            if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 < hours <= 24 * 365:
                self.err((*path, "contacted_within_hours"),
                         f"expected a number of hours, more than 0 and at most 8760, got {hours!r}")
            else:
                kw["contacted_within_hours"] = float(hours)
        if "time" in raw:
            kw["time"] = self.window(raw["time"], (*path, "time"))
        if "any" in raw and not nested:
            branches = raw["any"]
            if not isinstance(branches, list) or not branches:
                self.err((*path, "any"), f"expected a non-empty list of condition mappings, got {branches!r}")
            else:
                parsed = [self.conditions(b, (*path, "any", i), nested=True) for i, b in enumerate(branches)]
                kw["any_of"] = tuple(p for p in parsed if p is not None)
        if len(self.problems) > before:
            return None
        return Conditions(**kw)

    def target(self, raw: object, path: tuple[str | int, ...]) -> Target | None:
        words = [k.value for k in _WORD_TARGETS]
        every = sorted([*words, "{queue: NAME, priority: N}", "{agent: ID}"])
        if isinstance(raw, str):
            if raw in words:
                return Target(TargetKind(raw))
            self.err(path, f'unknown target "{raw}"; allowed: {", ".join(every)}'
                     + _did_you_mean(raw, words + list(_MAP_TARGETS)))
            return None
        if isinstance(raw, Mapping) and "agent" in raw:
            self.unknown_keys(raw, ("agent",), path, "key")
            agent_id = raw["agent"]
            if not isinstance(agent_id, str) or not agent_id:
                self.err((*path, "agent"), f"expected an agent id, got {agent_id!r}")
                return None
            if self.agent_ids is not None and agent_id not in self.agent_ids:
                self.err((*path, "agent"), f'unknown agent "{agent_id}"; defined: {_allowed(self.agent_ids)}'
                         + _did_you_mean(agent_id, self.agent_ids))
                return None
            return Target(TargetKind.AGENT, agent_id=agent_id)
        if isinstance(raw, Mapping) and "queue" in raw:
            queue = self.queue_target(raw, path)
            return Target(TargetKind.QUEUE, queue=queue) if queue else None
        if isinstance(raw, Mapping):
            keys = ", ".join(map(str, raw))
            self.err(path, f"unknown target mapping with keys {keys}; allowed: {', '.join(every)}"
                     + _did_you_mean(next(iter(raw), ""), list(_MAP_TARGETS) + words))
            return None
        self.err(path, f"expected a target ({', '.join(every)}), got {raw!r}")
        return None

    def chain(self, raw: object, path: tuple[str | int, ...]) -> tuple[Target, ...] | None:
        if not isinstance(raw, list) or not raw:
            self.err(path, f"expected a non-empty list of targets, got {raw!r}")
            return None
        targets = [self.target(item, (*path, i)) for i, item in enumerate(raw)]
        if any(t is None for t in targets):
            return None
        chain = tuple(t for t in targets if t is not None)
        for i, t in enumerate(chain[:-1]):
            if t.kind in _TERMINAL_KINDS:
                self.err((*path, i + 1), f"unreachable: the chain already ends at {raw[i]!r} "
                         f"(queue, tier_queue and menu must come last)")
                return None
        if chain[-1].kind not in _TERMINAL_KINDS:
            self.err(path, "the chain must end with a queue, tier_queue or menu target "
                     "(where the call goes when no agent is free)")
            return None
        return chain

    def rule(self, raw: object, index: int, default_ring: int, seen: dict[str, int]) -> Rule | None:
        path: tuple[str | int, ...] = ("rules", index)
        self.rule_name = None
        if not isinstance(raw, Mapping):
            self.err(path, f"expected a mapping with {', '.join(_RULE_KEYS)}, got {raw!r}")
            return None
        name = raw.get("name")
        if isinstance(name, str) and _NAME.match(name):
            self.rule_name = name
        before = len(self.problems)
        self.unknown_keys(raw, _RULE_KEYS, path, "key")
        if name is None:
            self.err(path, "missing key name")
        elif self.rule_name is None:
            self.err((*path, "name"), f"expected a name (letters, digits, _ . -), got {name!r}")
        elif name in seen:
            self.err((*path, "name"), f'duplicate rule name "{name}" (also rule #{seen[name] + 1})')
        else:
            seen[name] = index
        label = raw.get("label", name)
        if "label" in raw and (not isinstance(label, str) or not label.strip()):
            self.err((*path, "label"), f"expected text, got {label!r}")
        when = self.conditions(raw.get("when"), (*path, "when"))
        then = None
        if "then" not in raw:
            self.err(path, "missing key then (the target chain)")
        else:
            then = self.chain(raw["then"], (*path, "then"))
        ring = default_ring
        if "ring_seconds" in raw:
            ring = self.integer(raw["ring_seconds"], (*path, "ring_seconds"), 1, MAX_RING_SECONDS) or ring
        if len(self.problems) > before or when is None or then is None:
            return None
        return Rule(name=str(name), label=str(label), when=when, then=then, ring_seconds=ring)

    def policy(self, data: object) -> Policy | None:
        if not isinstance(data, Mapping):
            self.err((), f"expected a mapping with {', '.join(_TOP_KEYS)}, got {data!r}")
            return None
        self.unknown_keys(data, _TOP_KEYS, (), "key")
        if "version" in data and data["version"] != 1:
            self.err(("version",), f"only version 1 is supported, got {data['version']!r}")
        zone = data.get("timezone", "UTC")
        if not isinstance(zone, str) or not _zone_ok(zone):
            self.err(("timezone",), f"unknown IANA time zone {zone!r} (e.g. UTC, Asia/Shanghai)")
        ring = self.integer(data.get("ring_seconds", 20), ("ring_seconds",), 1, MAX_RING_SECONDS) or 20
        default_queue = self.queue_target(data.get("default_queue", {"queue": "general"}), ("default_queue",))
        tier_queues: dict[str, QueueTarget] = {}
        raw_tiers = data.get("tier_queues", {})
        if not isinstance(raw_tiers, Mapping):
            self.err(("tier_queues",), f"expected a mapping of tier to {{queue, priority}}, got {raw_tiers!r}")
        else:
            tiers = [t.value for t in Tier]
            self.unknown_keys(raw_tiers, tiers, ("tier_queues",), "tier")
            for tier in tiers:
                if tier in raw_tiers:
                    queue = self.queue_target(raw_tiers[tier], ("tier_queues", tier))
                    if queue:
                        tier_queues[tier] = queue
        rules: list[Rule] = []
        raw_rules = data.get("rules", [])
        if not isinstance(raw_rules, list):
            self.err(("rules",), f"expected a list of rules, got {raw_rules!r}")
        else:
            seen: dict[str, int] = {}
            for i, raw in enumerate(raw_rules):
                parsed = self.rule(raw, i, ring, seen)
                if parsed:
                    rules.append(parsed)
        self.rule_name = None
        otherwise = self.chain(data.get("otherwise", ["menu"]), ("otherwise",))
        if self.problems or default_queue is None or otherwise is None:
            return None
        return Policy(rules=tuple(rules), otherwise=otherwise, ring_seconds=ring, default_queue=default_queue,
                      tier_queues=tier_queues, timezone=str(zone))


def _zone_ok(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def validate_policy(data: object, *, agent_ids: Collection[str] | None = None,
                    queues: Collection[str] | None = None) -> list[Problem]:
    """Every problem of a policy mapping, in document order; [] when it is valid."""
    parser = _Parser(agent_ids, queues)
    parser.policy(data)
    return parser.problems


def parse_policy(data: object, *, agent_ids: Collection[str] | None = None,
                 queues: Collection[str] | None = None) -> Policy:
    """Build a Policy from a plain mapping; raises PolicyError listing every problem.

    `agent_ids` / `queues`: when given, `{agent: ID}` targets and queue names are checked against them.
    """
    parser = _Parser(agent_ids, queues)
    policy = parser.policy(data)
    if policy is None:
        raise PolicyError(parser.problems or [Problem((), "invalid policy")])
    return policy
