"""Use cases of the system of record's schema: apply migrations, report the version, upkeep partitions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from ivrserver.config import PostgresSettings
from ivrserver.record import migrate, partitions
from ivrserver.record import reports as report_rollups


class NotConfigured(RuntimeError):
    """postgres.dsn is empty."""


@dataclass(frozen=True)
class SchemaReport:
    applied: list[str]
    version: int
    newest: int
    created: list[str]
    dropped: list[str]


def retention(settings: PostgresSettings) -> dict[str, int]:
    return {"contacts": settings.contacts_retention_days, "ivr_paths": settings.paths_retention_days,
            "audit": settings.audit_retention_days, "webhook_deliveries": settings.webhooks_retention_days}


async def _connect(settings: PostgresSettings):  # type: ignore[no-untyped-def]
    import asyncpg

    if not settings.dsn:
        raise NotConfigured("postgres.dsn is not set (IVRSERVER_POSTGRES__DSN or `postgres: {dsn: …}` in the "
                            "settings file); `make run` writes one for its own cluster in run/ivrserver.yaml")
    return await asyncpg.connect(settings.dsn, timeout=10)


async def migrate_schema(settings: PostgresSettings, target: int | None = None) -> SchemaReport:
    """Apply pending migrations (up to `target`), then create this and the next months' partitions
    and drop those past retention."""
    conn = await _connect(settings)
    try:
        done = await migrate.migrate(conn, target)
        version, newest = await migrate.status(conn)
        created: list[str] = []
        dropped: list[str] = []
        if version == newest:
            created, dropped = await partitions.maintain(conn, retention(settings))
        return SchemaReport([f"{m.version:04d}_{m.name}" for m in done], version, newest, created, dropped)
    finally:
        await conn.close()


async def schema_status(settings: PostgresSettings) -> SchemaReport:
    conn = await _connect(settings)
    try:
        version, newest = await migrate.status(conn)
        return SchemaReport([], version, newest, [], [])
    finally:
        await conn.close()


@dataclass(frozen=True)
class RecordHealth:
    """What `doctor` reports about the system of record; `error` set = not reachable (the rest empty)."""

    dsn: str
    error: str = ""
    version: int = 0
    newest: int = 0
    missing_rights: tuple[str, ...] = ()
    missing_partitions: tuple[str, ...] = ()


def shown_dsn(dsn: str) -> str:
    """The DSN without its password (doctor prints it)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(dsn)
        if parts.password is None:
            return dsn
        netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(unparsable dsn)"


async def health(settings: PostgresSettings, now: datetime) -> RecordHealth:
    """Reachable? Migrated? The role's rights? This and next month's partitions?"""
    from ivrserver.record import health as record_health

    shown = shown_dsn(settings.dsn)
    try:
        conn = await asyncio.wait_for(_connect(settings), 10)
    except Exception as exc:  # refused, unknown host, bad password, no such database: say which
        return RecordHealth(shown, error=f"{type(exc).__name__}: {str(exc)[:300]}")
    try:
        version, newest = await migrate.status(conn)
        if version != newest:   # the tables to ask about may not exist yet: doctor says so
            return RecordHealth(shown, version=version, newest=newest)
        rights = await record_health.missing_rights(conn)
        missing = await record_health.missing_partitions(conn, now)
        return RecordHealth(shown, version=version, newest=newest, missing_rights=tuple(rights),
                            missing_partitions=tuple(missing))
    finally:
        await conn.close()


async def reroll_reports(settings: PostgresSettings, since: datetime, until: datetime) -> dict[str, int]:
    """Mark every hour of [since, until) that still has raw rows for the running servers' upkeep to
    recompute its report rollups and menu statistics (after a change of how a figure is counted);
    hours past retention keep the rollups they have. Returns marks per source."""
    conn = await _connect(settings)
    try:
        version, newest = await migrate.status(conn)
        if version < newest:
            raise NotConfigured(f"schema at version {version} of {newest}: run `ivrserver db migrate` first")
        return await report_rollups.mark_range(conn, since, until)
    finally:
        await conn.close()
