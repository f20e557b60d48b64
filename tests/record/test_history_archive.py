"""A customer's history beyond Redis's hot window, from PostgreSQL (real Redis, real PostgreSQL):
Redis holds the last 30 days, the record holds years; the history reads Redis first and fills up
from PostgreSQL, Redis's copy winning (a note added since), pages back with `before`, and shows
Redis's part, saying so, when PostgreSQL does not answer."""

from __future__ import annotations

import dataclasses
import time

import asyncpg
import redis.asyncio as aioredis

from ivrserver.domain.model import Contact, ContactKind, Outcome
from ivrserver.record.reads import RecordArchive
from ivrserver.record.rows import upsert_contacts
from ivrserver.services.customers import CustomerService
from ivrserver.store import contacts as contact_store
from ivrserver.store import customers as customer_store
from ivrserver.store.keys import Keys
from tests.conftest import free_port
from tests.record.test_sink_records import customer

NOW = float(int(time.time()))  # whole seconds: PostgreSQL keeps microseconds
DAY = 86400.0


def call(n: int, days_ago: float, notes: str = "") -> Contact:
    return Contact(id=f"k-{n}", kind=ContactKind.INBOUND, number="+8613800000001", started_at=NOW - days_ago * DAY,
                   customer_id="c1", outcome=Outcome.ANSWERED, agents=("agent1003",), notes=notes or f"call {n}")


async def seeded(redis: aioredis.Redis, keys: Keys, pool: asyncpg.Pool) -> list[Contact]:
    """7 calls over two years, all in PostgreSQL; the 3 of the last 30 days also in Redis, one of
    them with a note Redis has and the record has not yet."""
    await customer_store.save_customer(redis, keys, customer("c1"))
    calls = [call(0, 0.5), call(1, 3), call(2, 20), call(3, 45), call(4, 200), call(5, 400), call(6, 700)]
    async with pool.acquire() as conn:
        await upsert_contacts(conn, [(c, 1) for c in calls])
    for c in calls[:3]:
        newer = dataclasses.replace(c, notes="refund promised") if c.id == "k-1" else c
        await contact_store.save_contact(redis, keys, newer, now=NOW, retention_days=30)
    return calls


async def test_the_history_reads_redis_then_the_record_and_pages_back(
        redis_client: aioredis.Redis, keys: Keys, pool: asyncpg.Pool) -> None:
    calls = await seeded(redis_client, keys, pool)
    svc = CustomerService(redis_client, keys, retention_days=30, clock=lambda: NOW)
    hot = await svc.timeline("c1", limit=50)
    assert hot is not None and [c.id for c in hot.contacts] == ["k-0", "k-1", "k-2"] and hot.source == "redis"

    svc.attach_archive(RecordArchive(lambda: pool))
    full = await svc.timeline("c1", limit=50)
    assert full is not None and full.source == "record"
    assert [c.id for c in full.contacts] == [c.id for c in calls]  # newest first, each once
    assert full.contacts[1].notes == "refund promised"  # Redis's copy wins over the record's
    assert full.contacts[5].started_at == calls[5].started_at and full.contacts[5].agents == ("agent1003",)

    pages, before = [], None
    while True:  # 3 a page, as an agent's page scrolls back
        page = await svc.timeline("c1", limit=3, before=before)
        assert page is not None
        pages.append([c.id for c in page.contacts])
        if len(page.contacts) < 3:
            break
        before = page.contacts[-1].started_at
    assert pages == [["k-0", "k-1", "k-2"], ["k-3", "k-4", "k-5"], ["k-6"]]
    straddling = await svc.timeline("c1", limit=2, before=calls[1].started_at)  # Redis's k-2, then the record's k-3
    assert straddling is not None and [c.id for c in straddling.contacts] == ["k-2", "k-3"]


async def test_without_postgresql_the_history_is_redis_s_part_and_says_so(
        redis_client: aioredis.Redis, keys: Keys, pool: asyncpg.Pool) -> None:
    await seeded(redis_client, keys, pool)
    nobody = await asyncpg.create_pool(f"postgresql://ivrserver@127.0.0.1:{free_port()}/none", min_size=0)
    try:
        svc = CustomerService(redis_client, keys, retention_days=30, clock=lambda: NOW)
        svc.attach_archive(RecordArchive(lambda: nobody, timeout=1.0))
        found = await svc.timeline("c1", limit=50)
        assert found is not None and found.source == "redis only"
        assert [c.id for c in found.contacts] == ["k-0", "k-1", "k-2"]
        svc.attach_archive(RecordArchive(lambda: None))  # the record's pool not open yet
        assert (await svc.timeline("c1", limit=50)).source == "redis only"  # type: ignore[union-attr]
    finally:
        await nobody.close()
