"""Menu statistics from PostgreSQL: rollups merged with live buckets equal counting every path."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ivrserver.domain import menu_stats as ms
from ivrserver.domain.menu_engine import ExitReason, PathEvent, PathKind
from ivrserver.record import migrate, rollup
from ivrserver.record.rows import upsert_paths

START = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
async def conn(empty_db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(empty_db)
    await migrate.migrate(c)
    yield c
    await c.close()


def call(i: int, rng: random.Random) -> ms.CallPath:
    t = (START + timedelta(seconds=rng.uniform(0, 3 * 86400))).timestamp()
    key, node, reason = rng.choice([("1", "balance", ExitReason.SELF_SERVED), ("2", "faults", ExitReason.QUEUE),
                                    ("3", "plans", ExitReason.CALLER_HANGUP), ("4", "sales", ExitReason.QUEUE)])
    events = (PathEvent(PathKind.ENTER, "main", t),
              PathEvent(PathKind.KEY, "main", t + 4, key=key, target=f"goto:{node}"),
              PathEvent(PathKind.ENTER, node, t + 4), PathEvent(PathKind.EXIT, node, t + 9, detail=str(reason)))
    return ms.CallPath(f"call-{i}", "hotline", "v1", t, events)


async def test_stats_over_a_window_count_every_call_once(conn: asyncpg.Connection) -> None:
    rng = random.Random(7)
    paths = [call(i, rng) for i in range(3000)]
    await upsert_paths(conn, paths)
    await rollup.mark_dirty(conn, paths)
    # Roll everything that ended before day 2, 12:00; the rest stays dirty and is counted live.
    rolled = await rollup.roll(conn, START + timedelta(days=2, hours=12))
    assert rolled > 100
    since, until = START + timedelta(hours=5, minutes=7), START + timedelta(days=2, hours=20, minutes=3)
    expected = ms.tally(p for p in paths if since.timestamp() <= p.started_at < until.timestamp())
    got = await rollup.stats(conn, "hotline", since, until)
    assert got.calls == expected.calls > 2000
    assert got == expected
    # Written again (a redelivery) and rolled again: the same counts.
    await upsert_paths(conn, paths[:500])
    await rollup.mark_dirty(conn, paths[:500])
    await rollup.roll(conn, START + timedelta(days=4))
    assert await rollup.stats(conn, "hotline", since, until) == expected
    assert await conn.fetchval("SELECT count(*) FROM ivr_rollup_dirty") == 0
