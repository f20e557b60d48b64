"""Redis rebuilt from the system of record: records reach PostgreSQL through the real outbox and
sink, Redis is flushed (FLUSHALL), and the warm-up re-fills customers (phone and account indexes),
cases and the recent contacts, so a known caller's snapshot works again; PostgreSQL lost nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import asyncpg
import redis.asyncio as aioredis

from ivrserver.domain.model import CaseStatus, Contact, ContactKind, Outcome
from ivrserver.record.sink import Outbox, RecordSink
from ivrserver.services.record_warmup import RecordWarmup
from ivrserver.store import cases as case_store
from ivrserver.store import contacts as contact_store
from ivrserver.store import customers as customer_store
from ivrserver.store.audit import AuditLog
from ivrserver.store.keys import Keys
from tests.record.test_sink_records import case, customer
from tests.test_agent_ws import eventually

NOW = float(int(time.time()))  # whole seconds: PostgreSQL keeps microseconds
N = 120  # customers: more than one warm-up page (batch 50)


def call(i: int, k: int) -> Contact:
    return Contact(id=f"k{i}-{k}", kind=ContactKind.INBOUND, number=f"+86138{i:08d}", started_at=NOW - 3600 * (k + 1),
                   customer_id=f"c{i:04d}", outcome=Outcome.ANSWERED, notes=f"call {k}", agents=("agent1003",))


async def populate(redis: aioredis.Redis, keys: Keys, pool: asyncpg.Pool) -> RecordSink:
    """The store's writes queue their own outbox entries (Keys.records): customer, case, case event."""
    audit = AuditLog(redis, keys)
    for i in range(N):
        c = customer(f"c{i:04d}", phones=(f"+86138{i:08d}",))
        await customer_store.save_customer(redis, keys, c)
        opened = await case_store.open_case(redis, keys, customer_id=c.id, summary=f"issue {i}", now=NOW - 60,
                                            actor="agent1003")
        if i % 3 == 0:
            await case_store.update_case(redis, keys, opened.id, {"status": CaseStatus.CLOSED, "next_step": "none"},
                                         now=NOW - 30, actor="agent1003")
        for k in range(3):
            await contact_store.save_contact(redis, keys, call(i, k), now=NOW)  # its outbox entry, same script
        await audit.append(who="agent1003", role="agent", what="customer.read", target=c.id, why="pop",
                           allowed=True, at=NOW - 10)
    sink = RecordSink(redis, pool, stream=keys.outbox(), dead_stream=keys.outbox_dead(), consumer="a", block_ms=50)
    await sink.ensure_group()
    await sink.drain(30)
    return sink


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    tables = ("customers", "customer_phones", "cases", "case_events", "contacts", "audit")
    return {t: int(await pool.fetchval(f"SELECT count(*) FROM {t}")) for t in tables}


async def test_a_flushed_redis_is_refilled_from_postgres_and_postgres_lost_nothing(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    keys = Keys("t", records=True)
    await populate(redis_client, keys, pool)
    before = await counts(pool)
    closed = len(range(0, N, 3))
    assert before == {"customers": N, "customer_phones": N, "cases": N, "case_events": N + closed,
                      "contacts": 3 * N, "audit": N}
    known = await customer_store.snapshot_by_number(redis_client, keys, "+8613800000004")
    await redis_client.flushall()
    lost = await customer_store.snapshot_by_number(redis_client, keys, "+8613800000004")
    assert lost.customer is None  # an unknown caller until the warm-up is done

    warmup = RecordWarmup(redis_client, keys, pool, retention_days=365, batch=50)
    done = await warmup.warm_up()
    assert (done.read, done.customers, done.cases, done.unreadable) == (N, N, N, 0)
    assert done.contacts == 3 * N
    again = await customer_store.snapshot_by_number(redis_client, keys, "+8613800000004")
    assert again.customer is not None and again.customer == known.customer  # pin_hash included
    assert again.open_cases == known.open_cases and len(again.open_cases) == 1
    assert again.last_contact == known.last_contact and again.last_contact is not None
    # every customer and case is back, with the indexes
    assert await redis_client.zcard(keys.customer_ids()) == N
    assert await customer_store.account_owner(redis_client, keys, "ACC-c0007") == "c0007"
    closed = await case_store.get_case(redis_client, keys, "1")
    assert closed is not None and closed.status is CaseStatus.CLOSED
    assert await case_store.list_open_cases(redis_client, keys, "c0000") == []
    assert len(await contact_store.list_timeline(redis_client, keys, "c0005", now=NOW)) == 3
    # a case opened now does not take a recorded case's id
    fresh = await case_store.open_case(redis_client, keys, customer_id="c0001", summary="new", now=NOW)
    assert int(fresh.id) == N + 1
    assert await counts(pool) == before  # PostgreSQL still holds every record


async def test_the_warmup_keeps_what_redis_holds_and_runs_when_the_marker_is_missing(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    keys = Keys("t", records=True)
    out = Outbox(redis_client, keys.outbox())
    for i in range(3):
        await out.customer(customer(f"c{i}", name="On record", phones=(f"+8613900000{i:03d}",)))
    await out.case(case("41", cid="c0", status=CaseStatus.OPEN), NOW)
    sink = RecordSink(redis_client, pool, stream=keys.outbox(), dead_stream=keys.outbox_dead(), consumer="a",
                      block_ms=50)
    await sink.ensure_group()
    await sink.drain(10)
    await redis_client.flushall()
    # written since the flush (an agent's edit): newer than the record, kept
    newer = dataclasses.replace(customer("c1", name="Edited since", phones=("+8613900000001",)))
    await customer_store.save_customer(redis_client, keys, newer)
    warmup = RecordWarmup(redis_client, keys, pool, retention_days=365, check_every=0.05)
    task = asyncio.create_task(warmup.run())
    try:
        await eventually(lambda: warmup.runs == 1, timeout=10)
        assert (await customer_store.get_customer(redis_client, keys, "c1")) == newer
        c2 = await customer_store.get_customer(redis_client, keys, "c2")
        assert c2 is not None and c2.name == "On record"
        assert int(await redis_client.get(keys.case_seq())) == 41
        await asyncio.sleep(0.2)
        assert warmup.runs == 1  # the marker is there: nothing to do
        await redis_client.flushall()  # flushed again while running
        await eventually(lambda: warmup.runs == 2, timeout=10)
        assert (await customer_store.snapshot_by_number(redis_client, keys, "+8613900000001")).customer is not None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
