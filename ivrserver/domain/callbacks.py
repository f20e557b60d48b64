"""Scheduled and queued callbacks: when and whom to call, retries, calling hours, the state machine.

Pure: stdlib only (zoneinfo for the customer's IANA time zone), no clock reads — every function
that depends on time takes `now` (epoch seconds).

State machine::

    requested ─► scheduled ─► dialing ─► connected ─► done
        │            │  ▲         │
        │            │  └── retry_wait ◄┘   (busy / no answer / failure, attempts left)
        └────────────┴──► cancelled / failed (from requested, scheduled, retry_wait; failed also
                                              from dialing when attempts or time run out)

Calling hours: an instant is callable when it lies inside the day's window of the customer's
local clock, the window being company hours ∩ the customer's allowed hours (both local to the
customer). A window opens at the first instant the local clock reads `from` and closes at the
first instant after that it reads `until`. So on a spring-forward day a boundary that falls in
the skipped hour moves to the end of the gap, and on a fall-back day the repeated hour is not
opened twice.

Public holidays: with a country calendar in the policy (`working_days`, a table built outside
the domain), a day that is a public holiday in the customer's local date has no calling hours,
unless the customer's preferences say `holidays_ok`. Weekends are calling days as before.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivrserver.domain import phone
from ivrserver.domain.model import AgentState, AgentStatus, ContactPreferences, Tier
from ivrserver.domain.working_days import WorkingDays


class CallbackState(enum.StrEnum):
    REQUESTED = "requested"
    SCHEDULED = "scheduled"
    DIALING = "dialing"
    CONNECTED = "connected"
    RETRY_WAIT = "retry_wait"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CallbackMode(enum.StrEnum):
    AGENT_FIRST = "agent_first"  # ring the agent (with the pop), then dial the customer
    CUSTOMER_FIRST = "customer_first"  # notification: message first, "press 1 for an agent"


class AttemptOutcome(enum.StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    AGENT_UNAVAILABLE = "agent_unavailable"  # the agent leg did not answer: customer never rung
    UNKNOWN = "unknown"  # dialed, but the instance died before the outcome was known


TERMINAL_STATES = frozenset({CallbackState.DONE, CallbackState.FAILED, CallbackState.CANCELLED})
WAITING_STATES = frozenset({CallbackState.SCHEDULED, CallbackState.RETRY_WAIT})

TRANSITIONS: Mapping[CallbackState, frozenset[CallbackState]] = {
    CallbackState.REQUESTED: frozenset({CallbackState.SCHEDULED, CallbackState.CANCELLED,
                                        CallbackState.FAILED}),
    CallbackState.SCHEDULED: frozenset({CallbackState.SCHEDULED, CallbackState.DIALING,
                                        CallbackState.CANCELLED, CallbackState.FAILED}),
    CallbackState.DIALING: frozenset({CallbackState.CONNECTED, CallbackState.RETRY_WAIT,
                                      CallbackState.FAILED}),
    CallbackState.CONNECTED: frozenset({CallbackState.DONE}),
    CallbackState.RETRY_WAIT: frozenset({CallbackState.RETRY_WAIT, CallbackState.SCHEDULED,
                                         CallbackState.DIALING, CallbackState.CANCELLED,
                                         CallbackState.FAILED}),
    CallbackState.DONE: frozenset(),
    CallbackState.FAILED: frozenset(),
    CallbackState.CANCELLED: frozenset(),
}


class CallbackError(ValueError):
    """Base of every callback policy error."""


class InvalidTransition(CallbackError):
    def __init__(self, callback_id: str, from_state: CallbackState, to_state: CallbackState) -> None:
        allowed = sorted(s.value for s in TRANSITIONS[from_state])
        super().__init__(
            f"callback {callback_id}: cannot go from {from_state.value} to {to_state.value}"
            f" (allowed from {from_state.value}: {', '.join(allowed) or 'none, it is final'})")
        self.callback_id = callback_id
        self.from_state = from_state
        self.to_state = to_state


class RequestInvalid(CallbackError):
    """A callback request or reschedule failed validation; `errors` maps field → what is wrong."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("invalid callback request: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = dict(errors)


@dataclass(frozen=True)
class QueuePlace:
    """Virtual hold: the place a caller kept in a queue instead of waiting on the line."""

    queue: str
    joined_at: float
    priority: int = 0


@dataclass(frozen=True)
class Attempt:
    number: int
    started_at: float
    agent_id: str | None = None
    outcome: AttemptOutcome | None = None  # None while the attempt is being dialed
    ended_at: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class Callback:
    id: str
    customer_id: str
    number: str  # phone.normalise form: E.164 for valid numbers, else as dialled
    earliest: float  # the due window: attempts start within [earliest, latest]
    latest: float
    created_at: float
    tier: str = Tier.STANDARD.value
    preferred_agent: str | None = None
    reason: str = ""
    case_id: str | None = None
    context: str = ""  # what the agent should see on the pop
    mode: CallbackMode = CallbackMode.AGENT_FIRST
    state: CallbackState = CallbackState.REQUESTED
    attempts: int = 0  # dial attempts started; attempt N dials with ChannelId "<id>-<N>"
    history: tuple[Attempt, ...] = ()
    due_at: float | None = None  # when the next attempt is due (scheduled / retry_wait)
    final_reason: str = ""
    preferences: ContactPreferences = field(default_factory=ContactPreferences)
    queue_place: QueuePlace | None = None
    prompt: str = ""  # customer-first: the recorded message (a sound file name; 'a&b' plays a, then b)
    # a notice call: "press 1 to talk to an agent" and "goodbye" in the message's language (sound
    # file names); "" = Asterisk's stock English ones
    press_prompt: str = ""
    bye_prompt: str = ""
    notice: str = ""  # a proactive notice call (services/notices.py): its kinds, comma-separated; "" = not one
    requested_by: str | None = None
    updated_at: float = 0.0
    version: int = 0  # bumped on every change; the store compares it on unleased updates

    @property
    def customer_attempts(self) -> int:
        """Attempts that reached the customer's line (agent-leg failures do not count)."""
        return sum(1 for a in self.history
                   if a.outcome is not None and a.outcome is not AttemptOutcome.AGENT_UNAVAILABLE)


@dataclass(frozen=True)
class CallbackPolicy:
    calling_from: str = "08:00"  # company hours, in the customer's local time
    calling_until: str = "21:00"
    max_attempts: int = 3  # attempts that reached the customer's line
    max_dials: int = 10  # every dial, agent-leg failures included (bounds the agent retries)
    retry_base: Mapping[AttemptOutcome, float] = field(default_factory=lambda: {
        AttemptOutcome.BUSY: 300.0,
        AttemptOutcome.NO_ANSWER: 900.0,
        AttemptOutcome.FAILED: 600.0,
        AttemptOutcome.AGENT_UNAVAILABLE: 30.0,
    })
    backoff_factor: float = 2.0
    max_retry_delay: float = 3600.0
    grace_seconds: float = 120.0  # wait this long past due for the preferred agent
    agent_recheck_seconds: float = 5.0
    virtual_hold_recheck_seconds: float = 2.0
    default_window_seconds: float = 7200.0  # a single time T means the window [T, T + this]
    virtual_hold_window_seconds: float = 4 * 3600.0
    max_horizon_seconds: float = 30 * 86400.0
    max_window_seconds: float = 7 * 86400.0
    past_tolerance_seconds: float = 60.0  # "now" from a client whose clock is a little behind
    max_reason: int = 500
    max_context: int = 2000
    phone_region: str = ""  # how national numbers in requests are read (phone.normalise)
    working_days: WorkingDays | None = None  # public holidays: no calls unless prefs.holidays_ok


# ----------------------------------------------------------------------------- transitions

def transition(cb: Callback, to: CallbackState, now: float, **changes: Any) -> Callback:
    """`cb` moved to `to` (with other field changes); raises InvalidTransition when not allowed."""
    if to not in TRANSITIONS[cb.state]:
        raise InvalidTransition(cb.id, cb.state, to)
    return dataclasses.replace(cb, state=to, updated_at=now, version=cb.version + 1, **changes)


def fail(cb: Callback, reason: str, now: float) -> Callback:
    return transition(cb, CallbackState.FAILED, now, final_reason=reason, due_at=None)


def cancel(cb: Callback, now: float, reason: str = "cancelled") -> Callback:
    return transition(cb, CallbackState.CANCELLED, now, final_reason=reason, due_at=None)


def finish(cb: Callback, now: float, disposition: str = "") -> Callback:
    """The bridged call has ended: connected → done."""
    return transition(cb, CallbackState.DONE, now, final_reason=disposition or "completed")


def wait_until(cb: Callback, at: float, now: float) -> Callback:
    """Keep waiting (same state) with the next look at `at`."""
    return transition(cb, cb.state, now, due_at=at)


def start_attempt(cb: Callback, now: float, agent_id: str | None) -> Callback:
    """scheduled / retry_wait → dialing, with a new attempt N = attempts + 1 in the history."""
    n = cb.attempts + 1
    return transition(cb, CallbackState.DIALING, now, attempts=n, due_at=None,
                      history=(*cb.history, Attempt(number=n, started_at=now, agent_id=agent_id)))


# ----------------------------------------------------------------------------- calling hours

_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def parse_hhmm(value: str) -> tuple[int, int]:
    m = _HHMM.match(value)
    if not m or (m.group(1) == "24" and m.group(2) != "00"):
        raise ValueError(f"expected HH:MM between 00:00 and 24:00, got {value!r}")
    return int(m.group(1)), int(m.group(2))


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; ValueError with a precise message when unknown."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _wall(t: float, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(t, tz).replace(tzinfo=None)


def first_instant_at(day: date, hhmm: tuple[int, int], tz: ZoneInfo) -> float:
    """The first instant the local clock of `tz` reads `hhmm` on `day` (24:00 = next day 00:00).

    Ambiguous (fall-back) times give the first occurrence; a time inside a spring-forward gap
    gives the end of the gap (the first instant whose local time is later).
    """
    hour, minute = hhmm
    if hour == 24:
        day, hour = day + timedelta(days=1), 0
    naive = datetime(day.year, day.month, day.day, hour, minute)
    e0 = naive.replace(tzinfo=tz, fold=0).timestamp()
    e1 = naive.replace(tzinfo=tz, fold=1).timestamp()
    lo, hi = min(e0, e1), max(e0, e1)
    if _wall(lo, tz) == naive:
        return lo
    # In a gap: the clock jumps over `naive` somewhere in (lo, hi]; find the jump to the second.
    lo_i, hi_i = math.floor(lo), math.ceil(hi)
    while hi_i - lo_i > 1:
        mid = (lo_i + hi_i) // 2
        if _wall(mid, tz) >= naive:
            hi_i = mid
        else:
            lo_i = mid
    return float(hi_i)


@dataclass(frozen=True)
class CallingWindow:
    opens: float
    closes: float


def allowed_hours(prefs: ContactPreferences, policy: CallbackPolicy) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Company hours ∩ the customer's allowed hours, or None when they do not overlap."""
    start = max(parse_hhmm(policy.calling_from), parse_hhmm(prefs.allowed_from))
    end = min(parse_hhmm(policy.calling_until), parse_hhmm(prefs.allowed_until))
    return (start, end) if start < end else None


def window_on(day: date, hours: tuple[tuple[int, int], tuple[int, int]], tz: ZoneInfo) -> CallingWindow | None:
    opens = first_instant_at(day, hours[0], tz)
    closes = first_instant_at(day, hours[1], tz)
    return CallingWindow(opens, closes) if opens < closes else None


def is_calling_day(day: date, prefs: ContactPreferences, policy: CallbackPolicy) -> bool:
    """False on a public holiday of the policy's calendar (the customer's local date), unless the
    customer allows calls on holidays."""
    days = policy.working_days
    return days is None or prefs.holidays_ok or not days.is_holiday(day)


# The longest run of public holidays a window search steps over (China's Spring Festival and
# National Day weeks are 8 days, the weekends around them included).
_MAX_HOLIDAY_RUN = 16


def next_allowed_time(t: float, prefs: ContactPreferences, policy: CallbackPolicy) -> float | None:
    """The earliest instant ≥ t inside the calling hours, or None if there are none (no overlap)."""
    hours = allowed_hours(prefs, policy)
    if hours is None:
        return None
    tz = zone(prefs.timezone)
    today = datetime.fromtimestamp(t, tz).date()
    for offset in range(-1, 9 + _MAX_HOLIDAY_RUN):
        day = today + timedelta(days=offset)
        if not is_calling_day(day, prefs, policy):
            continue
        w = window_on(day, hours, tz)
        if w is not None and t < w.closes:
            return max(t, w.opens)
    return None


def is_callable_at(t: float, prefs: ContactPreferences, policy: CallbackPolicy) -> bool:
    return next_allowed_time(t, prefs, policy) == t


# ----------------------------------------------------------------------------- next attempt

@dataclass(frozen=True)
class PlaceNow:
    pass


@dataclass(frozen=True)
class WaitUntil:
    at: float
    reason: str


@dataclass(frozen=True)
class GiveUp:
    reason: str  # do_not_call | max_attempts | max_dials | window_closed | no_calling_hours


Decision = PlaceNow | WaitUntil | GiveUp


def plan_attempt(cb: Callback, prefs: ContactPreferences, policy: CallbackPolicy, now: float) -> Decision:
    """What to do with a due callback now: dial, wait for the calling window, or give up."""
    if cb.state not in WAITING_STATES:
        raise InvalidTransition(cb.id, cb.state, CallbackState.DIALING)
    if prefs.do_not_call:
        return GiveUp("do_not_call")
    if cb.customer_attempts >= policy.max_attempts:
        return GiveUp("max_attempts")
    if cb.attempts >= policy.max_dials:
        return GiveUp("max_dials")
    start = max(now, cb.due_at if cb.due_at is not None else cb.earliest, cb.earliest)
    t = next_allowed_time(start, prefs, policy)
    if t is None:
        return GiveUp("no_calling_hours")
    if t > cb.latest:
        return GiveUp("window_closed")
    if t > now:
        return WaitUntil(t, "outside calling hours" if t > start else "not due yet")
    return PlaceNow()


def retry_delay(cb: Callback, outcome: AttemptOutcome, policy: CallbackPolicy) -> float:
    """Backoff: base(outcome) × factor^(k-1), k = attempts so far with this outcome; capped."""
    k = sum(1 for a in cb.history if a.outcome is outcome)
    base = policy.retry_base.get(outcome, policy.retry_base.get(AttemptOutcome.FAILED, 600.0))
    return min(policy.max_retry_delay, base * policy.backoff_factor ** max(0, k - 1))


def after_attempt(cb: Callback, outcome: AttemptOutcome, prefs: ContactPreferences,
                  policy: CallbackPolicy, now: float, detail: str = "") -> Callback:
    """Record the outcome of the attempt being dialed and move on: connected, retry_wait or failed."""
    if cb.state is not CallbackState.DIALING or not cb.history:
        raise InvalidTransition(cb.id, cb.state, CallbackState.RETRY_WAIT)
    last = dataclasses.replace(cb.history[-1], outcome=outcome, ended_at=now, detail=detail)
    cb = dataclasses.replace(cb, history=(*cb.history[:-1], last))
    if outcome is AttemptOutcome.ANSWERED:
        return transition(cb, CallbackState.CONNECTED, now)
    if outcome is AttemptOutcome.UNKNOWN:
        # Never dial again after an attempt whose call may have happened: a second call would
        # be the double dial this feature exists to prevent. The agent sees the final state.
        return fail(cb, "outcome_unknown", now)
    if prefs.do_not_call:
        return fail(cb, "do_not_call", now)
    if cb.customer_attempts >= policy.max_attempts:
        return fail(cb, "max_attempts", now)
    if cb.attempts >= policy.max_dials:
        return fail(cb, "max_dials", now)
    t = next_allowed_time(now + retry_delay(cb, outcome, policy), prefs, policy)
    if t is None:
        return fail(cb, "no_calling_hours", now)
    if t > cb.latest:
        return fail(cb, "window_closed", now)
    return transition(cb, CallbackState.RETRY_WAIT, now, due_at=t)


# ----------------------------------------------------------------------------- takeover of a dead dial

# What the instances' AMI observers recorded of one attempt's channel (`<id>-<attempt>`):
#   "up"                      Asterisk created the channel (Newchannel): the call happened
#   "originate:<outcome>"     its OriginateResponse: the originated leg's outcome (customer-first:
#                             the customer; agent-first: the agent, the customer rung only after)
#   "result:<outcome>"        agent-first: the dialplan's CallbackResult, the customer leg, call over
# where <outcome> is answered | busy | no_answer | failed.
SEEN_UP = "up"
_SEEN_OUTCOMES = {"answered": AttemptOutcome.ANSWERED, "busy": AttemptOutcome.BUSY,
                  "no_answer": AttemptOutcome.NO_ANSWER, "failed": AttemptOutcome.FAILED}


class TakeoverAction(enum.StrEnum):
    RECORD = "record"  # the observers saw the call's outcome: write it as the dead holder would have
    REDIAL = "redial"  # the observers listened the whole time and saw no channel: never dialed
    UNKNOWN = "unknown"  # the call may have happened: never dial again (after_attempt UNKNOWN)


@dataclass(frozen=True)
class ObserverLink:
    """One instance's AMI observer: its link has been up, with no event lost, since `since`, and
    every event it received until `through` is recorded (epoch seconds, its own clock)."""

    instance: str
    since: float
    through: float


@dataclass(frozen=True)
class Takeover:
    action: TakeoverAction
    outcome: AttemptOutcome | None = None  # RECORD: the attempt's outcome
    ended: bool = False  # RECORD: the call is over (agent-first result)
    detail: str = ""


def marked_at(holder: str) -> float | None:
    """When a placed marker was taken, from its holder text "<instance> <token> <epoch>"."""
    _, _, tail = holder.rpartition(" ")
    try:
        t = float(tail)
    except ValueError:
        return None
    return t if math.isfinite(t) else None


def observed_outcome(mode: CallbackMode, seen: str) -> tuple[AttemptOutcome, bool] | None:
    """The attempt's outcome from an observation (and whether the call is over); None when the
    observation shows the call happened but not how it ended."""
    kind, _, word = seen.partition(":")
    outcome = _SEEN_OUTCOMES.get(word)
    if outcome is None:
        return None
    if kind == "result" and mode is CallbackMode.AGENT_FIRST:
        return outcome, True
    if kind == "originate":
        if mode is CallbackMode.CUSTOMER_FIRST:
            return outcome, False
        if outcome is not AttemptOutcome.ANSWERED:  # the agent's phone failed: the customer was never rung
            return AttemptOutcome.AGENT_UNAVAILABLE, False
    return None


def takeover(mode: CallbackMode, holder: str, seen: str | None, links: Iterable[ObserverLink], now: float, *,
             margin: float, fresh_within: float) -> Takeover:
    """What the next lease holder does with an attempt whose placed marker `holder` took and
    whose outcome was never written (the holder died).

    - observed with an outcome → RECORD it; observed without one → UNKNOWN (the call happened);
    - not observed → REDIAL only if some instance's observer has listened without a gap since
      `margin` before the marker was taken and has recorded everything up to `fresh_within`
      before `now` — the dead holder sent its Originate (if ever) before its lease ran out, so
      the channel would have been seen; otherwise UNKNOWN, as a call may have gone unseen.
    `margin` covers clock skew between instances and Asterisk's event delay.
    """
    if seen is not None:
        found = observed_outcome(mode, seen)
        if found is None:
            return Takeover(TakeoverAction.UNKNOWN, detail=f"dialed by {holder}; the call was seen ({seen}) "
                                                            f"but that instance died before the outcome")
        return Takeover(TakeoverAction.RECORD, outcome=found[0], ended=found[1],
                        detail=f"dialed by {holder}; outcome {seen} observed on AMI")
    at = marked_at(holder)
    if at is not None:
        for link in links:
            if link.since <= at - margin and link.through >= now - fresh_within:
                return Takeover(TakeoverAction.REDIAL, detail=f"marked by {holder}, never dialed "
                                                               f"(no channel seen by {link.instance}); re-dialed")
    return Takeover(TakeoverAction.UNKNOWN, detail=f"dialed by {holder}; that instance died before the outcome "
                                                   f"(no observer listened throughout)")


# ----------------------------------------------------------------------------- agents

@dataclass(frozen=True)
class AgentChoice:
    agent_id: str | None  # None: nobody to ring yet, look again later
    reason: str


def longest_idle_first(statuses: Iterable[AgentStatus], members: Iterable[str] | None = None) -> list[str]:
    """Ready agents (optionally only `members`), the one ready the longest first."""
    allowed = None if members is None else set(members)
    ready = [s for s in statuses
             if s.state is AgentState.READY and (allowed is None or s.agent_id in allowed)]
    return [s.agent_id for s in sorted(ready, key=lambda s: (s.since, s.agent_id))]


def choose_agent(preferred: str | None, preferred_free: bool, free_longest_idle_first: Sequence[str],
                 due: float, now: float, grace_seconds: float) -> AgentChoice:
    """The preferred agent when free; until due + grace, wait for them; then the longest-idle
    free agent of the tier."""
    if preferred and preferred_free:
        return AgentChoice(preferred, "preferred agent")
    if preferred and now < due + grace_seconds:
        return AgentChoice(None, f"waiting for preferred agent {preferred} until due + grace")
    others = [a for a in free_longest_idle_first if a != preferred]
    if others:
        return AgentChoice(others[0], "longest-idle free agent of the tier")
    return AgentChoice(None, "no free agent of the tier")


# ----------------------------------------------------------------------------- virtual hold

@dataclass(frozen=True)
class QueueEntry:
    """A live caller waiting in a queue (from QueueCallerJoin: priority and join time)."""

    entry_id: str
    joined_at: float
    priority: int = 0


def _queue_key(priority: int, joined_at: float, entry_id: str) -> tuple[int, float, str]:
    # Asterisk's queue order: higher priority first, then who joined first.
    return (-priority, joined_at, entry_id)


def callers_ahead(place: QueuePlace, callback_id: str, live: Iterable[QueueEntry]) -> int:
    mine = _queue_key(place.priority, place.joined_at, callback_id)
    return sum(1 for e in live if _queue_key(e.priority, e.joined_at, e.entry_id) < mine)


def virtual_hold_ready(place: QueuePlace, callback_id: str, live: Iterable[QueueEntry], free_agents: int) -> bool:
    """Release the kept place only when the caller would have reached an agent by now: fewer live
    callers ahead of it than free agents. Live callers who joined later never hold it back, and
    it never jumps ahead of those who joined earlier."""
    return free_agents > callers_ahead(place, callback_id, live)


# ----------------------------------------------------------------------------- requests

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
_PROMPT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_/-]{0,127}$")
_RELATIVE = re.compile(r"^\+(\d{1,7})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FIELDS = frozenset({"customer_id", "number", "at", "earliest", "latest", "preferred_agent", "tier",
                     "reason", "case_id", "context", "mode", "timezone", "allowed_from",
                     "allowed_until", "queue", "joined_at", "priority", "prompt"})


@dataclass(frozen=True)
class CallbackRequest:
    customer_id: str
    number: str
    earliest: float
    latest: float
    tier: str = Tier.STANDARD.value
    preferred_agent: str | None = None
    reason: str = ""
    case_id: str | None = None
    context: str = ""
    mode: CallbackMode = CallbackMode.AGENT_FIRST
    timezone: str | None = None
    allowed_from: str | None = None
    allowed_until: str | None = None
    queue_place: QueuePlace | None = None
    prompt: str = ""


def normalise_number(raw: object, region: str = "") -> str:
    """The number as identification stores it (`phone.normalise`: E.164 for valid numbers, service
    codes and extensions as dialled), so a callback's number matches the customer's."""
    if not isinstance(raw, str):
        raise ValueError("expected a phone number as text")
    if phone.is_anonymous(raw):
        raise ValueError("empty or withheld phone number")
    try:
        return phone.normalise(raw, region)
    except phone.InvalidPhone as exc:
        raise ValueError(f"not a phone number: {exc}") from None


def parse_time(raw: object, now: float) -> float:
    """Epoch seconds, '+90m' / '+2h' / '+1d' relative to now, or ISO 8601 with a UTC offset."""
    if isinstance(raw, bool):
        raise ValueError("expected a time, got a boolean")
    if isinstance(raw, (int, float)):
        value = float(raw)
    elif isinstance(raw, str):
        m = _RELATIVE.match(raw.strip())
        if m:
            return now + int(m.group(1)) * _UNITS[m.group(2)]
        try:
            dt = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise ValueError(f"expected epoch seconds, '+30m'-style or ISO 8601 time, got {raw!r}") from None
        if dt.tzinfo is None:
            raise ValueError(f"ISO time needs a UTC offset (e.g. +08:00 or Z), got {raw!r}")
        value = dt.timestamp()
    else:
        raise ValueError(f"expected a time, got {type(raw).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a valid time: {raw!r}")
    return value


def _text(raw: object, limit: int, multiline: bool) -> str:
    if not isinstance(raw, str):
        raise ValueError("expected text")
    if len(raw) > limit:
        raise ValueError(f"at most {limit} characters, got {len(raw)}")
    allowed = "\n\t" if multiline else ""
    bad = [c for c in raw if (ord(c) < 32 and c not in allowed) or ord(c) == 127]
    if bad:
        raise ValueError(f"control character {bad[0]!r} is not allowed")
    return raw


def _ident(raw: object) -> str:
    if not isinstance(raw, str) or not _ID.match(raw):
        raise ValueError(f"expected 1-64 letters, digits or _.:@- (starting with a letter or digit), got {raw!r}")
    return raw


def validate_window(raw: Mapping[str, object], now: float, policy: CallbackPolicy,
                    errors: dict[str, str], default_seconds: float | None = None) -> tuple[float, float] | None:
    """`at` or `earliest` (+ optional `latest`): a window in the future within the horizon."""
    has_at = raw.get("at") is not None
    has_window = raw.get("earliest") is not None or raw.get("latest") is not None
    if has_at and has_window:
        errors["at"] = "give either 'at' or 'earliest'/'latest', not both"
        return None
    if not has_at and not has_window:
        errors["at"] = "required: 'at' or 'earliest'/'latest'"
        return None
    span = policy.default_window_seconds if default_seconds is None else default_seconds
    try:
        if has_at:
            earliest = parse_time(raw["at"], now)
            latest = earliest + span
        else:
            if raw.get("earliest") is None:
                errors["earliest"] = "required with 'latest'"
                return None
            earliest = parse_time(raw["earliest"], now)
            latest = parse_time(raw["latest"], now) if raw.get("latest") is not None else earliest + span
    except ValueError as exc:
        errors["at" if has_at else "earliest"] = str(exc)
        return None
    field_name = "at" if has_at else "earliest"
    if earliest < now - policy.past_tolerance_seconds:
        errors[field_name] = f"is in the past ({earliest:.0f} < now {now:.0f})"
        return None
    earliest = max(earliest, now)
    if earliest > now + policy.max_horizon_seconds:
        errors[field_name] = f"more than {policy.max_horizon_seconds / 86400:g} days ahead"
        return None
    if latest <= earliest:
        errors["latest"] = "must be after earliest"
        return None
    if latest - earliest > policy.max_window_seconds:
        errors["latest"] = f"window longer than {policy.max_window_seconds / 86400:g} days"
        return None
    return earliest, latest


def validate_request(raw: Mapping[str, object], now: float, policy: CallbackPolicy) -> CallbackRequest:
    """Check a request from REST / CLI / IVR (hostile input); RequestInvalid lists every error."""
    errors: dict[str, str] = {}
    unknown = sorted(k for k in raw if k not in _FIELDS)
    if unknown:
        errors["body"] = f"unknown field(s): {', '.join(map(str, unknown))}"

    def check(name: str, fn: Any, default: Any = None, required: bool = False) -> Any:
        value = raw.get(name)
        if value is None or value == "":
            if required:
                errors[name] = "required"
            return default
        try:
            return fn(value)
        except ValueError as exc:
            errors[name] = str(exc)
            return default

    customer_id = check("customer_id", _ident, required=True)
    number = check("number", lambda v: normalise_number(v, policy.phone_region), required=True)
    preferred = check("preferred_agent", _ident)
    case_id = check("case_id", _ident)
    tier = check("tier", lambda v: Tier(v).value if isinstance(v, str) and v in set(Tier) else _bad(
        f"one of {', '.join(t.value for t in Tier)}, got {v!r}"), Tier.STANDARD.value)
    mode = check("mode", lambda v: CallbackMode(v) if isinstance(v, str) and v in set(CallbackMode) else _bad(
        f"one of {', '.join(m.value for m in CallbackMode)}, got {v!r}"), CallbackMode.AGENT_FIRST)
    reason = check("reason", lambda v: _text(v, policy.max_reason, multiline=False), "")
    context = check("context", lambda v: _text(v, policy.max_context, multiline=True), "")
    prompt = check("prompt", lambda v: v if isinstance(v, str) and _PROMPT.match(v) else _bad(
        f"a sound file name (letters, digits, _ - /), got {v!r}"), "")
    timezone = check("timezone", lambda v: zone(v).key if isinstance(v, str) else _bad("expected text"))
    allowed_from = check("allowed_from", _hhmm_text)
    allowed_until = check("allowed_until", _hhmm_text)
    if allowed_from and allowed_until and parse_hhmm(allowed_from) >= parse_hhmm(allowed_until):
        errors["allowed_until"] = f"must be after allowed_from ({allowed_from})"

    queue_place = None
    if raw.get("queue") is not None:
        queue = check("queue", _ident)
        joined = check("joined_at", lambda v: parse_time(v, now), required=True)
        priority = check("priority", _int, 0)
        if queue and joined is not None:
            if joined > now + policy.past_tolerance_seconds:
                errors["joined_at"] = "is in the future"
            queue_place = QueuePlace(queue=queue, joined_at=joined, priority=priority)
        window = validate_window(raw if raw.get("at") or raw.get("earliest") else {**raw, "at": now},
                                 now, policy, errors, policy.virtual_hold_window_seconds)
    else:
        window = validate_window(raw, now, policy, errors)
    if errors or window is None:
        raise RequestInvalid(errors or {"at": "invalid window"})
    return CallbackRequest(
        customer_id=customer_id, number=number, earliest=window[0], latest=window[1], tier=tier,
        preferred_agent=preferred, reason=reason, case_id=case_id, context=context, mode=mode,
        timezone=timezone, allowed_from=allowed_from, allowed_until=allowed_until,
        queue_place=queue_place, prompt=prompt)


def _bad(message: str) -> Any:
    raise ValueError(message)


def _hhmm_text(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError("expected HH:MM text")
    parse_hhmm(v)
    return v


def _int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError("expected a whole number")
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"expected a whole number, got {v!r}") from None
    if not -1000 <= n <= 1000:
        raise ValueError("expected -1000..1000")
    return n


def merged_preferences(req: CallbackRequest, profile: ContactPreferences | None) -> ContactPreferences:
    """The customer's profile preferences, with time fields the request gives taking precedence;
    do-not-call and calls on public holidays always come from the profile."""
    base = profile or ContactPreferences()
    return ContactPreferences(
        timezone=req.timezone or base.timezone,
        allowed_from=req.allowed_from or base.allowed_from,
        allowed_until=req.allowed_until or base.allowed_until,
        do_not_call=base.do_not_call,
        holidays_ok=base.holidays_ok,
    )


def new_callback(req: CallbackRequest, callback_id: str, now: float, prefs: ContactPreferences,
                 requested_by: str | None = None) -> Callback:
    return Callback(
        id=callback_id, customer_id=req.customer_id, number=req.number, earliest=req.earliest,
        latest=req.latest, created_at=now, tier=req.tier, preferred_agent=req.preferred_agent,
        reason=req.reason, case_id=req.case_id, context=req.context, mode=req.mode,
        preferences=prefs, queue_place=req.queue_place, prompt=req.prompt,
        requested_by=requested_by, updated_at=now)


def schedule(cb: Callback, policy: CallbackPolicy, now: float) -> Callback:
    """requested (or a reschedule) → scheduled at the first callable instant of the window.

    Raises RequestInvalid when the customer must not be called or the window holds no calling hours.
    """
    prefs = cb.preferences
    if prefs.do_not_call:
        raise RequestInvalid({"customer_id": f"customer {cb.customer_id} is on the do-not-call list"})
    hours = allowed_hours(prefs, policy)
    if hours is None:
        raise RequestInvalid({"allowed_from": (
            f"customer hours {prefs.allowed_from}-{prefs.allowed_until} do not overlap company hours "
            f"{policy.calling_from}-{policy.calling_until}")})
    t = next_allowed_time(max(now, cb.earliest), prefs, policy)
    if t is None or t > cb.latest:
        holidays = "" if policy.working_days is None or prefs.holidays_ok else (
            f", not on public holidays of {policy.working_days.describe()}")
        raise RequestInvalid({"latest": (
            f"no calling hours in the window (allowed {max(policy.calling_from, prefs.allowed_from)}-"
            f"{min(policy.calling_until, prefs.allowed_until)} {prefs.timezone}{holidays}); widen the window")})
    return transition(cb, CallbackState.SCHEDULED, now, due_at=t)


def reschedule(cb: Callback, earliest: float, latest: float, policy: CallbackPolicy, now: float) -> Callback:
    """A new window from the agent / API: scheduled again (not from dialing, connected or final)."""
    if CallbackState.SCHEDULED not in TRANSITIONS[cb.state]:
        raise InvalidTransition(cb.id, cb.state, CallbackState.SCHEDULED)
    moved = dataclasses.replace(cb, earliest=earliest, latest=latest)
    return schedule(moved, policy, now)


# ----------------------------------------------------------------------------- JSON form

def to_dict(cb: Callback) -> dict[str, Any]:
    d = dataclasses.asdict(cb)
    d["mode"] = cb.mode.value
    d["state"] = cb.state.value
    d["history"] = [{**dataclasses.asdict(a), "outcome": a.outcome.value if a.outcome else None}
                    for a in cb.history]
    return d


def from_dict(d: Mapping[str, Any]) -> Callback:
    prefs = ContactPreferences(**d.get("preferences") or {})
    qp = d.get("queue_place")
    history = tuple(
        Attempt(number=int(a["number"]), started_at=float(a["started_at"]), agent_id=a.get("agent_id"),
                outcome=AttemptOutcome(a["outcome"]) if a.get("outcome") else None,
                ended_at=a.get("ended_at"), detail=a.get("detail", ""))
        for a in d.get("history") or ())
    fields = {f.name for f in dataclasses.fields(Callback)}
    plain = {k: v for k, v in d.items()
             if k in fields and k not in ("preferences", "queue_place", "history", "mode", "state")}
    return Callback(**plain, preferences=prefs, queue_place=QueuePlace(**qp) if qp else None,
                    history=history, mode=CallbackMode(d.get("mode", CallbackMode.AGENT_FIRST.value)),
                    state=CallbackState(d["state"]))
