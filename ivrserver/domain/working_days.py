"""Working days as a country's official calendar has them: public holidays and moved working days.

Pure: a frozen table of dates, computed outside the domain (services/work_calendar.py builds it
from the `holidays` library for a range of years) and passed in, so menu hours and callback
calling hours decide without reading a clock or a library.

China moves working days onto weekends around long holidays: Saturday 2025-10-11 was worked in
exchange for Wednesday 2025-10-08 off. So a day is

- a public holiday when the calendar lists it (2025-10-01 National Day, 2025-10-08 "day off"),
- a moved working day when it falls on the country's weekend and the calendar says it is worked
  (2025-10-11),
- otherwise an ordinary weekday or weekend day.

Dates outside `years` are ordinary days (the table says nothing about them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True, eq=False)  # eq=False: hashable by identity (the table is a dict)
class WorkingDays:
    country: str  # ISO 3166 alpha-2, e.g. "CN"
    subdivision: str = ""  # e.g. "CA" for US California; '' for the whole country
    holidays: Mapping[date, str] = field(default_factory=dict)  # public holiday → its name
    weekend_workdays: frozenset[date] = frozenset()  # weekend days worked in exchange
    weekend: frozenset[int] = frozenset({5, 6})  # weekday numbers (0 = Monday)
    years: tuple[int, int] = (0, -1)  # first and last year the table covers

    def covers(self, day: date) -> bool:
        return self.years[0] <= day.year <= self.years[1]

    def holiday_name(self, day: date) -> str | None:
        """The name of the public holiday on `day`, or None."""
        return self.holidays.get(day)

    def is_holiday(self, day: date) -> bool:
        return day in self.holidays

    def is_moved_workday(self, day: date) -> bool:
        """A weekend day that is worked (the weekday hours apply)."""
        return day in self.weekend_workdays

    def is_working_day(self, day: date) -> bool:
        if day in self.holidays:
            return False
        return day in self.weekend_workdays or day.weekday() not in self.weekend

    def describe(self) -> str:
        return self.country + (f"-{self.subdivision}" if self.subdivision else "")
