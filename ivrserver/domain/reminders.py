"""Reminders from data (issue 18 §4): which notice a customer's attributes or a posted event call
for, when, and with what text. Pure: the time is passed in (`now`), nothing is read or written.

Two kinds of rule (reminders.yaml, validated by files/reminders.py):
- an attribute rule: a date attribute of the profile (`card_expires: 2027-01-31`, YYYY-MM-DD)
  calls for a notice `days_before` days before that date, at `at` o'clock of the customer's time
  zone, moved into their allowed hours; already past that moment but before the date: as soon as
  allowed; the date itself passed: nothing. The notice is moot (expires) when the date ends.
- an event rule: a posted event (`roaming_started`, with the event's own id) calls for a notice as
  soon as the customer's hours allow, moot `valid_hours` after the event.

Each rule fires once per (customer, rule, attribute value or event id): `reminder_key` is the
notice's idempotency key. When the attribute changes (a card renewed: a new date), the notice for
the old value is cancelled before it dials and one for the new value is scheduled (`attribute_step`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from ivrserver.domain.callbacks import first_instant_at, parse_hhmm, zone
from ivrserver.domain.model import ContactPreferences, Customer

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # rule, event and notice-kind names
EVENT_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # a posted event's own id
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CHANNELS = ("call", "sms", "auto")
LANGUAGES = ("en", "zh")
PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")
# What a rule's text may name: {date} the attribute's date in the text's language, {days} the
# rule's days_before, {name} the customer's name.
ATTRIBUTE_PLACEHOLDERS = ("date", "days", "name")
EVENT_PLACEHOLDERS = ("name",)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")


@dataclass(frozen=True)
class AttributeRule:
    name: str
    attribute: str
    days_before: int
    at: tuple[int, int]  # local time of day (HH, MM)
    kind: str  # the notice's consent kind, e.g. "card_expiry"
    channel: str  # call | sms | auto
    text: Mapping[str, str]  # language → template


@dataclass(frozen=True)
class EventRule:
    name: str
    event: str
    kind: str
    channel: str
    text: Mapping[str, str]
    valid_hours: int  # the notice is moot this long after the event


@dataclass(frozen=True)
class Rules:
    attributes: tuple[AttributeRule, ...] = ()
    events: tuple[EventRule, ...] = ()

    def event_names(self) -> tuple[str, ...]:
        """Every event a rule reacts to, sorted (what a posted event may be called)."""
        return tuple(sorted({r.event for r in self.events}))

    def for_event(self, event: str) -> tuple[EventRule, ...]:
        return tuple(r for r in self.events if r.event == event)


@dataclass(frozen=True)
class Reminder:
    """One notice to schedule (the service turns it into a NoticeRequest)."""

    key: str
    rule: str
    customer_id: str
    value: str  # the attribute's value or the event's id
    kind: str
    channel: str
    text: Mapping[str, str]
    not_before: float
    expires_at: float


@dataclass(frozen=True)
class Skipped:
    """No notice: `why` is absent (no such attribute), invalid (not a date), past (too late) or
    later (due beyond the scanner's horizon: a later walk schedules it)."""

    rule: str
    value: str | None
    why: str


@dataclass(frozen=True)
class Step:
    """What to do for one (customer, attribute rule) given the value last handled:
    cancel the notice of `cancel` (a key), schedule `schedule`, then remember `handled`
    (None: forget the rule for this customer)."""

    cancel: str | None
    schedule: Reminder | None
    handled: str | None
    skipped: Skipped | None = field(default=None)


MAX_KEY = 200  # the notice service's longest key


def reminder_key(rule: str, customer_id: str, value: str) -> str:
    """The notice's idempotency key: one notice per (rule, customer, value). A value that would
    make the key longer than MAX_KEY (a long event id) is replaced by its SHA-256."""
    key = f"reminder:{rule}:{customer_id}:{value}"
    if len(key) <= MAX_KEY:
        return key
    return f"reminder:{rule}:{customer_id}:sha256-{hashlib.sha256(value.encode()).hexdigest()}"


def parse_date(value: object) -> date | None:
    """A YYYY-MM-DD date (exactly that form), else None."""
    if not isinstance(value, str) or not DATE_RE.match(value.strip()):
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


def format_date(day: date, language: str) -> str:
    """The date as the text's language writes it: 31 January 2027 / 2027年1月31日."""
    if language == "zh":
        return f"{day.year}年{day.month}月{day.day}日"
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def placeholders(template: str) -> tuple[list[str], bool]:
    """The placeholder names in `template`, and whether its braces are only placeholders."""
    names = PLACEHOLDER_RE.findall(template)
    rest = PLACEHOLDER_RE.sub("", template)
    return names, "{" not in rest and "}" not in rest


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with each {name} replaced (only names in `values`; validated at load)."""
    return PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _zone(prefs: ContactPreferences) -> ZoneInfo:
    try:
        return zone(prefs.timezone)
    except ValueError:
        return ZoneInfo("UTC")


def _hours(prefs: ContactPreferences) -> tuple[tuple[int, int], tuple[int, int]] | None:
    try:
        start, end = parse_hhmm(prefs.allowed_from), parse_hhmm(prefs.allowed_until)
    except ValueError:
        return None
    return (start, end) if start < end else None


def next_allowed(t: float, prefs: ContactPreferences) -> float:
    """The earliest instant ≥ t inside the customer's allowed hours (their time zone); t itself
    when they allow no hours at all (the notice service then holds or refuses it)."""
    hours = _hours(prefs)
    if hours is None:
        return t
    tz = _zone(prefs)
    today = datetime.fromtimestamp(t, tz).date()
    for offset in range(-1, 3):
        day = today + timedelta(days=offset)
        opens, closes = first_instant_at(day, hours[0], tz), first_instant_at(day, hours[1], tz)
        if opens < closes and t < closes:
            return max(t, opens)
    return t  # pragma: no cover - a day always has its window


def reminder_time(day: date, at: tuple[int, int], prefs: ContactPreferences) -> float:
    """`at` o'clock on `day` in the customer's zone, moved to the opening of their allowed hours
    when `at` lies outside them."""
    hours = _hours(prefs)
    if hours is not None and not hours[0] <= at < hours[1]:
        at = hours[0]
    return first_instant_at(day, at, _zone(prefs))


def _texts(text: Mapping[str, str], values: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    return {lang: render(template, values[lang]) for lang, template in text.items()}


def attribute_reminder(rule: AttributeRule, customer: Customer, now: float) -> Reminder | Skipped:
    """The notice `rule` calls for from the customer's attribute, or why none."""
    raw = customer.attributes.get(rule.attribute)
    if raw is None or not str(raw).strip():
        return Skipped(rule.name, None, "absent")
    value = str(raw).strip()
    day = parse_date(value)
    if day is None:
        return Skipped(rule.name, value, "invalid")
    prefs = customer.preferences
    tz = _zone(prefs)
    expires = first_instant_at(day + timedelta(days=1), (0, 0), tz)  # the date's end, local time
    when = reminder_time(day - timedelta(days=rule.days_before), rule.at, prefs)
    if when < now:  # the moment passed (a late import, a short notice): as soon as allowed
        when = next_allowed(now, prefs)
    if when >= expires:
        return Skipped(rule.name, value, "past")
    values = {lang: {"date": format_date(day, lang), "days": str(rule.days_before), "name": customer.name}
              for lang in rule.text}
    return Reminder(key=reminder_key(rule.name, customer.id, value), rule=rule.name, customer_id=customer.id,
                    value=value, kind=rule.kind, channel=rule.channel, text=_texts(rule.text, values),
                    not_before=when, expires_at=expires)


def _surely_later(rule: AttributeRule, value: str | None, now: float, horizon: float) -> bool:
    """Whether the reminder for `value` is due after now + horizon in every time zone (the reminder
    day starts at least two days after the UTC date of now + horizon): a cheap test before the
    exact one."""
    day = parse_date(value)
    if day is None:
        return False
    latest = datetime.fromtimestamp(now + horizon, UTC).date()
    return day - timedelta(days=rule.days_before) > latest + timedelta(days=2)


def attribute_step(rule: AttributeRule, customer: Customer, handled: str | None, now: float,
                   horizon: float | None = None) -> Step | None:
    """What the scanner does for `rule` and `customer`, given the value it handled last time
    (None: none); None when nothing changed. `horizon` (seconds): a notice due later than
    now + horizon is not scheduled yet (a later walk does it; the old value's is cancelled now)."""
    raw = customer.attributes.get(rule.attribute)
    current = str(raw).strip() if raw is not None and str(raw).strip() else None
    if current == handled:
        return None
    cancel = reminder_key(rule.name, customer.id, handled) if handled is not None else None
    if cancel is None and horizon is not None and _surely_later(rule, current, now, horizon):
        return None  # the common case of a walk: far from due (no time-zone arithmetic, no texts)
    result = attribute_reminder(rule, customer, now)
    if isinstance(result, Reminder):
        if horizon is not None and result.not_before > now + horizon:
            if cancel is None:
                return None  # not yet: nothing to do
            return Step(cancel=cancel, schedule=None, handled=None, skipped=Skipped(rule.name, current, "later"))
        return Step(cancel=cancel, schedule=result, handled=current)
    # absent: forget the rule; invalid or past: remember the value so it is not looked at again
    return Step(cancel=cancel, schedule=None, handled=current if result.why != "absent" else None, skipped=result)


def event_reminder(rule: EventRule, customer: Customer, event_id: str, at: float, now: float) -> Reminder | Skipped:
    """The notice `rule` calls for from an event that happened at `at`, or why none (past: the
    event is older than the rule's valid_hours, or the customer's hours open only after that)."""
    expires = at + rule.valid_hours * 3600
    if expires <= now:
        return Skipped(rule.name, event_id, "past")
    when = next_allowed(max(now, at), customer.preferences)
    if when >= expires:
        return Skipped(rule.name, event_id, "past")
    values = {lang: {"name": customer.name} for lang in rule.text}
    return Reminder(key=reminder_key(rule.name, customer.id, event_id), rule=rule.name, customer_id=customer.id,
                    value=event_id, kind=rule.kind, channel=rule.channel, text=_texts(rule.text, values),
                    not_before=when, expires_at=expires)
