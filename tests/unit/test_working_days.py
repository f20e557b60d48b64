"""Country calendars: menu opening hours and callback calling hours on public holidays and moved
working days. The tables come from the real `holidays` library (services/work_calendar.py) for a
fixed year range; the decisions are pure, with `now` passed in."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from ivrserver.domain import callbacks as cbm
from ivrserver.domain.callbacks import CallbackPolicy
from ivrserver.domain.menu import Menu
from ivrserver.domain.model import ContactPreferences
from ivrserver.domain.working_days import WorkingDays
from ivrserver.files.menus import check_text
from ivrserver.services import work_calendar

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def table(country: str, subdivision: str = "") -> WorkingDays:
    return work_calendar.working_days(country, subdivision, (2025, 2026))


# ---------------------------------------------------------------------------- the library's facts

@pytest.mark.parametrize(("country", "day", "holiday", "moved", "working"), [
    ("CN", date(2025, 10, 1), True, False, False),    # National Day (a Wednesday)
    ("CN", date(2025, 10, 8), True, False, False),    # Wednesday off in exchange for Saturday 10-11
    ("CN", date(2025, 10, 11), False, True, True),    # Saturday worked
    ("CN", date(2025, 9, 28), False, True, True),     # Sunday worked
    ("CN", date(2025, 10, 12), False, False, False),  # an ordinary Sunday
    ("CN", date(2025, 10, 13), False, False, True),   # an ordinary Monday
    ("US", date(2025, 7, 4), True, False, False),     # Independence Day (a Friday)
    ("US", date(2025, 10, 11), False, False, False),  # no moved working days in the US
    ("GB", date(2025, 12, 26), True, False, False),   # Boxing Day
])
def test_calendar_tables(country: str, day: date, holiday: bool, moved: bool, working: bool) -> None:
    days = table(country)
    assert (days.is_holiday(day), days.is_moved_workday(day), days.is_working_day(day)) == (holiday, moved, working)


def test_subdivisions_have_their_own_holidays() -> None:
    cesar_chavez = date(2025, 3, 31)  # a California state holiday
    assert table("US", "CA").is_holiday(cesar_chavez) and not table("US").is_holiday(cesar_chavez)


@pytest.mark.parametrize(("country", "subdivision", "message"), [
    ("XX", "", "unknown country"), ("cnn", "", "unknown country"), ("US", "ZZ", "no subdivision 'ZZ'"),
])
def test_unknown_calendars_are_refused(country: str, subdivision: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        work_calendar.working_days(country, subdivision, (2025, 2025))


def test_dates_outside_the_table_are_ordinary_days() -> None:
    days = work_calendar.working_days("CN", "", (2025, 2025))
    assert days.is_holiday(date(2025, 10, 1)) and not days.is_holiday(date(2024, 10, 1))


# ---------------------------------------------------------------------------- menu opening hours

MENU = """
human: {{queue: general}}
hours:
  timezone: {tz}
  weekly: {{mon: ["08:00-20:00"], tue: ["08:00-20:00"], wed: ["08:00-20:00"], thu: ["08:00-20:00"],
           fri: ["08:00-20:00"], sat: ["10:00-12:00"]}}
  holidays: ["2025-12-31"]
  {calendar}
entry: {{open: main, closed: closed, holiday: holiday}}
nodes:
  main: {{prompts: [hello], options: {{"1": {{queue: billing}}}}}}
  closed: {{type: play, prompts: [vm-nobodyavail], next: {{hangup: true}}}}
  holiday: {{type: play, prompts: [ss-noservice], next: {{hangup: true}}}}
"""


def menu(calendar: str, tz: str = "Asia/Shanghai", years: tuple[int, int] = (2025, 2026)) -> Menu:
    built, issues = check_text(MENU.format(tz=tz, calendar=calendar), "m.yaml", "m")
    assert built is not None, [i.format() for i in issues]
    assert built.hours is not None
    if built.hours.calendar is None:
        return built
    ref = built.hours.calendar  # the table for fixed years, whatever today's date
    days = work_calendar.working_days(ref.country, ref.subdivision, years)
    return dataclasses.replace(built, hours=dataclasses.replace(built.hours, days=days))


CN = "calendar: {country: CN, subdivision: null}"


@pytest.mark.parametrize(("calendar", "tz", "local", "state"), [
    (CN, "Asia/Shanghai", datetime(2025, 10, 1, 10, 0), "holiday"),   # National Day, a Wednesday
    (CN, "Asia/Shanghai", datetime(2025, 10, 8, 10, 0), "holiday"),   # the weekday given off in exchange
    (CN, "Asia/Shanghai", datetime(2025, 10, 11, 9, 0), "open"),      # Saturday worked: Monday's hours
    (CN, "Asia/Shanghai", datetime(2025, 10, 11, 19, 0), "open"),
    (CN, "Asia/Shanghai", datetime(2025, 10, 11, 20, 0), "closed"),   # Monday's end, exclusive
    (CN, "Asia/Shanghai", datetime(2025, 10, 18, 9, 0), "closed"),    # an ordinary Saturday: sat hours
    (CN, "Asia/Shanghai", datetime(2025, 10, 18, 11, 0), "open"),
    (CN, "Asia/Shanghai", datetime(2025, 10, 13, 9, 0), "open"),      # an ordinary Monday
    (CN, "Asia/Shanghai", datetime(2025, 12, 31, 9, 0), "holiday"),   # an explicit date still works
    ("calendar: {country: CN, workday_hours: sat}", "Asia/Shanghai", datetime(2025, 10, 11, 9, 0), "closed"),
    ("calendar: {country: US}", "America/New_York", datetime(2025, 7, 4, 10, 0), "holiday"),
    ("calendar: {country: US}", "America/New_York", datetime(2025, 10, 11, 9, 0), "closed"),  # a Saturday
    ("calendar: {country: US}", "America/New_York", datetime(2025, 7, 3, 10, 0), "open"),
    ("calendar: {country: US, subdivision: CA}", "America/Los_Angeles", datetime(2025, 3, 31, 10, 0), "holiday"),
    ("", "Asia/Shanghai", datetime(2025, 10, 1, 10, 0), "open"),      # no calendar: a plain Wednesday
    ("", "Asia/Shanghai", datetime(2025, 10, 11, 9, 0), "closed"),    # and a plain Saturday
    ("", "Asia/Shanghai", datetime(2025, 12, 31, 9, 0), "holiday"),
])
def test_menu_hours_follow_the_country_calendar(calendar: str, tz: str, local: datetime, state: str) -> None:
    m = menu(calendar, tz)
    entry, got = m.entry_for(local.replace(tzinfo=ZoneInfo(tz)))
    assert got == state
    assert entry == {"open": "main", "closed": "closed", "holiday": "holiday"}[state]


def test_the_loader_attaches_a_table_around_today() -> None:
    built, _ = check_text(MENU.format(tz="Asia/Shanghai", calendar=CN), "m.yaml", "m")
    assert built is not None and built.hours is not None and built.hours.days is not None
    assert built.hours.days.covers(date.today()) and built.hours.days.country == "CN"


@pytest.mark.parametrize(("calendar", "message"), [
    ("calendar: {country: XX}", "hours.calendar.country: unknown country 'XX'"),
    ("calendar: {country: US, subdivision: QQ}", "hours.calendar.subdivision: country US has no subdivision"),
    ("calendar: {country: China}", "hours.calendar.country"),
    ("calendar: {country: CN, workday_hours: monday}", "hours.calendar.workday_hours"),
    ("calendar: {country: CN, region: x}", "hours.calendar"),
])
def test_bad_calendars_are_menu_errors(calendar: str, message: str) -> None:
    built, issues = check_text(MENU.format(tz="Asia/Shanghai", calendar=calendar), "m.yaml", "m")
    assert built is None
    assert any(message in i.format() for i in issues), [i.format() for i in issues]


# ---------------------------------------------------------------------------- callback calling hours

def at(tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


def prefs(tz: str = "Asia/Shanghai", holidays_ok: bool = False) -> ContactPreferences:
    return ContactPreferences(timezone=tz, allowed_from="09:00", allowed_until="20:00", holidays_ok=holidays_ok)


CN_POLICY = CallbackPolicy(working_days=table("CN"))
US_POLICY = CallbackPolicy(working_days=table("US"))


@pytest.mark.parametrize(("case", "t", "p", "policy", "expected"), [
    # 2025-09-30 evening: next morning is National Day; China's holiday runs 10-01..10-08 (10-04/05
    # is a weekend, not listed as holidays, so it is a calling day like every weekend day).
    ("holiday skipped", at(SHANGHAI, 2025, 9, 30, 21), prefs(), CN_POLICY, at(SHANGHAI, 2025, 10, 4, 9)),
    ("inside a holiday", at(SHANGHAI, 2025, 10, 1, 10), prefs(), CN_POLICY, at(SHANGHAI, 2025, 10, 4, 9)),
    ("day off in exchange", at(SHANGHAI, 2025, 10, 6, 10), prefs(), CN_POLICY, at(SHANGHAI, 2025, 10, 9, 9)),
    ("customer allows holidays", at(SHANGHAI, 2025, 10, 1, 10), prefs(holidays_ok=True), CN_POLICY,
     at(SHANGHAI, 2025, 10, 1, 10)),
    ("moved working day", at(SHANGHAI, 2025, 10, 11, 10), prefs(), CN_POLICY, at(SHANGHAI, 2025, 10, 11, 10)),
    ("no calendar", at(SHANGHAI, 2025, 10, 1, 10), prefs(), CallbackPolicy(), at(SHANGHAI, 2025, 10, 1, 10)),
    ("US holiday", at(NEW_YORK, 2025, 7, 4, 10), prefs("America/New_York"), US_POLICY,
     at(NEW_YORK, 2025, 7, 5, 9)),
    ("CN holiday means nothing to a US calendar", at(NEW_YORK, 2025, 10, 1, 10), prefs("America/New_York"),
     US_POLICY, at(NEW_YORK, 2025, 10, 1, 10)),
])
def test_callbacks_are_not_placed_on_public_holidays(case: str, t: float, p: ContactPreferences,
                                                     policy: CallbackPolicy, expected: float) -> None:
    assert cbm.next_allowed_time(t, p, policy) == expected, case


def test_a_window_of_holidays_only_is_refused_and_says_why() -> None:
    now = at(SHANGHAI, 2025, 9, 30, 12)
    req = cbm.validate_request({"customer_id": "c1", "number": "013800000001",
                                "earliest": at(SHANGHAI, 2025, 10, 1, 9), "latest": at(SHANGHAI, 2025, 10, 3, 20)},
                               now, CN_POLICY)
    cb = cbm.new_callback(req, "cb1", now, prefs())
    with pytest.raises(cbm.RequestInvalid) as err:
        cbm.schedule(cb, CN_POLICY, now)
    assert "not on public holidays of CN" in err.value.errors["latest"]
    allowed = cbm.new_callback(req, "cb2", now, prefs(holidays_ok=True))
    assert cbm.schedule(allowed, CN_POLICY, now).due_at == at(SHANGHAI, 2025, 10, 1, 9)


def test_holidays_ok_comes_from_the_profile() -> None:
    req = cbm.validate_request({"customer_id": "c1", "number": "10086", "at": 1_800_000_000}, 1_799_999_000,
                               CallbackPolicy())
    assert cbm.merged_preferences(req, prefs(holidays_ok=True)).holidays_ok is True
    assert cbm.merged_preferences(req, None).holidays_ok is False


@pytest.mark.parametrize("number", ["13800000001", "013800000001", "8613800000001", "+86 138 0000 0001",
                                    "008613800000001"])
def test_callback_numbers_use_the_identification_normal_form(number: str) -> None:
    policy = CallbackPolicy(phone_region="CN")
    req = cbm.validate_request({"customer_id": "c1", "number": number, "at": 1_800_000_000}, 1_799_999_000, policy)
    assert req.number == "+8613800000001"

