"""Monthly partition planning: pure date arithmetic, `now` passed in."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ivrserver.record.partitions import Month, expired, months_ahead


@pytest.mark.parametrize(("now", "names"), [
    (datetime(2026, 12, 4, tzinfo=UTC), ["contacts_2026_12", "contacts_2027_01", "contacts_2027_02"]),
    (datetime(2026, 1, 31, 23, 59, tzinfo=UTC), ["contacts_2026_01", "contacts_2026_02", "contacts_2026_03"]),
])
def test_months_ahead(now: datetime, names: list[str]) -> None:
    assert [m.name for m in months_ahead("contacts", now)] == names


def test_month_bounds_cross_the_year() -> None:
    m = Month("audit", date(2026, 12, 1))
    assert (m.start, m.end) == (date(2026, 12, 1), date(2027, 1, 1))


@pytest.mark.parametrize(("days", "gone"), [
    # now 2026-12-04; 365 days back is 2025-12-04: October and November 2025 have ended by then.
    (365, ["contacts_2025_10", "contacts_2025_11"]),
    # 30 days back is 2026-11-04: October 2026 ended on 11-01, November 2026 has not.
    (30, ["contacts_2025_10", "contacts_2025_11", "contacts_2026_10"]),
    (1000, []),
])
def test_expired_drops_only_whole_months_past_retention(days: int, gone: list[str]) -> None:
    existing = ["contacts_2025_10", "contacts_2025_11", "contacts_2026_10", "contacts_2026_11",
                "contacts_default", "audit_2020_01"]
    assert expired("contacts", existing, datetime(2026, 12, 4, tzinfo=UTC), days) == gone
