"""Monthly partitions of the append-heavy tables: created ahead, dropped whole when retention ends.

`plan()` is pure (dates in, names and SQL ranges out) and unit-tested; `maintain()` applies it.
A partition is dropped only when its whole month is older than the table's retention, so
retention is never shorter than asked (up to one month longer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

PARTITIONED = ("contacts", "ivr_paths", "audit", "webhook_deliveries")
PARTITION_KEYS = {"contacts": "started_at", "ivr_paths": "started_at", "audit": "at",
                  "webhook_deliveries": "created_at"}
_NAME_RE = re.compile(r"^(?P<table>[a-z_]+)_(?P<year>\d{4})_(?P<month>\d{2})$")


@dataclass(frozen=True)
class Month:
    table: str
    start: date  # first day of the month

    @property
    def end(self) -> date:
        return _next_month(self.start)

    @property
    def name(self) -> str:
        return f"{self.table}_{self.start.year:04d}_{self.start.month:02d}"


def _next_month(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def months_ahead(table: str, now: datetime, ahead: int = 2) -> list[Month]:
    """The current month and `ahead` more: the partitions that must exist."""
    start = date(now.year, now.month, 1)
    out = [Month(table, start)]
    for _ in range(ahead):
        start = _next_month(start)
        out.append(Month(table, start))
    return out


def expired(table: str, existing: list[str], now: datetime, retention_days: int) -> list[str]:
    """Existing partitions of `table` whose whole month ended before now - retention_days."""
    cutoff = (now - timedelta(days=retention_days)).date()
    out = []
    for name in existing:
        match = _NAME_RE.match(name)
        if not match or match["table"] != table:
            continue
        month = Month(table, date(int(match["year"]), int(match["month"]), 1))
        if month.end <= cutoff:
            out.append(name)
    return sorted(out)


async def existing_partitions(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
           WHERE p.relname = $1""", table)
    return [r["relname"] for r in rows]


async def maintain(conn: asyncpg.Connection, retention_days: dict[str, int], now: datetime | None = None,
                   ahead: int = 2) -> tuple[list[str], list[str]]:
    """Create missing partitions, drop expired ones; returns (created, dropped)."""
    now = now or datetime.now(UTC)
    created: list[str] = []
    dropped: list[str] = []
    for table in PARTITIONED:
        have = set(await existing_partitions(conn, table))
        for month in months_ahead(table, now, ahead):
            if month.name in have:
                continue
            await create_month(conn, month)
            created.append(month.name)
        days = retention_days.get(table)
        if days:
            for name in expired(table, sorted(have), now, days):
                await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
                dropped.append(name)
    return created, dropped


async def create_month(conn: asyncpg.Connection, month: Month) -> None:
    """Create `month`'s partition. Rows of that month that landed in the default partition (written
    while the partition did not exist yet: PostgreSQL refuses then to create it, CheckViolation)
    are moved into it in the same transaction: the table is made standalone, filled, then attached."""
    bounds = f"FROM ('{month.start.isoformat()}') TO ('{month.end.isoformat()}')"
    key = PARTITION_KEYS[month.table]
    async with conn.transaction():
        waiting = await conn.fetchval(
            f'SELECT count(*) FROM "{month.table}_default" WHERE {key} >= $1 AND {key} < $2',
            month.start, month.end)
        if not waiting:
            await conn.execute(f'CREATE TABLE IF NOT EXISTS "{month.name}" PARTITION OF "{month.table}" '
                               f"FOR VALUES {bounds}")
            return
        await conn.execute(f'CREATE TABLE "{month.name}" (LIKE "{month.table}" INCLUDING DEFAULTS '
                           "INCLUDING CONSTRAINTS)")
        await conn.execute(
            f'WITH moved AS (DELETE FROM "{month.table}_default" WHERE {key} >= $1 AND {key} < $2 '
            f'RETURNING *) INSERT INTO "{month.name}" SELECT * FROM moved', month.start, month.end)
        await conn.execute(f'ALTER TABLE "{month.table}" ATTACH PARTITION "{month.name}" FOR VALUES {bounds}')


def months_between(table: str, first: datetime, last: datetime) -> list[Month]:
    """Every month of `table` from `first`'s through `last`'s."""
    start, end = date(first.year, first.month, 1), date(last.year, last.month, 1)
    out = []
    while start <= end:
        out.append(Month(table, start))
        start = _next_month(start)
    return out


async def ensure_months(conn: asyncpg.Connection, table: str, first: datetime, last: datetime) -> list[str]:
    """Create the missing partitions of `table` for the months first..last (an import of older
    data); rows of that month already in the default partition move into it. Returns created."""
    have = set(await existing_partitions(conn, table))
    created = []
    for month in months_between(table, first, last):
        if month.name in have:
            continue
        await create_month(conn, month)
        created.append(month.name)
    return created
