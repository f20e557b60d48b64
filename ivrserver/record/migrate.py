"""Versioned schema migrations: numbered plain-SQL files applied in order, each in a transaction.

Why not alembic: it needs SQLAlchemy and a synchronous driver, and its migrations are Python;
ours are plain SQL files read by a reviewer and applied by one asyncpg connection. The runner is
a version table plus an advisory lock so two instances starting together apply each file once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# pg_advisory_xact_lock key: any constant unique to this application.
_LOCK_KEY = 0x1F_5E_12_76


class MigrationError(RuntimeError):
    """A migration file is malformed, missing or failed; the message names it."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The migrations shipped in ivrserver/record/migrations, in version order (gaps refused)."""
    folder = resources.files("ivrserver.record") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_RE.match(entry.name)
        if not match:
            if entry.name.endswith(".sql"):
                raise MigrationError(f"{entry.name}: migration files are named NNNN_name.sql")
            continue
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {expected:04d} is missing (found {migration.version:04d})")
    return found


def pending(applied: set[int], shipped: list[Migration]) -> list[Migration]:
    """What is left to apply; a database newer than this code is an error, not a silent no-op."""
    known = {m.version for m in shipped}
    unknown = sorted(applied - known)
    if unknown:
        raise MigrationError(f"the database has migration(s) {unknown} that this ivrserver does not know: "
                             "run the newer ivrserver, or restore a backup")
    return [m for m in shipped if m.version not in applied]


async def applied_versions(conn: asyncpg.Connection) -> set[int]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}


async def migrate(conn: asyncpg.Connection, target: int | None = None) -> list[Migration]:
    """Apply pending migrations up to `target` (all by default); returns what was applied."""
    shipped = available()
    done: list[Migration] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())""")
        applied = await applied_versions(conn)
        for migration in pending(applied, shipped):
            if target is not None and migration.version > target:
                break
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                       migration.version, migration.name)
            except Exception as exc:
                raise MigrationError(f"migration {migration.version:04d}_{migration.name} failed: {exc}") from exc
            done.append(migration)
    return done


async def status(conn: asyncpg.Connection) -> tuple[int, int]:
    """(applied version, newest shipped version)."""
    applied = await applied_versions(conn)
    shipped = available()
    return (max(applied) if applied else 0), (shipped[-1].version if shipped else 0)
