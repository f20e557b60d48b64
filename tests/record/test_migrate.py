"""Schema migrations against a real PostgreSQL: empty database, one at the previous version, races."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from ivrserver.record import migrate, partitions


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def test_migrates_an_empty_database(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        applied = await migrate.migrate(conn)
        assert [m.version for m in applied] == [m.version for m in migrate.available()]
        assert {"customers", "customer_phones", "cases", "case_events", "contacts", "ivr_paths", "audit",
                "callbacks_finished", "notifications", "schema_migrations"} <= await tables(conn)
        assert await migrate.status(conn) == (len(applied), len(applied))
        assert await migrate.migrate(conn) == []  # twice = once
    finally:
        await conn.close()


async def test_migrates_a_database_at_the_previous_version(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        newest = migrate.available()[-1].version
        await migrate.migrate(conn, target=newest - 1)
        assert await migrate.status(conn) == (newest - 1, newest)
        await conn.execute("INSERT INTO customers (id, name) VALUES ('c1', 'Kept')")
        applied = await migrate.migrate(conn)
        assert [m.version for m in applied] == [newest]
        assert await conn.fetchval("SELECT name FROM customers WHERE id = 'c1'") == "Kept"
    finally:
        await conn.close()


async def test_two_instances_migrating_at_once_apply_each_file_once(empty_db: str) -> None:
    conns = [await asyncpg.connect(empty_db) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(migrate.available())]
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(migrate.available())
    finally:
        for c in conns:
            await c.close()


async def test_a_database_newer_than_the_code_is_refused(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate.migrate(conn)
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
        with pytest.raises(migrate.MigrationError, match="999"):
            await migrate.migrate(conn)
    finally:
        await conn.close()


async def test_partitions_are_created_ahead_and_dropped_after_retention(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate.migrate(conn)
        old = datetime(2025, 1, 15, tzinfo=UTC)
        created, _ = await partitions.maintain(conn, {}, now=old)
        assert "contacts_2025_01" in created and "contacts_2025_03" in created
        await conn.execute("INSERT INTO contacts (id, started_at, kind, outcome) "
                           "VALUES ('k1', $1, 'inbound', 'answered')", old)
        where = await conn.fetchval("SELECT tableoid::regclass::text FROM contacts WHERE id = 'k1'")
        assert where == "contacts_2025_01"
        now = datetime(2026, 3, 10, tzinfo=UTC)
        created, dropped = await partitions.maintain(conn, {"contacts": 365}, now=now)
        assert "contacts_2026_03" in created
        # Jan 2025 ended 2025-02-01 < 2025-03-10 (365 days back): dropped with its rows; Mar 2025 kept.
        assert dropped == ["contacts_2025_01", "contacts_2025_02"]
        assert await conn.fetchval("SELECT count(*) FROM contacts") == 0
        assert "contacts_2025_03" in await partitions.existing_partitions(conn, "contacts")
        assert "audit_2025_01" in await partitions.existing_partitions(conn, "audit")  # no retention set
    finally:
        await conn.close()


async def test_rows_written_before_their_months_partition_move_into_it(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate.migrate(conn)
        early = datetime(2024, 5, 20, tzinfo=UTC)  # no partition for May 2024 yet: the default takes it
        await conn.execute("INSERT INTO contacts (id, started_at, kind, outcome) VALUES ('early', $1, 'inbound', "
                           "'answered')", early)
        await conn.execute("INSERT INTO audit (entry_id, at, actor, action, allowed) VALUES ('1-0', $1, 'a', "
                           "'x', true)", early)
        created, _ = await partitions.maintain(conn, {}, now=early)
        assert "contacts_2024_05" in created and "audit_2024_05" in created
        assert await conn.fetchval("SELECT tableoid::regclass::text FROM contacts WHERE id = 'early'") \
            == "contacts_2024_05"
        assert await conn.fetchval("SELECT count(*) FROM contacts_default") == 0
        assert await conn.fetchval("SELECT tableoid::regclass::text FROM audit WHERE entry_id = '1-0'") \
            == "audit_2024_05"
        # The moved partition is a real partition: later rows of that month land there directly.
        await conn.execute("INSERT INTO contacts (id, started_at, kind, outcome) VALUES ('later', $1, "
                           "'inbound', 'answered')", early)
        assert await conn.fetchval("SELECT tableoid::regclass::text FROM contacts WHERE id = 'later'") \
            == "contacts_2024_05"
    finally:
        await conn.close()
