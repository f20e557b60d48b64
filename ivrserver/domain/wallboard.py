"""The live wallboard's content: queues, agents, callbacks and incidents as supervisors see them.

Pure: stdlib, domain.queue_names and domain.i18n only, no clock reads (every function that needs
the time takes `now`, epoch seconds).

Three pieces:

* `facts_of(event, now, queue_of)`: what one AMI queue event means for the board, as `QueueFact`s
  (a caller joined / was answered / abandoned / left a queue, a channel hung up). Events are read
  by attribute with the field names of `ivrserver.pbx.ami_events`; this module imports no adapter.
* `QueueChange` / `encode_change` / `decode_change`: the wire form of one applied fact between
  instances (Redis pub/sub): the queue, a caller added or removed, the queue's counters today.
* `Board`: one instance's view (waiting callers, today's counters, callbacks waiting, agents,
  incidents) and the JSON views the page draws (`snapshot`, `queue_view`, `agent_view`).

Service level (today, per queue): calls answered within `service_level_seconds` of joining —
the queue's HoldTime, whole seconds as Asterisk gives it, at most N (`in_service_level`) — divided by
the calls that left the queue answered or abandoned; None before the first such call. The reports
count it the same way (domain/reports.service_level over wait bins closed at the top), and the
config refuses a wallboard and reports setting that differ. Below `service_level_target` (a share,
sent in the snapshot as a percent) the page shows the level in red.
"""

from __future__ import annotations

import datetime
import json
import math
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ivrserver.domain.i18n import LANGUAGES  # the pages' languages: names in others are not sent
from ivrserver.domain.queue_names import ivr_queue

# The agent states the board counts, in the order the page lists them (domain.model.AgentState values).
AGENT_STATES = ("ready", "ringing", "on_call", "wrap_up", "paused", "logged_out")
COUNTERS = ("offered", "answered", "answered_in_sl", "abandoned")
FACT_KINDS = ("join", "answered", "abandoned", "leave", "gone")
MAX_NAME = 64  # queue names, ids and incident texts are cut to this on the board


def check_timezone(name: str) -> None:
    """ValueError unless `name` is an IANA time zone (`wallboard.timezone`)."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (expected e.g. UTC or Asia/Shanghai)") from exc


def day_of(now: float, tz: str) -> tuple[str, float]:
    """(`YYYY-MM-DD` of `now` in `tz`, epoch of the next local midnight): today's counters' key
    and when they stop being today's."""
    zone = zoneinfo.ZoneInfo(tz)
    local = datetime.datetime.fromtimestamp(now, zone)
    tomorrow = datetime.datetime.combine(local.date() + datetime.timedelta(days=1), datetime.time(), zone)
    return local.date().isoformat(), tomorrow.timestamp()


# ---------------------------------------------------------------------------------------------
# AMI events → queue facts


@dataclass(frozen=True)
class QueueFact:
    """One thing that happened in a queue. `uid` is the caller's channel Uniqueid; `hold` the
    seconds the caller waited (answered / abandoned); `queue` is '' for `gone` (any queue)."""

    kind: str  # one of FACT_KINDS, or "restore" (reconcile: a waiting caller no instance saw join)
    queue: str
    uid: str
    at: float
    priority: int = 0
    hold: int = 0


def _name(event: object) -> str:
    name = getattr(event, "event", None)
    return name if isinstance(name, str) and name else type(event).__name__


def facts_of(event: object, now: float, queue_of: Callable[[str], str | None] = ivr_queue) -> list[QueueFact]:
    """The board facts of one AMI event (empty for events the board ignores or foreign queues).
    `queue_of` maps Asterisk's queue name (`ivr-vip`) to ours (`vip`), None when not ours: by
    default queue_names.ivr_queue, the one conversion the contact records and reports use too."""
    kind = {"QueueCallerJoin": "join", "AgentConnect": "answered", "QueueCallerAbandon": "abandoned",
            "QueueCallerLeave": "leave", "Hangup": "gone"}.get(_name(event))
    if kind is None:
        return []
    uid = str(getattr(event, "uniqueid", "") or "")
    if not uid:
        return []
    if kind == "gone":
        return [QueueFact("gone", "", uid, now)]
    queue = queue_of(str(getattr(event, "queue", "") or ""))
    if not queue:
        return []
    return [QueueFact(kind, queue, uid, now, priority=_whole(getattr(event, "priority", 0)),
                      hold=_whole(getattr(event, "hold_time", 0)))]


def _whole(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def in_service_level(hold: int, threshold: int) -> bool:
    """"Answered within N s": the HoldTime (whole seconds, as AMI gives it) is at most N."""
    return 0 <= hold <= threshold


# ---------------------------------------------------------------------------------------------
# Instance ↔ instance: one applied fact


@dataclass(frozen=True)
class Waiting:
    uid: str
    queue: str
    joined_at: float
    priority: int = 0


@dataclass(frozen=True)
class Counters:
    offered: int = 0
    answered: int = 0
    answered_in_sl: int = 0
    abandoned: int = 0

    def service_level(self) -> float | None:
        """Answered within the threshold ÷ (answered + abandoned); None when neither happened."""
        finished = self.answered + self.abandoned
        return None if finished == 0 else min(1.0, self.answered_in_sl / finished)

    def merged(self, other: Counters) -> Counters:
        """Field-wise maximum: today's counters only grow, so an older message never lowers them."""
        return Counters(*(max(a, b) for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.offered, self.answered, self.answered_in_sl, self.abandoned)


@dataclass(frozen=True)
class QueueChange:
    """What applying one fact changed, as every instance receives it: `added` a waiting caller,
    `removed` a caller's uid, `counters` the queue's counters today (of `day`) after the change."""

    queue: str
    day: str = ""
    added: Waiting | None = None
    removed: str = ""
    counters: Counters | None = None


def encode_change(change: QueueChange) -> str:
    body: dict[str, Any] = {"q": change.queue, "d": change.day}
    if change.added is not None:
        body["add"] = {"u": change.added.uid, "at": change.added.joined_at, "p": change.added.priority}
    if change.removed:
        body["del"] = change.removed
    if change.counters is not None:
        body["c"] = list(change.counters.as_tuple())
    return json.dumps(body, separators=(",", ":"))


def decode_change(text: str) -> QueueChange:
    """Raises ValueError on anything but a well-formed change."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("q"), str) or not body["q"]:
        raise ValueError("a change names its queue")
    queue, day = body["q"], body.get("d", "")
    added = None
    if (add := body.get("add")) is not None:
        if not (isinstance(add, dict) and isinstance(add.get("u"), str) and _number(add.get("at"))):
            raise ValueError("add needs u and at")
        added = Waiting(add["u"], queue, float(add["at"]), _whole(add.get("p", 0)))
    removed = body.get("del", "")
    if not isinstance(removed, str):
        raise ValueError("del is a uid")
    counters = None
    if (c := body.get("c")) is not None:
        if not (isinstance(c, list) and len(c) == len(COUNTERS) and all(_whole(v) == v for v in c)):
            raise ValueError("c is four whole numbers")
        counters = Counters(*c)
    return QueueChange(queue=queue, day=str(day), added=added, removed=removed, counters=counters)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def counters_from_hash(fields: Mapping[str, str]) -> dict[str, Counters]:
    """Today's counters from the Redis hash `<queue>|<counter>` → number (unknown fields skipped)."""
    raw: dict[str, dict[str, int]] = {}
    for name, value in fields.items():
        queue, _, counter = str(name).rpartition("|")
        if queue and counter in COUNTERS and str(value).isdigit():
            raw.setdefault(queue, {})[counter] = int(value)
    return {queue: Counters(**values) for queue, values in raw.items()}


def waiting_from_hash(fields: Mapping[str, str]) -> list[Waiting]:
    """Waiting callers from the Redis hash uid → `{"q","at","p"}` (malformed entries skipped)."""
    out = []
    for uid, text in fields.items():
        try:
            body = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            continue
        if isinstance(body, dict) and isinstance(body.get("q"), str) and _number(body.get("at")):
            out.append(Waiting(str(uid), body["q"], float(body["at"]), _whole(body.get("p", 0))))
    return out


def reconcile(stored: Iterable[Waiting], live: Iterable[Waiting], started: float) -> tuple[list[str], list[Waiting]]:
    """What makes the stored waiting callers match Asterisk's list (QueueStatus, asked at `started`):
    (uids to remove: stored, joined before `started`, and no longer waiting in that queue; callers
    to add: waiting in Asterisk, not stored). Missed leaves and joins (every instance was away) heal."""
    live_by_uid = {w.uid: w for w in live}
    stored = list(stored)
    known = {w.uid for w in stored}
    remove = sorted(w.uid for w in stored
                    if w.joined_at < started and (w.uid not in live_by_uid or live_by_uid[w.uid].queue != w.queue))
    add = [w for uid, w in sorted(live_by_uid.items()) if uid not in known or uid in remove]
    return remove, add


# ---------------------------------------------------------------------------------------------
# Agents and incidents


@dataclass(frozen=True)
class AgentCell:
    agent_id: str
    name: str
    state: str  # one of AGENT_STATES
    since: float
    wrap_up_until: float = 0.0

    def at(self, now: float) -> tuple[str, float]:
        """(state, since) at `now`: a wrap-up that has ended is ready since it ended."""
        if self.state == "wrap_up" and 0 < self.wrap_up_until <= now:
            return "ready", self.wrap_up_until
        return self.state, self.since


Names = tuple[tuple[str, str], ...]  # (language, name) pairs, sorted: hashable, compared by value


@dataclass(frozen=True)
class IncidentCell:
    id: str
    service: str
    area: str
    state: str
    opened_at: float
    expected_fix_at: float | None = None
    service_names: Names = ()  # what the incidents policy calls the service, per language
    area_names: Names = ()  # the incident's own names of its area, per language


ACTIVE_INCIDENT_STATES = frozenset({"open", "acknowledged"})  # domain.incidents.ACTIVE_STATES' values


ServiceNames = Callable[[str], Mapping[str, str] | None]  # service id → {language: name}


def active_incidents(sources: Iterable[object], service_names: ServiceNames | None = None) -> list[IncidentCell]:
    """The active ones (open or acknowledged) of any incidents, as the board shows them."""
    cells = (incident_cell(source, service_names) for source in sources)
    return [c for c in cells if c is not None and c.state in ACTIVE_INCIDENT_STATES]


def _names(raw: object) -> Names:
    """{language: name} from anywhere (hostile): the pages' languages only, text cut to MAX_NAME."""
    if not isinstance(raw, Mapping):
        return ()
    return tuple(sorted((lang, value.strip()[:MAX_NAME]) for lang, value in raw.items()
                        if lang in LANGUAGES and isinstance(value, str) and value.strip()))


def incident_cell(source: object, service_names: ServiceNames | None = None) -> IncidentCell | None:
    """An incident as the board shows it, from a mapping or an object with the contract's fields
    (id, service, area, state, opened_at, expected_fix_at, area_names); None when it lacks an id.
    `service_names(service)` gives the service's names (the incidents policy's), per language."""
    def get(name: str) -> Any:
        return source.get(name) if isinstance(source, Mapping) else getattr(source, name, None)

    ident = get("id")
    if not isinstance(ident, str) or not ident:
        return None

    def text(name: str) -> str:
        value = get(name)
        value = getattr(value, "value", value)  # an enum's value
        return str(value)[:MAX_NAME] if value is not None else ""

    def when(name: str) -> float | None:
        value = get(name)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        return float(value) if _number(value) else None

    service = text("service")
    return IncidentCell(id=ident[:MAX_NAME], service=service, area=text("area"), state=text("state"),
                        opened_at=when("opened_at") or 0.0, expected_fix_at=when("expected_fix_at"),
                        service_names=_names(service_names(service) if service_names and service else None),
                        area_names=_names(get("area_names")))


# ---------------------------------------------------------------------------------------------
# The board


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


@dataclass
class Board:
    """One instance's board. Mutated only through its methods; every method is pure bookkeeping."""

    service_level_seconds: int
    queues: tuple[str, ...] = ()  # shown even when idle, in this order; others are added when seen
    only_listed: bool = False  # show only `queues` (wallboard.queues set)
    service_level_target: float = 0.8  # a share: below it the page shows a queue's service level in red
    day: str = ""
    waiting: dict[str, Waiting] = field(default_factory=dict)  # uid → caller
    counters: dict[str, Counters] = field(default_factory=dict)
    callbacks: dict[str, int] = field(default_factory=dict)  # queue → virtual-hold callbacks waiting
    callbacks_total: int = 0  # every callback waiting to be placed (virtual hold or scheduled)
    agents: dict[str, AgentCell] = field(default_factory=dict)  # changed only through set_agent
    incidents: tuple[IncidentCell, ...] = ()
    incidents_known: bool = False  # False: no incident source is wired (the page says so)
    # Kept with every set_agent so a frame's totals cost O(agents in wrap-up), not O(agents).
    _state_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(AGENT_STATES, 0))
    _wrapping: set[str] = field(default_factory=set)

    # -- which queues --------------------------------------------------------------------
    def shows(self, queue: str) -> bool:
        return bool(queue) and (not self.only_listed or queue in self.queues)

    def queue_names(self) -> list[str]:
        seen = {w.queue for w in self.waiting.values()} | set(self.counters) | set(self.callbacks)
        extra = sorted(q for q in seen if q not in self.queues and self.shows(q))
        return [*self.queues, *extra]

    # -- changes ---------------------------------------------------------------------------
    def load(self, day: str, waiting: Iterable[Waiting], counters: Mapping[str, Counters]) -> None:
        """Replace the queue side with what Redis holds (start, after a pub/sub outage, a new day)."""
        self.day = day
        self.waiting = {w.uid: w for w in waiting}
        self.counters = dict(counters)

    def apply(self, change: QueueChange) -> bool:
        """Apply one change from any instance; False when it touches nothing shown."""
        if change.added is not None:
            self.waiting[change.added.uid] = change.added
        if change.removed:
            self.waiting.pop(change.removed, None)
        if change.counters is not None and change.day == self.day:
            known = self.counters.get(change.queue, Counters())
            self.counters[change.queue] = known.merged(change.counters)
        return self.shows(change.queue)

    def set_callbacks(self, per_queue: Mapping[str, int], total: int) -> list[str]:
        """New callback counts; returns the queues whose count changed (plus '' if the total did)."""
        changed = sorted(q for q in set(per_queue) | set(self.callbacks)
                         if per_queue.get(q, 0) != self.callbacks.get(q, 0))
        if total != self.callbacks_total:
            changed.append("")
        self.callbacks = {q: n for q, n in per_queue.items() if n > 0}
        self.callbacks_total = total
        return changed

    def set_agent(self, cell: AgentCell) -> bool:
        """True when the agent's shown state or its start changed."""
        before = self.agents.get(cell.agent_id)
        self.agents[cell.agent_id] = cell
        if before is not None:
            self._state_counts[before.state] -= 1
        self._state_counts[cell.state] += 1
        if cell.state == "wrap_up":
            self._wrapping.add(cell.agent_id)
        else:
            self._wrapping.discard(cell.agent_id)
        return before is None or (before.state, before.since, before.wrap_up_until) != (
            cell.state, cell.since, cell.wrap_up_until)

    def set_incidents(self, incidents: Iterable[IncidentCell]) -> bool:
        ordered = tuple(sorted(incidents, key=lambda i: (i.opened_at, i.id)))
        changed = ordered != self.incidents or not self.incidents_known
        self.incidents, self.incidents_known = ordered, True
        return changed

    def next_expiry(self, now: float) -> float | None:
        """When the next wrap-up ends by time alone (no event says so), None if none is running."""
        ends = [end for a in self._wrapping if (end := self.agents[a].wrap_up_until) > now]
        return min(ends) if ends else None

    def expired(self, before: float, now: float) -> list[str]:
        """Agents whose wrap-up ended in (before, now]: their view changes without an event."""
        return sorted(a for a in self._wrapping if before < self.agents[a].wrap_up_until <= now)

    # -- views (JSON-ready; times in epoch milliseconds) ------------------------------------
    def queue_view(self, queue: str) -> dict[str, Any]:
        callers = [w for w in self.waiting.values() if w.queue == queue]
        counters = self.counters.get(queue, Counters())
        level = counters.service_level()
        return {
            "name": queue[:MAX_NAME],
            "waiting": len(callers),
            "oldest_joined_at": _ms(min((w.joined_at for w in callers), default=None)),
            "answered": counters.answered,
            "answered_in_sl": counters.answered_in_sl,
            "abandoned": counters.abandoned,
            "offered": counters.offered,
            "service_level": None if level is None else round(level * 100, 1),
            "callbacks": self.callbacks.get(queue, 0),
        }

    def agent_view(self, agent_id: str, now: float) -> dict[str, Any] | None:
        cell = self.agents.get(agent_id)
        if cell is None:
            return None
        state, since = cell.at(now)
        return {"id": cell.agent_id[:MAX_NAME], "name": cell.name[:MAX_NAME], "state": state, "since": _ms(since)}

    def agent_counts(self, now: float) -> dict[str, int]:
        counts = dict(self._state_counts)
        for agent_id in self._wrapping:
            if self.agents[agent_id].at(now)[0] == "ready":
                counts["wrap_up"] -= 1
                counts["ready"] += 1
        return counts

    def incidents_view(self) -> dict[str, Any]:
        return {"known": self.incidents_known,
                "items": [{"id": i.id, "service": i.service, "area": i.area, "state": i.state,
                           "opened_at": _ms(i.opened_at), "expected_fix_at": _ms(i.expected_fix_at),
                           "service_names": dict(i.service_names), "area_names": dict(i.area_names)}
                          for i in self.incidents]}

    def totals_view(self, now: float) -> dict[str, Any]:
        return {"callbacks_total": self.callbacks_total, "agent_counts": self.agent_counts(now),
                "waiting": sum(1 for w in self.waiting.values() if self.shows(w.queue))}

    def snapshot(self, now: float) -> dict[str, Any]:
        views = [self.agent_view(a, now) for a in sorted(self.agents)]
        return {
            "type": "snapshot", "now": _ms(now), "day": self.day,
            "service_level_seconds": self.service_level_seconds,
            "service_level_target": round(self.service_level_target * 100, 1),
            "queues": [self.queue_view(q) for q in self.queue_names()],
            "agents": [v for v in views if v is not None],
            "totals": self.totals_view(now),
            "incidents": self.incidents_view(),
        }


def cell_of(agent_id: str, name: str, state: str, since: float, wrap_up_until: float) -> AgentCell:
    """An agent cell; an unknown state name shows as logged out."""
    return AgentCell(agent_id=agent_id, name=name, state=state if state in AGENT_STATES else "logged_out",
                     since=since, wrap_up_until=wrap_up_until if state == "wrap_up" else 0.0)
