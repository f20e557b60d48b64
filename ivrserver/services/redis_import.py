"""`ivrserver db import-redis`: copy a Redis-only deployment's records into PostgreSQL.

Customers, cases, contacts, IVR paths, audit entries and agents' page preferences, read in batches
(SCAN, XRANGE) and written by the same idempotent upserts the record sink uses: run it twice and
the database is as after once (contacts and preferences keep a newer version the sink wrote; audit
entries are keyed by their stream id).
Records older than their table's retention are skipped (retention would drop them; in the default
partition it never could). Partitions for the months the data covers are created first. Redis is
only read. A case whose customer is not in Redis is skipped and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ivrserver.config import Settings
from ivrserver.domain.i18n import LANGUAGES
from ivrserver.domain.model import Case, Contact
from ivrserver.store import cases as case_store
from ivrserver.store import contacts as contact_store
from ivrserver.store.agent_prefs import AgentPrefsStore
from ivrserver.store.callpath import read_path
from ivrserver.store.client import connect_for_command
from ivrserver.store.customers import iter_customers
from ivrserver.store.keys import Keys

BATCH = 500
ACTOR = "import-redis"


@dataclass
class ImportCounts:
    customers: int = 0
    cases: int = 0
    contacts: int = 0
    paths: int = 0
    audit: int = 0
    agent_prefs: int = 0
    skipped: dict[str, int] = field(default_factory=dict)   # why → how many
    partitions: list[str] = field(default_factory=list)

    def skip(self, why: str, n: int = 1) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + n


async def _scan_values(redis, pattern: str, batch: int) -> AsyncIterator[list[str]]:  # type: ignore[no-untyped-def]
    """The string values of the keys matching `pattern`, a batch at a time."""
    keys: list[str] = []
    async for key in redis.scan_iter(match=pattern, count=batch, _type="string"):
        keys.append(key)
        if len(keys) >= batch:
            yield [v for v in await redis.mget(keys) if v is not None]
            keys = []
    if keys:
        yield [v for v in await redis.mget(keys) if v is not None]


async def import_redis(settings: Settings, *, now: datetime | None = None, batch: int = BATCH,
                       progress: Callable[[str], None] | None = None) -> ImportCounts:
    import asyncpg

    from ivrserver.record import partitions, profiles, rollup, rows
    from ivrserver.services.record_schema import NotConfigured, retention

    if not settings.postgres.dsn:
        raise NotConfigured("postgres.dsn is not set: the database to import into (IVRSERVER_POSTGRES__DSN)")
    now = now or datetime.now(UTC)
    keep = {table: now - timedelta(days=days) for table, days in retention(settings.postgres).items()}
    say = progress or (lambda _text: None)
    counts = ImportCounts()
    redis = connect_for_command(settings.redis, decode_responses=True)
    keys = Keys(settings.redis.prefix)
    conn = await asyncpg.connect(settings.postgres.dsn, timeout=10)
    try:
        from ivrserver.record import migrate

        version, newest = await migrate.status(conn)
        if version != newest:
            raise NotConfigured(f"the schema is at version {version} of {newest}: run `ivrserver db migrate` first")
        # partitions for every month the retention keeps: old data must not land in the default one
        for table, since in keep.items():
            counts.partitions += await partitions.ensure_months(conn, table, max(since, await _oldest(
                redis, keys, table, since)), now)

        # customers first: cases reference them
        known: set[str] = set()
        page = []
        async for customer in iter_customers(redis, keys, batch=batch):
            page.append(customer)
            if len(page) >= batch:
                await _write(conn, profiles.upsert_customers, page)
                counts.customers += len(page)
                known.update(c.id for c in page)
                page = []
        if page:
            await _write(conn, profiles.upsert_customers, page)
            counts.customers += len(page)
            known.update(c.id for c in page)
        say(f"customers {counts.customers}")

        async for values in _scan_values(redis, keys.case("*"), batch):
            found: list[Case] = [c for c in map(case_store.case_from_json, values) if c is not None]
            counts.skip("unreadable case", len(values) - len(found))
            ok = [c for c in found if c.customer_id in known]
            counts.skip("case of an unknown customer", len(found) - len(ok))
            async with conn.transaction():
                await profiles.upsert_cases(conn, ok, now=now, actor=ACTOR)
            counts.cases += len(ok)
        say(f"cases {counts.cases}")

        async for values in _scan_values(redis, keys.contact("*"), batch):
            contacts: list[Contact] = [c for c in map(contact_store.contact_from_json, values) if c is not None]
            counts.skip("unreadable contact", len(values) - len(contacts))
            young = [c for c in contacts if c.started_at >= keep["contacts"].timestamp()]
            counts.skip("contact past retention", len(contacts) - len(young))
            if young:
                async with conn.transaction():
                    await rows.upsert_contacts(conn, [(c, 0) for c in young])   # rev 0: never over the sink's
            counts.contacts += len(young)
        say(f"contacts {counts.contacts}")

        ids: list[str] = []
        prefix = keys.ivr_path("")
        async for key in redis.scan_iter(match=keys.ivr_path("*"), count=batch, _type="list"):
            ids.append(key[len(prefix):])
            if len(ids) >= batch:
                await _paths(redis, keys, conn, ids, keep["ivr_paths"], counts, rows, rollup)
                ids = []
        if ids:
            await _paths(redis, keys, conn, ids, keep["ivr_paths"], counts, rows, rollup)
        if counts.paths:
            await rollup.roll(conn, now)
        say(f"paths {counts.paths}")

        start = "-"
        while True:
            entries = await redis.xrange(keys.audit(), min=start, max="+", count=batch)
            if not entries:
                break
            found_rows = [_audit_row(i, f, rows) for i, f in entries]
            young_rows = [r for r in found_rows if r.at >= keep["audit"].timestamp()]
            counts.skip("audit entry past retention", len(found_rows) - len(young_rows))
            if young_rows:
                async with conn.transaction():
                    await rows.insert_audit(conn, young_rows)
            counts.audit += len(young_rows)
            start = f"({entries[-1][0]}"
        say(f"audit {counts.audit}")

        await _agent_prefs(AgentPrefsStore(redis, keys), conn, batch, now, counts, rows)  # counted in the summary
    finally:
        await conn.close()
        await redis.aclose()
    return counts


async def _oldest(redis, keys: Keys, table: str, default: datetime) -> datetime:  # type: ignore[no-untyped-def]
    """The oldest audit entry's time (the stream is ordered); `default` for the other tables."""
    if table != "audit":
        return default
    first = await redis.xrange(keys.audit(), count=1)
    if not first:
        return datetime.now(UTC)
    return datetime.fromtimestamp(float(first[0][1].get("at", "0") or 0), UTC)


async def _write(conn, upsert, page) -> None:  # type: ignore[no-untyped-def]
    async with conn.transaction():
        await upsert(conn, page)


async def _paths(redis, keys: Keys, conn, ids: list[str], since: datetime, counts: ImportCounts,  # type: ignore[no-untyped-def]
                 rows, rollup) -> None:
    found = []
    for at in range(0, len(ids), 50):   # 50 reads in flight: 50 pooled connections at most
        found += [p for p in await asyncio.gather(*(read_path(redis, keys, i) for i in ids[at:at + 50]))
                  if p is not None]
    counts.skip("unreadable path", len(ids) - len(found))
    young = [p for p in found if p.started_at >= since.timestamp()]
    counts.skip("path past retention", len(found) - len(young))
    if young:
        async with conn.transaction():
            await rows.upsert_paths(conn, young)
            await rollup.mark_dirty(conn, young)
    counts.paths += len(young)


async def _agent_prefs(store: AgentPrefsStore, conn, batch: int, now: datetime,  # type: ignore[no-untyped-def]
                       counts: ImportCounts, rows) -> None:
    """Every agent's language, checked as the REST API checks it; rev 0: never over the sink's, and
    `now` as their time (Redis does not keep when the agent chose)."""
    async for page in store.iter_all(batch=batch):
        found = [rows.AgentPrefsRow(agent_id, fields["language"], now.timestamp())
                 for agent_id, fields in page if fields.get("language") in LANGUAGES]
        counts.skip("unreadable agent preference", len(page) - len(found))
        if found:
            async with conn.transaction():
                await rows.upsert_agent_preferences(conn, [(p, 0) for p in found])
        counts.agent_prefs += len(found)


def _audit_row(entry_id: str, f: dict[str, str], rows):  # type: ignore[no-untyped-def]
    return rows.AuditEntry(id=entry_id, at=float(f.get("at", "0") or 0), who=f.get("who", ""), role=f.get("role", ""),
                         what=f.get("what", ""), target=f.get("target", ""), why=f.get("why", ""),
                         allowed=f.get("allowed") == "1", source=f.get("source", ""))
