"""Storage: bytes per call in PostgreSQL and in Redis, the writer's sustained throughput through the
outbox → RecordSink path, a simulated month (menus stats over 30 days, a customer's timeline p99),
and Redis memory over a ramp at constant rate.

    .venv/bin/python bench/storage_bench.py [--full]

Private redis-server and PostgreSQL (durable cluster: fsync on) in temporary directories. Quick
mode (default, ~1-2 min): 20,000 calls through the writer, a 200,000-path month. --full: 100,000
calls, 2,000,000 paths over 30 days (extrapolated to the seeds' 18 M calls a month and said so).
Prints a table; no assertions (timing depends on the machine and on what else runs on it).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import redis.asyncio as aioredis

from ivrserver.config import PostgresSettings
from ivrserver.devstack.redis import LocalRedis
from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import Contact, ContactKind, Outcome
from ivrserver.record import rollup
from ivrserver.record.local_cluster import LocalPostgres
from ivrserver.record.rows import AuditEntry
from ivrserver.record.sink import Outbox, RecordSink
from ivrserver.services import record_schema
from ivrserver.store import contacts as contact_store
from ivrserver.store.audit import AuditLog
from ivrserver.store.callpath import RedisPathRecorder
from ivrserver.store.keys import Keys

SEEDS_MONTH = 18_000_000    # 15 M IVR + 3 M agent calls a month (the seeds)


def call(i: int, at: float, customers: int = 50_000) -> tuple[Contact, CallPath, AuditEntry]:
    cid = f"c-{i % customers}"
    contact = Contact(id=f"bench-{i}", kind=ContactKind.INBOUND, number=f"1555{i % 10_000_000:07d}",
                      started_at=at, customer_id=cid, ended_at=at + 95, routing_reason="repeat caller: open case",
                      queue="support", wait_seconds=12.5, agents=("agent1003",), outcome=Outcome.ANSWERED,
                      talk_seconds=80.0, ivr_path=("main", "balance", "agent"))
    path = CallPath(f"bench-{i}", "hotline", "v1", at, (
        PathEvent(PathKind.START, "main", at, detail="open"), PathEvent(PathKind.ENTER, "main", at),
        PathEvent(PathKind.KEY, "main", at + 3, key=str(1 + i % 4), target="goto:balance"),
        PathEvent(PathKind.ENTER, "balance", at + 3), PathEvent(PathKind.EXIT, "balance", at + 9,
                                                                 detail="self_served" if i % 5 else "agent")))
    audit = AuditEntry(id=f"{int(at * 1000)}-{i}", at=at, who="agent1003", role="agent", what="customer.read",
                     target=cid, why="screen pop", allowed=True)
    return contact, path, audit


async def relation_bytes(conn: asyncpg.Connection, tables: tuple[str, ...]) -> int:
    total = 0
    for table in tables:
        total += await conn.fetchval(
            """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1""",
            table)
    return int(total)


async def writer(redis: aioredis.Redis, pool: asyncpg.Pool, dsn: str, n: int) -> tuple[float, float]:
    """(calls/s through outbox → sink, PostgreSQL bytes per call)."""
    outbox = Outbox(redis, "bench:outbox")
    now = time.time()
    conn = await pool.acquire()
    before = await relation_bytes(conn, ("contacts", "ivr_paths", "audit"))
    for start in range(0, n, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            ob = Outbox(pipe, "bench:outbox")    # the same XADDs, pipelined like the call path's round trip
            for i in range(start, min(n, start + 1000)):
                contact, path, audit = call(i, now - (i % 3600))
                await ob.contact(contact)
                await ob.path(path)
                await ob.audit(audit.id, audit)
            await pipe.execute()
    del outbox
    sink = RecordSink(redis, pool, stream="bench:outbox", dead_stream="bench:dead", consumer="bench",
                      batch_size=1500)
    await sink.ensure_group()
    t0 = time.perf_counter()
    await sink.drain(timeout=3600)
    seconds = time.perf_counter() - t0
    await conn.execute("ANALYZE")
    after = await relation_bytes(conn, ("contacts", "ivr_paths", "audit"))
    await pool.release(conn)
    return n / seconds, (after - before) / n


async def redis_bytes(redis: aioredis.Redis, n: int) -> float:
    """Used memory per call of what the Redis store keeps today: contact record + timeline + path."""
    keys = Keys("rb")
    recorder = RedisPathRecorder(redis, keys, 365 * 86400)
    before = int((await redis.info("memory"))["used_memory"])
    now = time.time()
    for i in range(n):
        contact, path, _ = call(i, now - i)
        await contact_store.save_contact(redis, keys, contact, now=now)
        await recorder.record(path)
    after = int((await redis.info("memory"))["used_memory"])
    return (after - before) / n


async def ramp(redis: aioredis.Redis, pool: asyncpg.Pool, rate: int, steps: int,
               window: float = 4.0) -> list[tuple[int, int]]:
    """(Redis used_memory, keys) after each 2-second step at `rate` calls/s, every call written by
    the store's own writers as the app writes it with postgres.dsn set (contact record + timeline,
    IVR path + menu index, one audit entry; each also into the outbox, which the sink drains into
    PostgreSQL meanwhile), with the hot window (redis.hot_days) compressed to `window` seconds so
    that a few seconds show the steady state: contacts start hot_days - `window` s ago (they expire
    at started_at + hot_days, the timeline trims by started_at), the path recorder and the audit
    log keep `window` s. 1,000 customers: their timelines are the only per-customer keys."""
    hot_days = 30
    keys = Keys("ramp", records=True)
    sink = RecordSink(redis, pool, stream=keys.outbox(), dead_stream=keys.outbox_dead(), consumer="ramp",
                      batch_size=1000, block_ms=100)
    await sink.ensure_group()
    recorder = RedisPathRecorder(redis, keys, int(window))
    audit_log = AuditLog(redis, keys, hot_days=window / 86400)
    task = asyncio.create_task(sink.run())
    seen = []
    i = 10_000_000
    try:
        for _ in range(steps):
            t_end = time.monotonic() + 2.0
            while time.monotonic() < t_end:
                tick = time.monotonic()
                now = time.time()
                writes = []
                for _ in range(rate // 10):
                    contact, path, audit = call(i, now, customers=1000)
                    i += 1
                    contact = dataclasses.replace(contact, started_at=now - hot_days * 86400 + window)
                    writes += [contact_store.save_contact(redis, keys, contact, now=now, retention_days=hot_days),
                               recorder.record(path),
                               audit_log.append(who=audit.who, role=audit.role, what=audit.what,
                                                target=audit.target, why=audit.why, allowed=True, at=now)]
                await asyncio.gather(*writes)
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
            seen.append((int((await redis.info("memory"))["used_memory"]), int(await redis.dbsize())))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return seen


async def month(conn: asyncpg.Connection, paths: int) -> tuple[float, float, float, float]:
    """(seconds to load + roll up, menus stats --days 30 seconds, timeline p50 ms, timeline p99 ms)."""
    now = datetime.now(UTC)
    start = now - timedelta(days=30)
    span = 30 * 86400
    t0 = time.perf_counter()
    # Synthetic paths and contacts over 30 days, generated in SQL (the writer's own speed is measured above).
    await conn.execute("""
        INSERT INTO ivr_paths (call_id, started_at, menu, version, exit_reason, events)
        SELECT 'm-' || g, $1::timestamptz + (g * $3::float / $2) * interval '1 second', 'hotline', 'v1',
               CASE WHEN g % 5 = 0 THEN 'agent' ELSE 'self_served' END,
               jsonb_build_array(jsonb_build_object('k','enter','n','main','t',0,'key','','to','','d',''),
                                 jsonb_build_object('k','key','n','main','t',3,'key',(1 + g % 4)::text,
                                                    'to','goto:balance','d',''),
                                 jsonb_build_object('k','exit','n','main','t',9,'key','','to','',
                                                    'd', CASE WHEN g % 5 = 0 THEN 'agent' ELSE 'self_served' END))
        FROM generate_series(1, $2) g""", start, paths, float(span))
    await conn.execute("""
        INSERT INTO contacts (id, started_at, kind, number, customer_id, ended_at, outcome, ivr_path)
        SELECT 'mc-' || g, $1::timestamptz + (g * $3::float / $2) * interval '1 second', 'inbound',
               '1555' || (g % 100000), 'cust-' || (g % 100000), NULL, 'answered', '{main,balance}'
        FROM generate_series(1, $2) g""", start, paths, float(span))
    await conn.execute("""
        INSERT INTO ivr_rollup_dirty (menu, bucket)
        SELECT DISTINCT 'hotline', to_timestamp(floor(extract(epoch FROM started_at) / 900) * 900)
        FROM ivr_paths WHERE call_id LIKE 'm-%' ON CONFLICT DO NOTHING""")
    await conn.execute("ANALYZE")
    await rollup.roll(conn, now)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    tally = await rollup.stats(conn, "hotline", now - timedelta(days=30), now)
    stats_s = time.perf_counter() - t0
    assert tally.calls >= paths * 0.99, tally.calls     # every call of the window (sanity, not timing)
    times = []
    for i in range(2000):
        t = time.perf_counter()
        await conn.fetch("SELECT * FROM contacts WHERE customer_id = $1 ORDER BY started_at DESC LIMIT 20",
                         f"cust-{(i * 7919) % 100000}")
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return load, stats_s, statistics.median(times), times[int(len(times) * 0.99)]


async def main(full: bool) -> None:
    calls = 100_000 if full else 20_000
    sample = 2_000_000 if full else 200_000
    work = tempfile.mkdtemp(prefix="storage-bench-")
    pg = LocalPostgres(f"{work}/pg", durable=True)
    await pg.start()
    redis_server = LocalRedis()
    await redis_server.start()
    redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await record_schema.migrate_schema(PostgresSettings(dsn=pg.dsn))
        pool = await asyncpg.create_pool(pg.dsn, min_size=2, max_size=4)
        rate, pg_bytes = await writer(redis, pool, pg.dsn, calls)
        r_bytes = await redis_bytes(redis, min(calls, 20_000))
        await redis.flushdb()  # the byte count's year-long keys would dilute Redis' expiry sampling
        mem = await ramp(redis, pool, 500, 10 if full else 6)
        async with pool.acquire() as conn:
            load, stats_s, p50, p99 = await month(conn, sample)
        await pool.close()
    finally:
        await redis.aclose()
        await redis_server.stop()
        await pg.stop()
        pg.remove()
    rows = [
        ("PostgreSQL bytes per call (contact + path + audit, with indexes)", f"{pg_bytes:,.0f} B"),
        ("Redis bytes per call (contact + timeline + path, as the store keeps them)", f"{r_bytes:,.0f} B"),
        ("writer throughput, outbox → RecordSink → PostgreSQL (durable)", f"{rate:,.0f} calls/s ({calls:,} calls)"),
        (f"month sample: {sample:,} paths + contacts over 30 days, load + roll up", f"{load:.1f} s"),
        ("menus stats --days 30 (rollup.stats)", f"{stats_s * 1000:.0f} ms"),
        ("  extrapolated to the seeds' 18 M calls/month (rollups: linear in buckets, not calls)",
         f"≈ {stats_s * 1000:.0f} ms + dirty buckets"),
        ("customer timeline (20 newest contacts) p50 / p99", f"{p50:.2f} / {p99:.2f} ms"),
        ("Redis over a ramp at 500 calls/s (real writers + TTLs, hot window 4 s), per 2 s step",
         " ".join(f"{m / 1e6:.2f}" for m, _ in mem) + " MB; keys " + " ".join(str(k) for _, k in mem)),
        ("a year at the seeds' volume in PostgreSQL (bytes/call × 18 M × 12)",
         f"{pg_bytes * SEEDS_MONTH * 12 / 1e9:,.0f} GB on disk"),
    ]
    width = max(len(a) for a, _ in rows) + 2
    print(f"storage_bench ({'full' if full else 'quick'} mode)")
    for what, value in rows:
        print(f"{what.ljust(width)}{value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the issue's sizes (100,000 calls, 2 M paths)")
    asyncio.run(main(parser.parse_args().full))
