"""The audit log beyond Redis's hot window, from PostgreSQL (real Redis, real PostgreSQL): Redis
keeps the last 30 days of the stream, the `audit` table keeps years; a supervisor's page reads
Redis, then the table below Redis's oldest entry, in the order of the stream ids' numbers (not
their text: `…-10` comes after `…-9`), pages back with `before` without losing or repeating an
entry, and shows Redis's part, saying so, when PostgreSQL does not answer."""

from __future__ import annotations

import time

import asyncpg
import redis.asyncio as aioredis

from ivrserver.domain.model import Agent, AuditEntry
from ivrserver.record.reads import RecordArchive
from ivrserver.record.rows import insert_audit
from ivrserver.services.privacy import PrivacyService
from ivrserver.store.audit import AuditLog
from ivrserver.store.grants import AccessGrants
from ivrserver.store.keys import Keys
from tests.conftest import free_port

SUPERVISOR = Agent(id="agent1010", name="Supervisor", endpoint="PJSIP/agent1010", supervisor=True)
LAST_YEAR_MS = int((time.time() - 365 * 86400) * 1000)


def old(ms: int, seq: int) -> AuditEntry:
    return AuditEntry(id=f"{ms}-{seq}", at=ms / 1000, who="agent1003", role="agent", what="customer.read",
                      target=f"c-{ms}-{seq}", why="pop", allowed=True, source="10.0.0.7")


async def seeded(redis: aioredis.Redis, keys: Keys, pool: asyncpg.Pool) -> list[str]:
    """12 entries of last year in one millisecond (seq 0..11) and 3 a day before, only in the
    table; 3 of today in Redis and in the table (as the sink writes them). The ids, newest first."""
    audit = AuditLog(redis, keys)
    today = [await audit.append(who="agent1001", role="agent", what="customer.read", target=f"t{i}",
                                why="pop", allowed=True, at=time.time()) for i in range(3)]
    archived = [old(LAST_YEAR_MS, seq) for seq in range(12)] + [old(LAST_YEAR_MS - 86_400_000, s) for s in range(3)]
    recent = [e for e in await audit.recent(count=10)]
    async with pool.acquire() as conn:
        await insert_audit(conn, archived + recent)
    return today[::-1] + [f"{LAST_YEAR_MS}-{s}" for s in range(11, -1, -1)] + \
        [f"{LAST_YEAR_MS - 86_400_000}-{s}" for s in (2, 1, 0)]


async def test_the_audit_reads_redis_then_the_record_in_stream_id_order(
        redis_client: aioredis.Redis, keys: Keys, pool: asyncpg.Pool) -> None:
    expected = await seeded(redis_client, keys, pool)
    privacy = PrivacyService(AccessGrants(redis_client, keys), AuditLog(redis_client, keys))
    alone = await privacy.read_audit(SUPERVISOR, count=100, before=None)
    assert [e["id"] for e in alone.entries] == expected[:3] and alone.source == "redis"

    privacy.attach_archive(RecordArchive(lambda: pool))
    # the first read of this test audited itself: from here on the reads see it too (newest)
    first = await privacy.read_audit(SUPERVISOR, count=100, before=expected[0])
    assert [e["id"] for e in first.entries] == expected[1:] and first.source == "record"
    assert first.entries[2] == {"id": f"{LAST_YEAR_MS}-11", "at": LAST_YEAR_MS / 1000, "who": "agent1003",
                                "role": "agent", "what": "customer.read", "target": f"c-{LAST_YEAR_MS}-11",
                                "why": "pop", "allowed": True, "source": "10.0.0.7"}
    pages, before = [], None
    while True:  # 4 a page, as the supervisor's page scrolls back: every entry once, in order
        page = await privacy.read_audit(SUPERVISOR, count=4, before=before)
        pages += [e["id"] for e in page.entries]
        if len(page.entries) < 4:
            break
        before = page.entries[-1]["id"]
    reads = [p for p in pages if p not in expected]  # the pages' own audit.read entries, newest
    assert pages == reads + expected and len(reads) >= 1


async def test_without_postgresql_the_audit_is_redis_s_part_and_says_so(
        redis_client: aioredis.Redis, keys: Keys, pool: asyncpg.Pool) -> None:
    expected = await seeded(redis_client, keys, pool)
    nobody = await asyncpg.create_pool(f"postgresql://ivrserver@127.0.0.1:{free_port()}/none", min_size=0)
    try:
        privacy = PrivacyService(AccessGrants(redis_client, keys), AuditLog(redis_client, keys))
        privacy.attach_archive(RecordArchive(lambda: nobody, timeout=1.0))
        page = await privacy.read_audit(SUPERVISOR, count=100, before=expected[0])
        assert [e["id"] for e in page.entries] == expected[1:3] and page.source == "redis only"
    finally:
        await nobody.close()
