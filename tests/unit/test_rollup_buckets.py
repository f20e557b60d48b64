"""Rollup buckets: which 15-minute buckets lie whole inside a window, and the partial edges."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ivrserver.record.rollup import BUCKET, bucket_of, buckets_between


def at(h: int, m: int, s: int = 0) -> datetime:
    return datetime(2026, 12, 4, h, m, s, tzinfo=UTC)


@pytest.mark.parametrize(("t", "bucket"), [
    (at(10, 0), at(10, 0)), (at(10, 14, 59), at(10, 0)), (at(10, 15), at(10, 15)), (at(23, 59, 59), at(23, 45)),
])
def test_bucket_of(t: datetime, bucket: datetime) -> None:
    assert bucket_of(t) == bucket


@pytest.mark.parametrize(("since", "until", "whole", "partial"), [
    (at(10, 0), at(11, 0), [at(10, 0), at(10, 15), at(10, 30), at(10, 45)], []),
    (at(10, 5), at(10, 50), [at(10, 15), at(10, 30)], [(at(10, 5), at(10, 15)), (at(10, 45), at(10, 50))]),
    (at(10, 5), at(10, 20), [], [(at(10, 5), at(10, 20))]),
    (at(10, 0), at(10, 15), [at(10, 0)], []),
    (at(10, 0), at(10, 0), [], []),
])
def test_buckets_between(since: datetime, until: datetime, whole: list[datetime],
                         partial: list[tuple[datetime, datetime]]) -> None:
    assert buckets_between(since, until) == (whole, partial)
    covered = len(whole) * BUCKET + sum((b - a for a, b in partial), BUCKET * 0)
    assert covered == until - since
