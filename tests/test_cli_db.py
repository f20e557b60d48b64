"""`ivrserver db migrate|status` run as a user runs them, against a private PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from ivrserver.record import migrate
from tests.cli_harness import covers, ivrserver, user_env


@covers("db migrate", "db status")
async def test_migrate_then_status_on_an_empty_database(empty_db: str) -> None:
    env = user_env(IVRSERVER_POSTGRES__DSN=empty_db)
    newest = migrate.available()[-1].version
    before = ivrserver("db", "status", env=env)
    assert before.returncode == 1
    assert f"schema at version 0 of {newest}: {newest} migration(s) pending" in before.stdout
    first = ivrserver("db", "migrate", "--to", "1", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == "applied 0001_customers_cases"
    done = ivrserver("db", "migrate", env=env)
    assert done.returncode == 0, done.stderr
    assert "applied 0002_contacts_paths_audit" in done.stdout
    assert "created partition contacts_" in done.stdout
    assert done.stdout.strip().endswith(f"schema at version {newest} of {newest}")
    after = ivrserver("db", "status", env=env)
    assert (after.returncode, after.stdout.strip()) == (0, f"schema at version {newest} of {newest}")
    conn = await asyncpg.connect(empty_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == newest
    finally:
        await conn.close()


@covers("db migrate", "db status")
@pytest.mark.parametrize("command", ["migrate", "status"])
def test_without_a_dsn_or_server_the_error_says_what_to_do(command: str) -> None:
    missing = ivrserver("db", command, env=user_env())
    assert missing.returncode == 2
    assert "postgres.dsn is not set" in missing.stderr and "Traceback" not in missing.stderr
    dead = ivrserver("db", command, env=user_env(IVRSERVER_POSTGRES__DSN="postgresql://ivrserver@127.0.0.1:1/x"))
    assert dead.returncode == 1
    assert dead.stderr.startswith("error: ") and "Traceback" not in dead.stderr


@covers("db reroll")
async def test_reroll_marks_the_hours_that_still_have_raw_rows(empty_db: str) -> None:
    """A wait of exactly N s used to fall outside the service level (before session 8): `db reroll`
    has the upkeep recompute the kept hours with today's rule; an hour whose raw rows are gone
    (past retention) keeps its rollup rather than being erased by an empty recomputation."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from ivrserver.record import reports as report_rollups

    env = user_env(IVRSERVER_POSTGRES__DSN=empty_db)
    bad = await asyncio.to_thread(ivrserver, "db", "reroll", "--from", "2026-13-01", env=env)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr
    unmigrated = await asyncio.to_thread(ivrserver, "db", "reroll", "--from", "2026-01-01", env=env)
    assert unmigrated.returncode == 2 and "ivrserver db migrate" in unmigrated.stderr
    assert (await asyncio.to_thread(ivrserver, "db", "migrate", env=env)).returncode == 0

    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    old = hour - timedelta(days=800)  # its raw rows long dropped: only the rollup is left
    conn = await asyncpg.connect(empty_db)
    try:
        hist = [0] * 16
        hist[4] = 1  # the old rule's bin for a 20 s wait: 20 <= w < 30 (now 15 < w <= 20, bin 3)
        await conn.execute(
            """INSERT INTO report_queue_hourly (queue, hour, offered, answered, abandoned, wait_answered,
                                                wait_abandoned, wait_seconds, talk_seconds)
               VALUES ('general', $1, 7, 7, 0, $2, $3, 140, 700), ('general', $4, 1, 1, 0, $2, $3, 20, 60)""",
            old, hist, [0] * 16, hour)
        await conn.execute(
            """INSERT INTO contacts (id, started_at, kind, number, customer_id, ended_at, routing_reason, queue,
                                     wait_seconds, talk_seconds, agents, outcome, disposition, notes, ivr_path, rev)
               VALUES ('c1', $1, 'inbound', '+8613800000001', '', $2, '', 'general', 20, 60, '{agent1001}',
                       'answered', '', '', '{}', 1)""", hour + timedelta(minutes=5), hour + timedelta(minutes=7))
        day = (hour - timedelta(days=1)).strftime("%Y-%m-%d")
        result = await asyncio.to_thread(ivrserver, "db", "reroll", "--from", day, env=env)
        assert result.returncode == 0, result.stderr
        assert "1 hour(s) of contacts" in result.stdout and "0 menu-hour(s)" in result.stdout
        marks = [(r["source"], r["hour"]) for r in await conn.fetch("SELECT source, hour FROM report_dirty")]
        assert marks == [("contacts", hour)]
        await report_rollups.roll(conn)
        rows = {r["hour"]: (r["offered"], r["wait_answered"]) for r in await conn.fetch(
            "SELECT hour, offered, wait_answered FROM report_queue_hourly")}
        assert rows[old] == (7, hist)  # kept
        assert rows[hour][0] == 1 and rows[hour][1] == [0, 0, 0, 1] + [0] * 12  # recomputed by today's rule
    finally:
        await conn.close()
