"""Mass-fault detection and the incident lifecycle, pure (time is passed in as epoch seconds).

Counting. Every complaint (a menu option naming a `service:`, from a caller whose area is known)
adds one to two buckets of its (service, area) pair: a short one (`bucket_seconds`, e.g. 60 s)
and an hourly one. The store keeps them as Redis counters; `WindowCounter` here is the same
arithmetic over dicts (unit tests, the bench).

- window count: the short buckets of the last `window_seconds` (the current bucket included);
- baseline: the pair's normal rate, from the hourly buckets of the `baseline_hours` full hours
  before the hour the window starts in, scaled to the window's length (a burst never counts in
  its own baseline);
- a pair is raised when `count >= min_count` and `count >= ratio × baseline`, unless an incident
  is active for it (opened by the detector or by hand, e.g. a planned outage) or one was resolved
  less than `cooldown_seconds` ago.

Lifecycle: open → acknowledged → resolved (resolve from open too); a resolved incident is final.
`Incident` values are immutable; every change returns a new one with `revision + 1`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo

SERVICE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
HOUR = 3600


# ---------------------------------------------------------------------------------------------
# Policy


@dataclass(frozen=True)
class ServiceInfo:
    names: Mapping[str, str]  # language → "mobile data" / "移动数据"
    queue: str = "faults"  # where a caller who stays on the line goes
    priority: int = 2


@dataclass(frozen=True)
class Policy:
    window_seconds: int = 600
    bucket_seconds: int = 60
    min_count: int = 20
    ratio: float = 5.0
    baseline_hours: int = 24
    cooldown_seconds: int = 1800
    interval_seconds: float = 1.0  # how often the detector looks
    services: Mapping[str, ServiceInfo] = field(default_factory=dict)
    areas: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # area key → language → name
    timezone: str = "UTC"  # expected fix times are said in this zone
    callers_kept_seconds: int = 7 * 86400  # how long who-complained is kept (notices at resolve)

    @property
    def buckets(self) -> int:
        return max(1, -(-self.window_seconds // self.bucket_seconds))

    def service_name(self, service: str, language: str) -> str:
        info = self.services.get(service)
        if info is None:
            return service.replace("_", " ")
        return info.names.get(language) or info.names.get("en") or service.replace("_", " ")


# ---------------------------------------------------------------------------------------------
# Counting


def bucket_of(now: float, seconds: int) -> int:
    return int(now // seconds)


def window_buckets(now: float, policy: Policy) -> range:
    """Short bucket numbers of the window ending at `now` (the current one last)."""
    last = bucket_of(now, policy.bucket_seconds)
    return range(last - policy.buckets + 1, last + 1)


def baseline_hours(now: float, policy: Policy) -> range:
    """Hour numbers the baseline reads: the `baseline_hours` full hours before the window's first."""
    first = bucket_of(window_buckets(now, policy).start * policy.bucket_seconds, HOUR)
    return range(first - policy.baseline_hours, first)


@dataclass(frozen=True)
class Counts:
    window: int
    baseline: float  # the pair's normal count over one window
    first_at: float | None = None  # the first complaint in the window (its own time when known)
    latest_at: float | None = None  # the latest complaint (its own time when known)


def counts_from(short: Mapping[int, int], hourly: Mapping[int, int], now: float, policy: Policy, *,
                first_times: Mapping[int, float] | None = None, latest_time: float | None = None) -> Counts:
    """Counts of one pair from its buckets (bucket number → count; missing = 0). `first_times`:
    bucket number → the time of its first complaint; `latest_time`: the latest complaint's time.
    Without them (or out of the bucket / window) first and latest are the start of the earliest
    and latest non-empty bucket (at most `bucket_seconds` early)."""
    buckets = window_buckets(now, policy)
    filled = [b for b in buckets if short.get(b, 0) > 0]
    window = sum(short.get(b, 0) for b in buckets)
    total = sum(hourly.get(h, 0) for h in baseline_hours(now, policy))
    baseline = total * policy.window_seconds / (policy.baseline_hours * HOUR) if policy.baseline_hours else 0.0
    if not filled:
        return Counts(window, round(baseline, 3))
    first: float = filled[0] * policy.bucket_seconds
    exact = (first_times or {}).get(filled[0])
    if exact is not None and bucket_of(exact, policy.bucket_seconds) == filled[0]:
        first = exact
    latest: float = filled[-1] * policy.bucket_seconds
    if latest_time is not None and latest <= latest_time <= now:
        latest = latest_time
    return Counts(window, round(baseline, 3), first, latest)


@dataclass
class WindowCounter:
    """One pair's buckets in memory: the same arithmetic as the Redis counters."""

    policy: Policy
    short: dict[int, int] = field(default_factory=dict)
    hourly: dict[int, int] = field(default_factory=dict)
    first: dict[int, float] = field(default_factory=dict)  # bucket → its first complaint's time
    latest: float | None = None

    def add(self, now: float, n: int = 1) -> None:
        b = bucket_of(now, self.policy.bucket_seconds)
        h = bucket_of(now, HOUR)
        self.short[b] = self.short.get(b, 0) + n
        self.hourly[h] = self.hourly.get(h, 0) + n
        self.first.setdefault(b, now)
        self.latest = now if self.latest is None else max(self.latest, now)

    def counts(self, now: float) -> Counts:
        return counts_from(self.short, self.hourly, now, self.policy, first_times=self.first,
                           latest_time=self.latest)


class Verdict(enum.StrEnum):
    RAISE = "raise"
    BELOW_MINIMUM = "below_minimum"
    BELOW_RATIO = "below_ratio"
    ACTIVE = "active"  # an incident is open for the pair already (detected or planned)
    COOLING_DOWN = "cooling_down"


def assess(counts: Counts, policy: Policy, *, active: bool = False, resolved_at: float | None = None,
           now: float = 0.0) -> Verdict:
    if active:
        return Verdict.ACTIVE
    if resolved_at is not None and now - resolved_at < policy.cooldown_seconds:
        return Verdict.COOLING_DOWN
    if counts.window < policy.min_count:
        return Verdict.BELOW_MINIMUM
    if counts.window < policy.ratio * counts.baseline:
        return Verdict.BELOW_RATIO
    return Verdict.RAISE


# ---------------------------------------------------------------------------------------------
# Lifecycle


class IncidentState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


ACTIVE_STATES = frozenset({IncidentState.OPEN, IncidentState.ACKNOWLEDGED})


class TransitionError(ValueError):
    """A change the incident's state does not allow (e.g. acknowledging a resolved incident)."""


@dataclass(frozen=True)
class Incident:
    id: str
    service: str
    area: str
    state: IncidentState
    opened_at: float
    opened_by: str  # "detector", "supervisor:<id>", "backoffice:<token>"
    area_names: Mapping[str, str] = field(default_factory=dict)
    planned: bool = False
    acknowledged_at: float | None = None
    resolved_at: float | None = None
    cause: str = ""
    expected_fix_at: float | None = None
    counts: Mapping[str, float | int | None] = field(default_factory=dict)  # at open: window, baseline, ...
    figures: Mapping[str, float | int | None] = field(default_factory=dict)  # at resolve
    revision: int = 1
    updated_at: float = 0.0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def incident_id(service: str, area: str, opened_at: float) -> str:
    """Deterministic: the same pair opened in the same second is the same incident."""
    return f"inc-{int(opened_at)}-{service}-{area}"[:120]


def open_incident(service: str, area: str, now: float, *, opened_by: str, counts: Counts | None = None,
                  area_names: Mapping[str, str] | None = None, planned: bool = False, cause: str = "",
                  expected_fix_at: float | None = None) -> Incident:
    data: dict[str, float | int | None] = {}
    if counts is not None:
        data = {"window": counts.window, "baseline": counts.baseline, "first_report_at": counts.first_at,
                "latest_report_at": counts.latest_at}
    return Incident(incident_id(service, area, now), service, area, IncidentState.OPEN, now, opened_by,
                    dict(area_names or {}), planned, cause=cause, expected_fix_at=expected_fix_at, counts=data,
                    updated_at=now)


def acknowledge(incident: Incident, now: float) -> Incident:
    if incident.state is IncidentState.RESOLVED:
        raise TransitionError("the incident is resolved")
    if incident.state is IncidentState.ACKNOWLEDGED:
        return incident
    return replace(incident, state=IncidentState.ACKNOWLEDGED, acknowledged_at=now,
                   revision=incident.revision + 1, updated_at=now)


_UNSET = object()


def update(incident: Incident, now: float, *, cause: str | None = None,
           expected_fix_at: float | object | None = _UNSET) -> Incident:
    if incident.state is IncidentState.RESOLVED:
        raise TransitionError("the incident is resolved")
    changes: dict[str, object] = {}
    if cause is not None and cause != incident.cause:
        changes["cause"] = cause
    if expected_fix_at is not _UNSET and expected_fix_at != incident.expected_fix_at:
        changes["expected_fix_at"] = expected_fix_at
    if not changes:
        return incident
    return replace(incident, **changes, revision=incident.revision + 1, updated_at=now)  # type: ignore[arg-type]


def resolve(incident: Incident, now: float, *, cause: str | None = None) -> Incident:
    if incident.state is IncidentState.RESOLVED:
        raise TransitionError("the incident is resolved already")
    return replace(incident, state=IncidentState.RESOLVED, resolved_at=now, cause=cause or incident.cause,
                   revision=incident.revision + 1, updated_at=now)


def figures(incident: Incident, *, absorbed: int, reached_agent: int, complaints: int,
            notices_scheduled: int, notices_refused: int = 0, sent_to_queue: int = 0, hung_up: int = 0,
            went_to_menu: int = 0, notices_delivered: int = 0) -> dict[str, float | int | None]:
    """What the archive keeps about a resolved incident: calls absorbed by the announcement
    (pressed 1, or heard it to its end and hung up), calls it sent to a queue and of those the
    ones an agent answered (`reached_agent`), calls that went on to the menu (another key), calls
    that hung up during it, complaints, time to detect (from the first complaint's own time) and
    to fix, notices scheduled / refused / delivered (heard, or sent by SMS: counted as they are,
    after the resolve)."""
    first = incident.counts.get("first_report_at")
    detect = round(incident.opened_at - float(first), 3) if first is not None and not incident.planned else None
    fix = round(incident.resolved_at - incident.opened_at, 3) if incident.resolved_at is not None else None
    return {"calls_absorbed": absorbed, "calls_sent_to_queue": sent_to_queue, "calls_reached_agent": reached_agent,
            "calls_went_to_menu": went_to_menu, "calls_hung_up_during_announcement": hung_up,
            "complaints": complaints,
            "time_to_detect_seconds": detect, "time_to_fix_seconds": fix,
            "notices_scheduled": notices_scheduled, "notices_refused": notices_refused,
            "notices_delivered": max(notices_delivered, int(incident.figures.get("notices_delivered") or 0))}


def unfinished(incident: Incident) -> bool:
    """Resolved, its notices and figures not done yet (a notice delivered before the archive only
    records `notices_delivered`)."""
    return incident.state is IncidentState.RESOLVED and "notices_scheduled" not in incident.figures


def with_delivered(incident: Incident, delivered: int, now: float) -> Incident:
    """The archive with `delivered` resolve notices delivered (never fewer than it says already)."""
    if int(incident.figures.get("notices_delivered") or 0) >= delivered:
        return incident
    return replace(incident, figures={**incident.figures, "notices_delivered": delivered},
                   revision=incident.revision + 1, updated_at=now)


# ---------------------------------------------------------------------------------------------
# Who hears about it


def matches(incident: Incident, area: str | None, services: Iterable[str] | None = None) -> bool:
    """An active incident for the caller's area, about a service they have (no list: any)."""
    if not incident.active or not area or incident.area != area:
        return False
    wanted = set(services or ())
    return not wanted or incident.service in wanted


def caller_services(attributes: Mapping[str, str] | None) -> tuple[str, ...]:
    """Services a customer's profile says they have (attribute `services`: comma-separated)."""
    raw = (attributes or {}).get("services")
    if not isinstance(raw, str):
        return ()
    return tuple(s for s in (p.strip() for p in raw.split(",")) if SERVICE_RE.match(s))


def _clock_text(at: float, zone: tzinfo) -> str:
    return datetime.fromtimestamp(at, zone).strftime("%H:%M")


def announcement_text(incident: Incident, policy: Policy, language: str, zone: tzinfo = UTC) -> str:
    """What a matching caller hears first, in their language."""
    service = policy.service_name(incident.service, language)
    area = incident.area_names.get(language) or incident.area_names.get("en") or incident.area
    fix = _clock_text(incident.expected_fix_at, zone) if incident.expected_fix_at else ""
    if language == "zh":
        text = f"我们已获悉{area}的{service}故障，正在抢修。"
        return text + (f"预计{fix}修复。" if fix else "")
    text = f"We know {service} is out in {area}; we are working on it."
    return text + (f" Expected fix {fix}." if fix else "")


OFFER_TEXT = {
    "en": "To be told when it is fixed, press 1. For anything else, press star. Or stay on the line for an agent.",
    "zh": "修复后通知您请按1；办理其他业务请按星号键；或请不要挂机，等待人工服务。",
}
SUBSCRIBED_TEXT = {
    "en": "Thank you. We will let you know when it is fixed. Goodbye.",
    "zh": "谢谢，修复后我们会通知您。再见。",
}
RESOLVED_TEXT = {
    "en": "Good news: {service} in {area} is working again. Thank you for your patience.",
    "zh": "{area}的{service}已恢复正常，感谢您的耐心等待。",
}


def resolved_text(incident: Incident, policy: Policy) -> dict[str, str]:
    """The notice text sent at resolve, per language."""
    out = {}
    for lang, template in RESOLVED_TEXT.items():
        area = incident.area_names.get(lang) or incident.area_names.get("en") or incident.area
        out[lang] = template.format(service=policy.service_name(incident.service, lang), area=area)
    return out


def mask_number(number: str) -> str:
    """'+8613904210000' → '+86139****0000': enough for the network team to see a spread."""
    if len(number) <= 7:
        return "*" * len(number)
    return number[:6] + "*" * (len(number) - 10) + number[-4:] if len(number) > 10 else \
        number[:3] + "*" * (len(number) - 5) + number[-2:]


# ---------------------------------------------------------------------------------------------
# Plain data (Redis JSON, the outbox, REST)


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _numbers(value: object) -> dict[str, float | int | None]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items()
            if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}


def to_dict(incident: Incident) -> dict[str, object]:
    return {"id": incident.id, "service": incident.service, "area": incident.area, "state": incident.state.value,
            "opened_at": incident.opened_at, "opened_by": incident.opened_by, "area_names": dict(incident.area_names),
            "planned": incident.planned, "acknowledged_at": incident.acknowledged_at,
            "resolved_at": incident.resolved_at, "cause": incident.cause, "expected_fix_at": incident.expected_fix_at,
            "counts": dict(incident.counts), "figures": dict(incident.figures), "revision": incident.revision,
            "updated_at": incident.updated_at}


def from_dict(d: Mapping[str, object]) -> Incident:
    """Raises ValueError/KeyError/TypeError on a malformed record."""
    names = d.get("area_names") or {}
    if not isinstance(names, Mapping):
        raise ValueError("area_names is not an object")
    return Incident(
        id=str(d["id"]), service=str(d["service"]), area=str(d["area"]), state=IncidentState(str(d["state"])),
        opened_at=float(d["opened_at"]), opened_by=str(d["opened_by"]),  # type: ignore[arg-type]
        area_names={str(k): str(v) for k, v in names.items()}, planned=bool(d.get("planned", False)),
        acknowledged_at=_opt_float(d.get("acknowledged_at")), resolved_at=_opt_float(d.get("resolved_at")),
        cause=str(d.get("cause") or ""), expected_fix_at=_opt_float(d.get("expected_fix_at")),
        counts=_numbers(d.get("counts")), figures=_numbers(d.get("figures")),
        revision=int(d.get("revision", 1)), updated_at=float(d.get("updated_at") or 0.0))  # type: ignore[arg-type]
