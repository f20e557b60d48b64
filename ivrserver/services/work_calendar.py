"""Country calendars for menu hours and callback calling hours, from the `holidays` library.

The `holidays` package (Open World Holidays Framework: ~200 countries and their subdivisions,
including China's moved working days) is the well-kept source of official calendars: nobody
should hand-maintain them. Its objects compute years lazily and grow on every lookup outside the
years asked for (~10-100 ms per country-year), so they never reach the domain or the event loop:
this adapter turns a range of years into a frozen `domain.working_days.WorkingDays` table, once
per (country, subdivision, years), at start-up or menu reload.
"""

from __future__ import annotations

import dataclasses
import functools
from datetime import date

import holidays

from ivrserver.domain import menu as m
from ivrserver.domain.working_days import WorkingDays

# Years a table covers around the year it is built for: last year (calls near New Year in
# other zones, reports), this year and the next two (callbacks up to 30 days ahead, menus that
# stay loaded for long).
YEARS_BEFORE = 1
YEARS_AFTER = 2


def supported_countries() -> frozenset[str]:
    return frozenset(holidays.list_supported_countries())


def check_country(country: str, subdivision: str = "") -> str:
    """`country` (upper case) when `holidays` has it (and `subdivision` of it); else ValueError."""
    code = country.strip().upper() if isinstance(country, str) else ""
    supported = holidays.list_supported_countries()
    if code not in supported:
        raise ValueError(f"unknown country {country!r}: expected an ISO 3166 two-letter code with a "
                         f"public holiday calendar (e.g. CN, US, GB)")
    if subdivision and subdivision not in supported[code]:
        known = ", ".join(supported[code][:40]) or "none"
        raise ValueError(f"country {code} has no subdivision {subdivision!r} (known: {known})")
    return code


def years_around(today: date) -> tuple[int, int]:
    return today.year - YEARS_BEFORE, today.year + YEARS_AFTER


@functools.lru_cache(maxsize=64)
def working_days(country: str, subdivision: str, years: tuple[int, int]) -> WorkingDays:
    """The frozen calendar table of `country` (and `subdivision`) for years[0]..years[1]."""
    code = check_country(country, subdivision)
    first, last = years
    table = holidays.country_holidays(code, subdiv=subdivision or None, years=range(first, last + 1),
                                      expand=False)
    in_range = {d: str(name) for d, name in table.items() if first <= d.year <= last}
    workdays = frozenset(d for d in getattr(table, "weekend_workdays", ()) if first <= d.year <= last)
    weekend = frozenset(getattr(table, "weekend", {5, 6}))
    return WorkingDays(country=code, subdivision=subdivision, holidays=in_range,
                       weekend_workdays=workdays, weekend=weekend, years=(first, last))


def for_today(country: str, subdivision: str, today: date) -> WorkingDays | None:
    """The table around `today`, or None when no country is configured."""
    if not country:
        return None
    return working_days(country, subdivision, years_around(today))


def attach_to_menu(menu: m.Menu | None, src: m.Source, today: date) -> tuple[m.Menu | None, list[m.Issue]]:
    """The menu with its `hours.calendar` table attached (menu hours then know the country's
    public holidays and moved working days), or an error at `hours.calendar` when `holidays`
    does not know the country or subdivision. Runs when a menu is loaded (a worker thread)."""
    if menu is None or menu.hours is None or menu.hours.calendar is None:
        return menu, []
    ref = menu.hours.calendar
    try:
        days = for_today(ref.country, ref.subdivision, today)
    except ValueError as exc:
        field = "subdivision" if ref.country in holidays.list_supported_countries() else "country"
        choices = (holidays.list_supported_countries().get(ref.country, []) if field == "subdivision"
                   else [c for c in holidays.list_supported_countries() if len(c) == 2])
        pos = src.at(("hours", "calendar", field))
        hint = m.did_you_mean(ref.subdivision if field == "subdivision" else ref.country, choices)
        return None, [m.Issue(src.file, pos.line, pos.column, m.Severity.ERROR, "calendar",
                              f"hours.calendar.{field}: {exc}", hint)]
    return dataclasses.replace(menu, hours=dataclasses.replace(menu.hours, days=days)), []
