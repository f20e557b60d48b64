"""`ivrserver doctor` on the system of record: reachable, migrated, the role's rights, this and next
month's partitions — against the session's real PostgreSQL (tests/pg_fixtures.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import asyncpg

from ivrserver import config
from ivrserver.commands import doctor
from ivrserver.record import migrate
from ivrserver.services import record_schema
from tests.cli_harness import covers, free_port, ivrserver, user_env


def settings_for(dsn: str) -> config.Settings:
    base = config.Settings()
    return dataclasses.replace(base, postgres=dataclasses.replace(base.postgres, dsn=dsn))


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


async def test_no_dsn_no_postgres_checks() -> None:
    assert await doctor.postgres_checks(config.Settings()) == []


async def test_unreachable_says_so_and_checks_nothing_else() -> None:
    checks = by_name(await doctor.postgres_checks(
        settings_for(f"postgresql://ivrserver:s3cret@127.0.0.1:{free_port()}/ivrserver")))
    assert list(checks) == ["postgres.reachable"]
    assert not checks["postgres.reachable"].ok and "postgres.dsn" in checks["postgres.reachable"].fix
    assert "s3cret" not in checks["postgres.reachable"].detail     # no password in doctor's output


async def test_not_migrated_then_partly_then_fully(empty_db: str) -> None:
    checks = by_name(await doctor.postgres_checks(settings_for(empty_db)))
    newest = migrate.available()[-1].version
    assert checks["postgres.reachable"].ok
    assert not checks["postgres.schema"].ok and checks["postgres.schema"].fix == "ivrserver db migrate"
    assert f"version 0 of {newest}" in checks["postgres.schema"].detail
    assert "postgres.rights" not in checks      # the tables to ask about do not exist yet
    await record_schema.migrate_schema(settings_for(empty_db).postgres, target=1)
    checks = by_name(await doctor.postgres_checks(settings_for(empty_db)))
    assert not checks["postgres.schema"].ok and f"{newest - 1} migration(s) pending" in checks["postgres.schema"].detail
    await record_schema.migrate_schema(settings_for(empty_db).postgres)
    checks = by_name(await doctor.postgres_checks(settings_for(empty_db)))
    assert [c.name for c in checks.values() if not c.ok] == []
    assert set(checks) == {"postgres.reachable", "postgres.schema", "postgres.rights", "postgres.partitions"}


async def test_a_missing_partition_of_next_month_fails(empty_db: str) -> None:
    await record_schema.migrate_schema(settings_for(empty_db).postgres)
    now = datetime.now(UTC)
    nxt = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    name = f"audit_{nxt.year:04d}_{nxt.month:02d}"
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(f'DROP TABLE "{name}"')
    finally:
        await conn.close()
    checks = by_name(await doctor.postgres_checks(settings_for(empty_db)))
    assert not checks["postgres.partitions"].ok and name in checks["postgres.partitions"].detail
    assert "ivrserver db migrate" in checks["postgres.partitions"].fix
    await record_schema.migrate_schema(settings_for(empty_db).postgres)     # the fix it names
    assert by_name(await doctor.postgres_checks(settings_for(empty_db)))["postgres.partitions"].ok


async def test_a_role_without_rights_is_named(empty_db: str) -> None:
    await record_schema.migrate_schema(settings_for(empty_db).postgres)
    conn = await asyncpg.connect(empty_db)
    role = f"ro_{abs(hash(empty_db)) % 10**8}"
    try:
        await conn.execute(f'CREATE ROLE "{role}" LOGIN')
        await conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        await conn.execute(f'GRANT INSERT ON contacts, ivr_paths TO "{role}"')
        await conn.execute(f'REVOKE CREATE ON SCHEMA public FROM PUBLIC, "{role}"')
        limited = empty_db.replace("postgresql://ivrserver@", f"postgresql://{role}@")
        checks = by_name(await doctor.postgres_checks(settings_for(limited)))
        rights = checks["postgres.rights"]
        assert not rights.ok
        assert "INSERT on audit" in rights.detail and "UPDATE on contacts" in rights.detail
        assert "CREATE on schema public" in rights.detail and "INSERT on ivr_paths" not in rights.detail
        assert "GRANT" in rights.fix
    finally:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')
        await conn.close()


@covers("doctor")
def test_doctor_cli_prints_the_schema_fix(empty_db: str) -> None:
    result = ivrserver("doctor", env=user_env(IVRSERVER_POSTGRES__DSN=empty_db))
    assert result.returncode == 1
    assert "[ok] postgres.reachable" in result.stdout, result.stdout
    assert "[FAIL] postgres.schema: schema at version 0" in result.stdout
    assert "fix: ivrserver db migrate" in result.stdout
