"""Use cases of the system of record's schema: apply migrations, report the version, upkeep partitions."""

from __future__ import annotations

from dataclasses import dataclass

from ivrserver.config import PostgresSettings
from ivrserver.record import migrate, partitions


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
            "audit": settings.audit_retention_days}


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
