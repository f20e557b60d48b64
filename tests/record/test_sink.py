"""The outbox → PostgreSQL sink on a real Redis and a real PostgreSQL: batches, revisions,
redelivery after a crash, a PostgreSQL outage, undecodable entries."""

from __future__ import annotations

import asyncio
import logging
import tempfile

import asyncpg
import pytest
import redis.asyncio as aioredis

from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import Contact, ContactKind, Outcome
from ivrserver.record import migrate
from ivrserver.record.local_cluster import LocalPostgres
from ivrserver.record.rows import AuditEntry, upsert_contacts
from ivrserver.record.sink import Outbox, RecordSink, decode, revision
from tests.test_agent_ws import eventually

STREAM, DEAD = "t:outbox", "t:outbox:dead"
T0 = 1_764_800_000.0  # 2025-12-03


def contact(cid: str, outcome: Outcome = Outcome.IN_PROGRESS, notes: str = "") -> Contact:
    return Contact(id=cid, kind=ContactKind.INBOUND, number="+8613800000001", started_at=T0, customer_id="c1",
                   outcome=outcome, notes=notes, agents=("agent1003",), ivr_path=("main", "faults"))


def sink(redis: aioredis.Redis, pool: asyncpg.Pool, consumer: str = "a", **kw: object) -> RecordSink:
    return RecordSink(redis, pool, stream=STREAM, dead_stream=DEAD, consumer=consumer, block_ms=50, **kw)


async def test_records_reach_postgres_in_one_batch_newest_revision_wins(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    out = Outbox(redis_client, STREAM)
    s = sink(redis_client, pool)
    await s.ensure_group()
    await out.contact(contact("k1"))
    await out.contact(contact("k1", Outcome.ANSWERED, notes="refund promised"))
    path = CallPath("call-1", "hotline", "v1", T0, (PathEvent(PathKind.ENTER, "main", T0),
                                                    PathEvent(PathKind.EXIT, "main", T0 + 3, detail="queue")))
    await out.path(path)
    await out.audit("1-1", AuditEntry(id="1-1", at=T0, who="agent1003", role="agent", what="customer.read",
                                    target="c1", why="pop", allowed=True))
    assert await s.step() == 4
    assert await s.pending() == 0
    row = await pool.fetchrow("SELECT outcome, notes, agents, ivr_path FROM contacts WHERE id = 'k1'")
    assert dict(row) == {"outcome": "answered", "notes": "refund promised", "agents": ["agent1003"],
                         "ivr_path": ["main", "faults"]}
    assert await pool.fetchval("SELECT exit_reason FROM ivr_paths WHERE call_id = 'call-1'") == "queue"
    assert await pool.fetchval("SELECT actor FROM audit WHERE entry_id = '1-1'") == "agent1003"


async def test_an_older_revision_delivered_late_never_overwrites_a_newer_one(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    out = Outbox(redis_client, STREAM)
    s = sink(redis_client, pool)
    await s.ensure_group()
    old_id = await out.contact(contact("k2"))
    await out.contact(contact("k2", Outcome.ANSWERED))
    assert await s.step() == 2
    # The in-progress version arrives again (a redelivery after a crash before its ack).
    async with pool.acquire() as conn:
        await upsert_contacts(conn, [(contact("k2"), revision(old_id))])
    assert await pool.fetchval("SELECT outcome FROM contacts WHERE id = 'k2'") == "answered"


async def test_a_crash_between_commit_and_ack_writes_nothing_twice(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    out = Outbox(redis_client, STREAM)
    first = sink(redis_client, pool, consumer="dies", claim_idle=0.05)
    await first.ensure_group()
    for i in range(5):
        await out.audit(f"9-{i}", AuditEntry(id=f"9-{i}", at=T0 + i, who="sup", role="supervisor", what="audit.read",
                                           target="", why="", allowed=True))
        await out.contact(contact(f"k{i}", Outcome.ANSWERED))
    entries = await first._read()
    await first._write(decode(entries))  # committed, then the process dies before XACK
    await asyncio.sleep(0.1)
    second = sink(redis_client, pool, consumer="takes-over", claim_idle=0.05)
    assert await second.step() == 10  # claimed from the dead consumer and written again
    assert await pool.fetchval("SELECT count(*) FROM audit") == 5
    assert await pool.fetchval("SELECT count(*) FROM contacts") == 5
    assert await second.pending() == 0


async def test_undecodable_entries_go_to_the_dead_letter_stream(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    s = sink(redis_client, pool)
    await s.ensure_group()
    await redis_client.xadd(STREAM, {"kind": "contact", "data": "{not json"})
    await redis_client.xadd(STREAM, {"kind": "bogus", "data": "{}"})
    await Outbox(redis_client, STREAM).contact(contact("k9"))
    assert await s.step() == 3
    dead = await redis_client.xrange(DEAD)
    assert [f["kind"] for _, f in dead] == ["contact", "bogus"]
    assert all(f["error"] for _, f in dead)
    assert await pool.fetchval("SELECT count(*) FROM contacts") == 1


async def test_postgres_outage_loses_nothing_and_logs_once_each_way(
        redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    workdir = tempfile.mkdtemp(prefix="ivrserver-pg-outage-")
    # Durable like production: with synchronous_commit off a crash loses commits already reported.
    cluster = LocalPostgres(f"{workdir}/data", durable=True)
    await cluster.start()
    try:
        conn = await asyncpg.connect(cluster.dsn)
        await migrate.migrate(conn)
        await conn.close()
        p = await asyncpg.create_pool(cluster.dsn, min_size=0, max_size=2, timeout=1.0)
        s = sink(redis_client, p, max_backoff=0.2)
        out = Outbox(redis_client, STREAM)
        caplog.set_level(logging.INFO, logger="ivrserver.record.sink")
        task = asyncio.create_task(s.run())
        for i in range(50):
            await out.contact(contact(f"a{i}", Outcome.ANSWERED))
        await eventually(lambda: s.written >= 50, timeout=10)
        await cluster.kill()  # as a crash: no clean shutdown
        for i in range(200):  # calls go on while PostgreSQL is away
            await out.contact(contact(f"b{i}", Outcome.ANSWERED))
        await asyncio.sleep(1.0)
        assert await s.pending() == 200
        await cluster.start()
        await eventually(lambda: s.written >= 250, timeout=20)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await p.fetchval("SELECT count(*) FROM contacts") == 250
        assert await p.fetchval("SELECT count(DISTINCT id) FROM contacts") == 250
        messages = [r.getMessage() for r in caplog.records]
        assert sum("cannot write to the system of record" in m for m in messages) == 1
        assert sum("writing again" in m for m in messages) == 1
        await p.close()
    finally:
        await cluster.stop()
        cluster.remove()


async def test_a_restart_with_more_unacknowledged_entries_than_a_batch_writes_them_all(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    out = Outbox(redis_client, STREAM)
    first = sink(redis_client, pool, consumer="a", batch_size=10)
    await first.ensure_group()
    for i in range(25):
        await out.contact(contact(f"r{i}", Outcome.ANSWERED))
    for _ in range(3):
        await first._read()  # read (pending for "a"), never acknowledged: then the process dies
    again = sink(redis_client, pool, consumer="a", batch_size=10)  # the same instance restarted
    moved = [await again.step() for _ in range(4)]
    assert moved == [10, 10, 5, 0]
    assert await pool.fetchval("SELECT count(*) FROM contacts") == 25 and await again.pending() == 0
