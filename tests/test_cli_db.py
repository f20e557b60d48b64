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
