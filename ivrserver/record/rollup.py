"""Menu statistics from the record: 15-minute rollups of IVR paths, merged over any window.

Counts of a bucket are recomputed whole from `ivr_paths` (never incremented), so a path written
twice, late or replaced changes nothing but the bucket's recomputation. `stats()` merges the
rollups of the buckets inside the window and computes the rest (the window's partial edges, the
current bucket, buckets still dirty) from their paths.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ivrserver.domain.menu_stats import CallPath, Tally
from ivrserver.record.rows import decode_path_events

if TYPE_CHECKING:
    import asyncpg

BUCKET = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bucket_of(at: datetime) -> datetime:
    return at - (at - _EPOCH) % BUCKET


def buckets_between(since: datetime, until: datetime) -> tuple[list[datetime], list[tuple[datetime, datetime]]]:
    """Whole buckets inside [since, until) and the partial ranges at its edges."""
    first = bucket_of(since)
    if first < since:
        first += BUCKET
    whole: list[datetime] = []
    b = first
    while b + BUCKET <= until:
        whole.append(b)
        b += BUCKET
    if not whole:
        return [], [(since, until)] if since < until else []
    partial = []
    if since < whole[0]:
        partial.append((since, whole[0]))
    if whole[-1] + BUCKET < until:
        partial.append((whole[-1] + BUCKET, until))
    return whole, partial


async def mark_dirty(conn: asyncpg.Connection, paths: Sequence[CallPath]) -> None:
    marks = {(p.menu, bucket_of(datetime.fromtimestamp(p.started_at, UTC))) for p in paths}
    await conn.executemany(
        """INSERT INTO ivr_rollup_dirty (menu, bucket) VALUES ($1, $2)
           ON CONFLICT (menu, bucket) DO UPDATE SET marked_at = clock_timestamp()""", sorted(marks))


async def _paths_tally(conn: asyncpg.Connection, menu: str, since: datetime, until: datetime) -> Tally:
    out = Tally()
    async with conn.transaction():  # a cursor needs one
        async for row in conn.cursor(
                """SELECT call_id, version, started_at, events FROM ivr_paths
                   WHERE menu = $1 AND started_at >= $2 AND started_at < $3""", menu, since, until,
                prefetch=2000):
            out.add(CallPath(row["call_id"], menu, row["version"], row["started_at"].timestamp(),
                             decode_path_events(row["events"])))
    return out


async def roll(conn: asyncpg.Connection, now: datetime, *, settle: timedelta = timedelta(minutes=2)) -> int:
    """Recompute every dirty bucket that ended at least `settle` ago; returns how many."""
    rows = await conn.fetch("SELECT menu, bucket, marked_at FROM ivr_rollup_dirty WHERE bucket < $1",
                            now - BUCKET - settle)
    for row in rows:
        counts = await _paths_tally(conn, row["menu"], row["bucket"], row["bucket"] + BUCKET)
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO ivr_rollup (menu, bucket, tally, computed_at) VALUES ($1, $2, $3::jsonb, now())
                   ON CONFLICT (menu, bucket) DO UPDATE SET tally = EXCLUDED.tally, computed_at = now()""",
                row["menu"], row["bucket"], json.dumps(counts.to_dict()))
            # A mark made while we computed stays: that bucket is computed again next time.
            await conn.execute("DELETE FROM ivr_rollup_dirty WHERE menu = $1 AND bucket = $2 AND marked_at = $3",
                               row["menu"], row["bucket"], row["marked_at"])
    return len(rows)


async def stats(conn: asyncpg.Connection, menu: str, since: datetime, until: datetime) -> Tally:
    """Every call of `menu` that started in [since, until): rollups where clean, paths elsewhere."""
    whole, partial = buckets_between(since, until)
    out = Tally()
    if whole:
        dirty = {r["bucket"] for r in await conn.fetch(
            "SELECT bucket FROM ivr_rollup_dirty WHERE menu = $1 AND bucket >= $2 AND bucket <= $3",
            menu, whole[0], whole[-1])}
        rolled = {r["bucket"]: r["tally"] for r in await conn.fetch(
            "SELECT bucket, tally FROM ivr_rollup WHERE menu = $1 AND bucket >= $2 AND bucket <= $3",
            menu, whole[0], whole[-1])}
        live: list[tuple[datetime, datetime]] = []
        for b in whole:
            if b in rolled and b not in dirty:
                out.merge_dict(json.loads(rolled[b]))
            else:
                live.append((b, b + BUCKET))
        partial = [*partial, *_coalesce(live)]
    for start, end in partial:
        out.merge(await _paths_tally(conn, menu, start, end))
    return out


def _coalesce(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for start, end in ranges:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out
