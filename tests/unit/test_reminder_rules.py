"""Reminder rules (domain/reminders.py) and the rules file (files/reminders.py): tables, `now` passed in."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ivrserver.domain import reminders as r
from ivrserver.domain.model import ContactPreferences, Customer
from ivrserver.files import reminders as rules_file

CARD = r.AttributeRule(name="card_expiry", attribute="card_expires", days_before=30, at=(10, 0), kind="card_expiry",
                       channel="auto", text={"en": "Dear {name}, your card expires on {date} ({days} days).",
                                             "zh": "{name}，您的卡将于{date}到期。"})
ROAMING = r.EventRule(name="roaming_welcome", event="roaming_started", kind="roaming", channel="sms",
                      text={"en": "Welcome abroad, {name}!"}, valid_hours=24)
SHANGHAI = ContactPreferences(timezone="Asia/Shanghai", allowed_from="09:00", allowed_until="20:00")


def t(text: str) -> float:
    """ISO 8601 with an offset → epoch seconds."""
    return datetime.fromisoformat(text).timestamp()


def customer(value: str | None = "2027-01-31", prefs: ContactPreferences = SHANGHAI) -> Customer:
    attributes = {"card_expires": value} if value is not None else {}
    return Customer(id="c1", name="Li Wei", phones=("+8613812345678",), preferences=prefs, attributes=attributes)


# ----------------------------------------------------------------------------- attribute rules

@pytest.mark.parametrize(("value", "prefs", "now", "not_before", "expires"), [
    # 30 days before, at 10:00 Shanghai time; moot when the date ends (local midnight)
    ("2027-01-31", SHANGHAI, "2026-12-01T00:00:00+00:00", "2027-01-01T10:00:00+08:00", "2027-02-01T00:00:00+08:00"),
    # the moment has passed (a late import) but the date has not: now, inside the hours
    ("2027-01-31", SHANGHAI, "2027-01-15T12:00:00+08:00", "2027-01-15T12:00:00+08:00", "2027-02-01T00:00:00+08:00"),
    # … outside the hours: the next opening
    ("2027-01-31", SHANGHAI, "2027-01-15T22:00:00+08:00", "2027-01-16T09:00:00+08:00", "2027-02-01T00:00:00+08:00"),
    ("2027-01-31", SHANGHAI, "2027-01-31T08:00:00+08:00", "2027-01-31T09:00:00+08:00", "2027-02-01T00:00:00+08:00"),
    # leap days: 30 days before 30 March 2028 is 29 February 2028; before 31 March 2027, 1 March
    ("2028-03-30", SHANGHAI, "2028-01-01T00:00:00+08:00", "2028-02-29T10:00:00+08:00", "2028-03-31T00:00:00+08:00"),
    ("2027-03-31", SHANGHAI, "2027-01-01T00:00:00+08:00", "2027-03-01T10:00:00+08:00", "2027-04-01T00:00:00+08:00"),
    ("2028-02-29", SHANGHAI, "2027-12-01T00:00:00+08:00", "2028-01-30T10:00:00+08:00", "2028-03-01T00:00:00+08:00"),
    # time zones: the customer's own 10:00 (New York in summer = UTC-4, in winter UTC-5)
    ("2027-08-01", ContactPreferences(timezone="America/New_York"), "2027-01-01T00:00:00+00:00",
     "2027-07-02T10:00:00-04:00", "2027-08-02T00:00:00-04:00"),
    ("2027-01-31", ContactPreferences(timezone="America/New_York"), "2026-12-01T00:00:00+00:00",
     "2027-01-01T10:00:00-05:00", "2027-02-01T00:00:00-05:00"),
    # `at` outside the customer's hours: moved to the opening of their hours
    ("2027-01-31", ContactPreferences(timezone="Asia/Shanghai", allowed_from="14:00", allowed_until="18:00"),
     "2026-12-01T00:00:00+00:00", "2027-01-01T14:00:00+08:00", "2027-02-01T00:00:00+08:00"),
    ("2027-01-31", ContactPreferences(timezone="Asia/Shanghai", allowed_from="08:00", allowed_until="09:30"),
     "2026-12-01T00:00:00+00:00", "2027-01-01T08:00:00+08:00", "2027-02-01T00:00:00+08:00"),
    # no allowed hours at all (from ≥ until): the rule's time as is (the notice service holds it)
    ("2027-01-31", ContactPreferences(timezone="UTC", allowed_from="20:00", allowed_until="09:00"),
     "2026-12-01T00:00:00+00:00", "2027-01-01T10:00:00+00:00", "2027-02-01T00:00:00+00:00"),
    # an unknown zone in old data: UTC
    ("2027-01-31", ContactPreferences(timezone="Mars/Olympus"), "2026-12-01T00:00:00+00:00",
     "2027-01-01T10:00:00+00:00", "2027-02-01T00:00:00+00:00"),
])
def test_attribute_reminder_time(value: str, prefs: ContactPreferences, now: str, not_before: str,
                                 expires: str) -> None:
    got = r.attribute_reminder(CARD, customer(value, prefs), t(now))
    assert isinstance(got, r.Reminder), got
    assert (got.not_before, got.expires_at) == (t(not_before), t(expires))
    assert got.key == f"reminder:card_expiry:c1:{value}"
    assert (got.kind, got.channel, got.customer_id, got.value) == ("card_expiry", "auto", "c1", value)


def test_attribute_reminder_in_a_spring_forward_gap() -> None:
    """02:30 does not exist in New York on 14 March 2027: the end of the gap, 03:00 EDT."""
    rule = r.AttributeRule(name="x", attribute="card_expires", days_before=1, at=(2, 30), kind="k", channel="sms",
                           text={"en": "x"})
    prefs = ContactPreferences(timezone="America/New_York", allowed_from="00:00", allowed_until="24:00")
    got = r.attribute_reminder(rule, customer("2027-03-15", prefs), t("2027-01-01T00:00:00+00:00"))
    assert isinstance(got, r.Reminder)
    assert got.not_before == t("2027-03-14T03:00:00-04:00")


@pytest.mark.parametrize(("value", "now", "why"), [
    (None, "2026-12-01T00:00:00+00:00", "absent"),
    ("  ", "2026-12-01T00:00:00+00:00", "absent"),
    ("2027-02-29", "2026-12-01T00:00:00+00:00", "invalid"),  # not a leap year
    ("31/01/2027", "2026-12-01T00:00:00+00:00", "invalid"),
    ("20270131", "2026-12-01T00:00:00+00:00", "invalid"),  # fromisoformat would take it: the rule does not
    ("2027-1-31", "2026-12-01T00:00:00+00:00", "invalid"),
    ("2027-01-31T00:00", "2026-12-01T00:00:00+00:00", "invalid"),
    # the date has passed
    ("2027-01-31", "2027-02-01T08:00:00+08:00", "past"),
    # the last day, after the hours closed: the next opening is after the date
    ("2027-01-31", "2027-01-31T21:00:00+08:00", "past"),
])
def test_attribute_reminder_skipped(value: str | None, now: str, why: str) -> None:
    got = r.attribute_reminder(CARD, customer(value), t(now))
    assert isinstance(got, r.Skipped)
    assert got.why == why


def test_texts_are_rendered_per_language() -> None:
    got = r.attribute_reminder(CARD, customer("2027-01-31"), t("2026-12-01T00:00:00+00:00"))
    assert isinstance(got, r.Reminder)
    assert got.text == {"en": "Dear Li Wei, your card expires on 31 January 2027 (30 days).",
                        "zh": "Li Wei，您的卡将于2027年1月31日到期。"}


NOW = t("2026-12-01T00:00:00+00:00")


@pytest.mark.parametrize(("handled", "value", "cancel", "schedule", "remember"), [
    (None, "2027-01-31", None, "2027-01-31", "2027-01-31"),  # first look: scheduled
    ("2027-01-31", "2027-01-31", "-", "-", "-"),  # nothing changed: nothing to do
    ("2027-01-31", "2029-01-31", "2027-01-31", "2029-01-31", "2029-01-31"),  # renewed: old cancelled, new due
    ("2027-01-31", None, "2027-01-31", None, None),  # attribute removed: cancelled and forgotten
    ("2027-01-31", "not a date", "2027-01-31", None, "not a date"),  # bad data: cancelled, value remembered
    (None, "2020-01-31", None, None, "2020-01-31"),  # already expired: nothing, remembered
    (None, "not a date", None, None, "not a date"),
])
def test_attribute_step(handled: str | None, value: str | None, cancel: str | None, schedule: str | None,
                        remember: str | None) -> None:
    step = r.attribute_step(CARD, customer(value), handled, NOW)
    if cancel == "-":
        assert step is None
        return
    assert step is not None
    assert step.cancel == (r.reminder_key("card_expiry", "c1", cancel) if cancel else None)
    assert (step.schedule.value if step.schedule else None) == schedule
    assert step.handled == remember


HORIZON = 2 * 86400.0  # the reminder at 2027-01-01 10:00 UTC is due 31 days after NOW


@pytest.mark.parametrize(("handled", "value", "now", "cancel", "schedule", "remember"), [
    (None, "2027-01-31", NOW, None, "-", "-"),  # due beyond the horizon: not yet, nothing to do
    (None, "2027-01-31", NOW + 30 * 86400, None, "2027-01-31", "2027-01-31"),  # within it: scheduled
    ("2027-01-31", "2029-01-31", NOW, "2027-01-31", None, None),  # renewed far ahead: old cancelled, forgotten
    ("2027-01-31", "2027-01-31", NOW, "-", "-", "-"),
])
def test_attribute_step_with_a_horizon(handled: str | None, value: str, now: float, cancel: str | None,
                                       schedule: str | None, remember: str | None) -> None:
    prefs = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")
    step = r.attribute_step(CARD, customer(value, prefs), handled, now, HORIZON)
    if schedule == "-":
        assert step is None
        return
    assert step is not None
    assert step.cancel == (r.reminder_key("card_expiry", "c1", cancel) if cancel else None)
    assert (step.schedule.value if step.schedule else None) == schedule
    assert step.handled == remember


# ----------------------------------------------------------------------------- event rules

@pytest.mark.parametrize(("at", "now", "prefs", "not_before", "expires"), [
    # inside the hours: at once; moot 24 h after the event
    ("2027-01-10T10:00:00+08:00", "2027-01-10T10:05:00+08:00", SHANGHAI, "2027-01-10T10:05:00+08:00",
     "2027-01-11T10:00:00+08:00"),
    # at night: the next opening
    ("2027-01-10T23:30:00+08:00", "2027-01-10T23:31:00+08:00", SHANGHAI, "2027-01-11T09:00:00+08:00",
     "2027-01-11T23:30:00+08:00"),
    # an event stamped a little ahead of our clock: from the event on
    ("2027-01-10T10:01:00+08:00", "2027-01-10T10:00:00+08:00", SHANGHAI, "2027-01-10T10:01:00+08:00",
     "2027-01-11T10:01:00+08:00"),
    # the customer's own zone (a traveller whose profile says London)
    ("2027-01-10T06:00:00+00:00", "2027-01-10T06:00:00+00:00", ContactPreferences(timezone="Europe/London"),
     "2027-01-10T09:00:00+00:00", "2027-01-11T06:00:00+00:00"),
])
def test_event_reminder(at: str, now: str, prefs: ContactPreferences, not_before: str, expires: str) -> None:
    got = r.event_reminder(ROAMING, customer(None, prefs), "evt-1", t(at), t(now))
    assert isinstance(got, r.Reminder), got
    assert (got.not_before, got.expires_at) == (t(not_before), t(expires))
    assert got.key == "reminder:roaming_welcome:c1:evt-1"
    assert got.text == {"en": "Welcome abroad, Li Wei!"}
    assert (got.kind, got.channel) == ("roaming", "sms")


@pytest.mark.parametrize(("valid_hours", "at", "now"), [
    (24, "2027-01-09T10:00:00+08:00", "2027-01-10T10:00:01+08:00"),  # older than valid_hours
    (2, "2027-01-10T22:00:00+08:00", "2027-01-10T22:01:00+08:00"),  # the hours open only after it is moot
])
def test_event_reminder_past(valid_hours: int, at: str, now: str) -> None:
    rule = r.EventRule(name="w", event="roaming_started", kind="roaming", channel="sms", text={"en": "x"},
                       valid_hours=valid_hours)
    got = r.event_reminder(rule, customer(None), "evt-1", t(at), t(now))
    assert isinstance(got, r.Skipped) and got.why == "past"


# ----------------------------------------------------------------------------- keys, texts, dates

LONG_ID = "c" * 64


@pytest.mark.parametrize(("customer_id", "value", "expected"), [
    ("c1", "2027-01-31", "reminder:card_expiry:c1:2027-01-31"),
    ("c1", "a" * 128, "reminder:card_expiry:c1:" + "a" * 128),
    (LONG_ID, "a" * 128, None),  # longer than the notice service's 200: the value is hashed
])
def test_reminder_key(customer_id: str, value: str, expected: str | None) -> None:
    key = r.reminder_key("card_expiry", customer_id, value)
    assert len(key) <= r.MAX_KEY
    if expected is not None:
        assert key == expected
    else:
        assert key.startswith(f"reminder:card_expiry:{LONG_ID}:sha256-")
        assert key == r.reminder_key("card_expiry", customer_id, value)
        assert key != r.reminder_key("card_expiry", customer_id, "b" * 128)


@pytest.mark.parametrize(("day", "lang", "text"), [
    ("2027-01-31", "en", "31 January 2027"), ("2027-01-31", "zh", "2027年1月31日"),
    ("2028-02-29", "en", "29 February 2028"), ("2028-12-01", "zh", "2028年12月1日"),
])
def test_format_date(day: str, lang: str, text: str) -> None:
    parsed = r.parse_date(day)
    assert parsed is not None and r.format_date(parsed, lang) == text


@pytest.mark.parametrize(("template", "names", "clean"), [
    ("Card expires {date}", ["date"], True),
    ("{name}{days}", ["name", "days"], True),
    ("no placeholders", [], True),
    ("{0.__class__}", [], False),
    ("{name.__class__}", [], False),
    ("stray } brace", [], False),
    ("{{date}}", ["date"], False),
])
def test_placeholders(template: str, names: list[str], clean: bool) -> None:
    assert r.placeholders(template) == (names, clean)


def test_next_allowed_is_in_the_customer_zone() -> None:
    tz = ZoneInfo("Asia/Shanghai")
    night = datetime(2027, 1, 10, 23, 0, tzinfo=tz).timestamp()
    assert r.next_allowed(night, SHANGHAI) == datetime(2027, 1, 11, 9, 0, tzinfo=tz).timestamp()


# ----------------------------------------------------------------------------- the rules file

def test_the_shipped_example_is_valid() -> None:
    rules = rules_file.load()
    assert [a.name for a in rules.attributes] == ["card_expiry"]
    assert rules.event_names() == ("roaming_started",)
    assert rules.for_event("roaming_started")[0].channel == "sms"


@pytest.mark.parametrize(("text", "message"), [
    ("attributes:\n  card:\n    attribute: x\n    days_before: 400\n    kind: k\n    text: {en: x}\n",
     "r.yaml:4:5: error: attributes: card: days_before: expected a whole number 0..366, got 400"),
    ("attributes:\n  card:\n    attribute: x\n    days_before: 30\n    at: 10:00\n    kind: k\n    text: {en: x}\n",
     "r.yaml:5:5: error: attributes: card: at: write the time quoted (\"10:00\")"),
    ("attributes:\n  card:\n    attribute: x\n    days_before: 30\n    kind: k\n    text: {en: \"hi {nam}\"}\n",
     "unknown placeholder {nam}; allowed: {date}, {days}, {name}; did you mean \"name\"?"),
    ("events:\n  w: {event: roaming_started, kind: roaming, text: {en: \"{date}\"}}\n",
     "events: w: text: en: unknown placeholder {date}; allowed: {name}"),
    ("events:\n  w: {event: roaming_started, kind: roaming, txt: {en: x}}\n",
     "unknown key \"txt\"; allowed: event, kind, channel, valid_hours, text; did you mean \"text\"?"),
    ("events:\n  w: {event: roaming_started, kind: roaming, channel: fax, text: {en: x}}\n",
     "channel: expected one of call, sms, auto, got 'fax'"),
    ("events:\n  w: {event: Roaming, kind: roaming, text: {fr: x}}\n", "unknown language \"fr\""),
    ("events:\n  w: {event: roaming_started, kind: roaming, text: {en: \"line\\none\"}}\n",
     "character U+000A is not allowed"),
    ("attributes:\n  same: {attribute: a, days_before: 1, kind: k, text: {en: x}}\n"
     "events:\n  same: {event: e, kind: k, text: {en: x}}\n", "a rule name must be unique"),
    ("reminders: {}\n", "unknown key \"reminders\"; allowed: attributes, events"),
    ("attributes: [1, 2]\n", "attributes: expected a mapping of rule name → rule"),
])
def test_rules_file_errors(text: str, message: str) -> None:
    with pytest.raises(rules_file.ReminderRulesError) as err:
        rules_file.parse(text, "r.yaml")
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Etc/GMT+12", "Asia/Shanghai", "America/New_York", "UTC"])
@pytest.mark.parametrize("hour", [0, 11, 23])
def test_the_cheap_later_test_never_hides_a_reminder_due_within_the_horizon(zone: str, hour: int) -> None:
    """attribute_step skips the exact computation only when the reminder is surely later: sweep
    dates around the boundary in the zones farthest from UTC (+14 h, -12 h)."""
    prefs = ContactPreferences(timezone=zone, allowed_from="00:00", allowed_until="24:00")
    now = datetime(2027, 3, 1, hour, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    for offset in range(25, 40):
        value = (datetime(2027, 3, 1) + timedelta(days=offset)).date().isoformat()
        exact = r.attribute_reminder(CARD, customer(value, prefs), now)
        step = r.attribute_step(CARD, customer(value, prefs), None, now, HORIZON)
        due_within = isinstance(exact, r.Reminder) and exact.not_before <= now + HORIZON
        assert (step is not None and step.schedule is not None) == due_within, (zone, hour, value)
