"""Redis re-filled from the system of record after it lost its data (a flush, a restart without
persistence), while calls are served.

With `postgres.dsn` set, PostgreSQL holds every customer, case and contact; Redis holds what calls
read in one round trip. A marker key (`Keys.record_restored`) is written after a successful warm-up;
this loop looks for it every `check_every` seconds and, when it is missing, copies back from
PostgreSQL in keyset-paged batches: agents' page preferences first (one row per agent: back within
seconds, however many customers follow), customers with their phone and account indexes, their
cases, their newest contacts (what the caller snapshot reads), and raises the case sequence above
every recorded case id first (a case opened meanwhile must not take a recorded id). Only absent
keys (and preference fields) are written (store/restore.py, store/agent_prefs.restore), so what
calls and agents wrote since the flush is kept, and a first start over a Redis that lost nothing
changes nothing. Until a customer is back, their calls are served as an unknown caller's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ivrserver.record import reads
from ivrserver.store import restore
from ivrserver.store.agent_prefs import AgentPrefsStore

if TYPE_CHECKING:
    import asyncpg
    import redis.asyncio as aioredis

    from ivrserver.store.keys import Keys

log = logging.getLogger(__name__)


@dataclass
class Restored:
    customers: int = 0  # written (absent from Redis before)
    cases: int = 0
    contacts: int = 0
    agents: int = 0  # agents whose preferences were written back
    read: int = 0  # customers read from PostgreSQL
    unreadable: int = 0
    seconds: float = 0.0


class RecordWarmup:
    def __init__(self, redis: aioredis.Redis, keys: Keys, pool: asyncpg.Pool, *, retention_days: int,
                 batch: int = 500, contacts_per_customer: int = 10, check_every: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.keys = keys
        self.pool = pool
        self.retention_days = retention_days
        self.batch = batch
        self.contacts_per_customer = contacts_per_customer
        self.check_every = check_every
        self.clock = clock
        self.runs = 0

    async def run(self) -> None:
        """Forever (under the app's supervisor): warm up whenever the marker is missing. Redis or
        PostgreSQL away: logged once, tried again at the next check."""
        failing = False
        while True:
            try:
                if not await restore.is_restored(self.redis, self.keys):
                    await self.warm_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    failing = True
                    log.warning("record warm-up: cannot re-fill Redis from PostgreSQL (%s); tried again in %.0f s",
                                f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200], self.check_every)
            else:
                if failing:
                    failing = False
                    log.info("record warm-up: works again")
            await asyncio.sleep(self.check_every)

    async def _agent_preferences(self, done: Restored) -> None:
        store = AgentPrefsStore(self.redis, self.keys)
        after = ""
        while True:
            async with self.pool.acquire() as conn:
                prefs, unreadable, last = await reads.agent_preferences_page(conn, after=after, limit=self.batch)
            if last is None:
                return
            done.unreadable += unreadable
            done.agents += await store.restore(prefs)
            after = last

    async def warm_up(self) -> Restored:
        """One full pass, then the marker; returns what was written."""
        started = self.clock()
        done = Restored()
        log.warning("record warm-up: Redis does not hold the system of record's data (flushed, or restarted "
                    "without persistence); re-filling it from PostgreSQL while calls are served")
        async with self.pool.acquire() as conn:
            highest = await reads.max_case_id(conn)
        await restore.raise_case_sequence(self.redis, self.keys, highest)
        await self._agent_preferences(done)
        since = datetime.fromtimestamp(started, UTC) - timedelta(days=self.retention_days)
        after = ""
        while True:
            async with self.pool.acquire() as conn:
                page = await reads.page(conn, after=after, limit=self.batch, contacts_since=since,
                                        contacts_per_customer=self.contacts_per_customer)
            if page.last_id is None:
                break
            done.read += len(page.customers)
            done.unreadable += page.unreadable
            done.customers += await restore.restore_customers(self.redis, self.keys, page.customers)
            done.cases += await restore.restore_cases(self.redis, self.keys, page.cases)
            done.contacts += await restore.restore_contacts(self.redis, self.keys, page.contacts, now=self.clock(),
                                                            retention_days=self.retention_days)
            after = page.last_id
        await restore.mark_restored(self.redis, self.keys, self.clock())
        done.seconds = self.clock() - started
        self.runs += 1
        log.info("record warm-up: done in %.1f s: %d customers read, %d customers, %d cases, %d contacts, "
                    "%d agents' preferences written back to Redis%s", done.seconds, done.read, done.customers,
                    done.cases, done.contacts, done.agents,
                    f"; {done.unreadable} unreadable rows skipped" if done.unreadable else "")
        return done
