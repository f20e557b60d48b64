"""The system of record inside a running ivrserver: the pool, the sink and the upkeep loop.

`IvrServer` builds one `RecordRuntime` when `postgres.dsn` is set. It applies no migration
(`ivrserver db migrate` does): `open()` refuses to start on a schema that is not at the version this
ivrserver ships, with the command that fixes it. PostgreSQL unreachable at start is no reason to
refuse calls: records wait in the Redis outbox and the sink writes them once it is back (the
schema is then checked by the sink before its first write).

Tasks it gives the app's supervisor:
- `sink.run`: moves outbox entries into PostgreSQL (record/sink.py), one consumer per instance
  (named by `instance`), several instances sharing one consumer group;
- `upkeep`: `partitions.maintain` at start and then daily (next months' partitions created, whole
  months past retention dropped) and `rollup.roll` every minute (menu statistics).
`close()` drains what is still waiting in the outbox (bounded time) and closes the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ivrserver.record import migrate, partitions, rollup
from ivrserver.record import reports as report_rollups
from ivrserver.record.sink import Batch, RecordSink

if TYPE_CHECKING:
    import asyncpg
    import redis.asyncio as aioredis

    from ivrserver.config import PostgresSettings
    from ivrserver.store.keys import Keys

log = logging.getLogger(__name__)

ROLL_EVERY = 60.0
MAINTAIN_EVERY = 24 * 3600.0


class SchemaNotCurrent(RuntimeError):
    """The database is not at the schema version this ivrserver needs; the message says what to run."""


def schema_problem(applied: int, newest: int) -> str | None:
    """Why the server must not write into a database at `applied` (None: it may)."""
    if applied == newest:
        return None
    if applied < newest:
        return (f"the PostgreSQL schema is at version {applied}, this ivrserver needs {newest}: "
                "run `ivrserver db migrate` (the server applies no migration itself)")
    return (f"the PostgreSQL schema is at version {applied}, newer than this ivrserver knows ({newest}): "
            "run the newer ivrserver")


async def check_schema(conn: asyncpg.Connection) -> None:
    applied, newest = await migrate.status(conn)
    problem = schema_problem(applied, newest)
    if problem is not None:
        raise SchemaNotCurrent(problem)


async def prepare(conn: asyncpg.Connection, retention_days: dict[str, int], now: datetime) -> None:
    """Before the first write: the schema is current and this month's partitions exist (a row
    written into a default partition would keep its month's partition from being created)."""
    await check_schema(conn)
    await partitions.maintain(conn, retention_days, now)


class CheckedSink(RecordSink):
    """A sink that writes nothing before `prepare` succeeded once (PostgreSQL was away at start)."""

    prepared = False
    retention_days: dict[str, int]

    async def _write(self, batch: Batch) -> None:
        if not self.prepared:
            async with self.pool.acquire() as conn:
                await prepare(conn, self.retention_days, datetime.now(UTC))
            self.prepared = True
        await super()._write(batch)


class RecordRuntime:
    def __init__(self, settings: PostgresSettings, redis: aioredis.Redis, keys: Keys, *, instance: str,
                 connect_timeout: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.instance = instance
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.pool: asyncpg.Pool | None = None
        self.sink: CheckedSink | None = None
        self.reports_every = 300.0  # reports.roll_interval (app.py sets it): dirty report hours recomputed

    @property
    def retention_days(self) -> dict[str, int]:
        s = self.settings
        return {"contacts": s.contacts_retention_days, "ivr_paths": s.paths_retention_days,
                "audit": s.audit_retention_days, "webhook_deliveries": s.webhooks_retention_days}

    async def open(self) -> None:
        """Create the pool and the sink; raise SchemaNotCurrent when the schema is not the newest."""
        import asyncpg

        # min_size 0: creating the pool does not connect, so an unreachable PostgreSQL does not stop
        # the server from taking calls (records wait in the outbox).
        self.pool = await asyncpg.create_pool(self.settings.dsn, min_size=0, max_size=max(1, self.settings.pool_size),
                                              timeout=self.connect_timeout, command_timeout=60)
        self.sink = CheckedSink(self.redis, self.pool, stream=self.keys.outbox(), dead_stream=self.keys.outbox_dead(),
                                consumer=self.instance, write_interval=self.settings.write_interval)
        self.sink.retention_days = self.retention_days
        try:
            async with asyncio.timeout(self.connect_timeout), self.pool.acquire() as conn:
                await prepare(conn, self.retention_days, datetime.fromtimestamp(self.clock(), UTC))
        except SchemaNotCurrent:
            await self.pool.close()
            raise
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            log.error("PostgreSQL not reachable at start (%s): calls are served, their records wait in Redis "
                      "until it is back", _short(exc))
            return
        self.sink.prepared = True

    async def upkeep(self) -> None:
        """Forever: partitions at start and daily, rollups every minute. A failure (PostgreSQL away)
        is logged once per kind and retried at the next turn, never fatal."""
        next_maintain = next_reports = 0.0
        failing: set[str] = set()
        while True:
            now = self.clock()
            if now >= next_maintain and await self._guarded("partitions", failing, self._maintain):
                next_maintain = now + MAINTAIN_EVERY
            await self._guarded("rollup", failing, self._roll)
            if now >= next_reports and await self._guarded("reports", failing, report_rollups.roll):
                next_reports = now + self.reports_every
            await asyncio.sleep(ROLL_EVERY)

    async def _maintain(self, conn: asyncpg.Connection) -> None:
        now = datetime.fromtimestamp(self.clock(), UTC)
        created, dropped = await partitions.maintain(conn, self.retention_days, now)
        if created or dropped:
            log.info("partitions: created %s, dropped %s", ", ".join(created) or "none", ", ".join(dropped) or "none")

    async def _roll(self, conn: asyncpg.Connection) -> None:
        await rollup.roll(conn, datetime.fromtimestamp(self.clock(), UTC))

    async def _guarded(self, what: str, failing: set[str], step: Callable[[asyncpg.Connection], object]) -> bool:
        assert self.pool is not None
        try:
            async with self.pool.acquire() as conn:
                await step(conn)  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if what not in failing:
                failing.add(what)
                log.warning("record upkeep (%s) failed: %s; retried later", what, _short(exc))
            return False
        if what in failing:
            failing.discard(what)
            log.info("record upkeep (%s) works again", what)
        return True

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Write what waits in the outbox now (at most `drain_timeout` s), then close the pool."""
        if self.sink is not None:
            try:
                await self.sink.ensure_group()
                await self.sink.drain(drain_timeout)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    left = await self.sink.pending()
                    log.warning("record sink: %d outbox entries left in Redis at shutdown (%s); the next start "
                                "writes them", left, _short(exc))
        if self.pool is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(drain_timeout):
                    await self.pool.close()
            self.pool = None


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200]
