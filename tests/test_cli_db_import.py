"""`ivrserver db import-redis`: a Redis-only deployment's customers, cases, contacts, paths and audit
copied into PostgreSQL — written into Redis by the real stores, imported by the real command, twice
(twice = once), in batches smaller than the data; real Redis and PostgreSQL of the test session."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import redis.asyncio as aioredis

from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import CaseStatus, Contact, ContactKind, Customer, Outcome, Tier
from ivrserver.store import cases as case_store
from ivrserver.store import contacts as contact_store
from ivrserver.store.audit import AuditLog
from ivrserver.store.callpath import RedisPathRecorder
from ivrserver.store.customers import save_customer
from ivrserver.store.keys import Keys
from tests.cli_harness import assert_clean_failure, covers, ivrserver, user_env

KEYS = Keys("ivr")     # the CLI's default prefix
DAY = 86400.0


async def seed(client: aioredis.Redis, now: float) -> None:
    for i in range(7):
        await save_customer(client, KEYS, Customer(
            id=f"c-{i}", name=f"Customer {i}", phones=(f"1555000{i}", f"1666000{i}"),
            tier=Tier.VIP if i == 0 else Tier.STANDARD, account_number=f"ACC{i:04d}",
            attributes={"balance": str(10 * i)}))
    first = await case_store.open_case(client, KEYS, customer_id="c-0", summary="refund", now=now - 3 * DAY,
                                       owner_agent="agent1003", severity=2)
    await case_store.open_case(client, KEYS, customer_id="c-1", summary="card lost", now=now - DAY)
    await case_store.update_case(client, KEYS, first.id, {"status": CaseStatus.CLOSED, "next_step": "none"})
    for i in range(9):
        await contact_store.save_contact(client, KEYS, Contact(
            id=f"contact-{i}", kind=ContactKind.INBOUND, number=f"1555000{i % 7}", started_at=now - i * 3600,
            customer_id=f"c-{i % 7}" if i < 8 else None, ended_at=now - i * 3600 + 60, outcome=Outcome.ANSWERED,
            agents=("agent1003",), ivr_path=("main", "balance")), now=now)
    recorder = RedisPathRecorder(client, KEYS, retention_seconds=int(30 * DAY))
    for i in range(11):
        at = now - i * 7200
        await recorder.record(CallPath(f"call-{i}", "hotline", "v1", at, (
            PathEvent(PathKind.ENTER, "main", at), PathEvent(PathKind.KEY, "main", at + 2, key="1", target="x"),
            PathEvent(PathKind.EXIT, "main", at + 5, detail="self_served"))))
    audit = AuditLog(client, KEYS)
    for i in range(6):
        await audit.append(who="agent1003", role="agent", what="customer.read", target=f"c-{i}", why="call",
                           allowed=i != 5, at=now - i)


async def table_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in (
            "customers", "customer_phones", "cases", "case_events", "contacts", "ivr_paths", "audit")}
    finally:
        await conn.close()


@covers("db import-redis")
async def test_import_twice_is_import_once(empty_db: str, redis_url: str, redis_client: aioredis.Redis) -> None:
    now = time.time()
    await seed(redis_client, now)
    env = user_env(redis_url, IVRSERVER_POSTGRES__DSN=empty_db)
    unmigrated = await asyncio.to_thread(ivrserver, "db", "import-redis", env=env)
    assert unmigrated.returncode == 2 and "ivrserver db migrate" in unmigrated.stderr
    migrated = await asyncio.to_thread(ivrserver, "db", "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr

    first = await asyncio.to_thread(ivrserver, "db", "import-redis", "--batch", "4", env=env)
    assert first.returncode == 0, first.stderr
    summary = "imported 7 customer(s), 2 case(s), 9 contact(s), 11 path(s), 6 audit entries"
    assert first.stdout.strip().endswith(summary), first.stdout
    after_first = await table_counts(empty_db)
    assert after_first == {"customers": 7, "customer_phones": 14, "cases": 2, "case_events": 2, "contacts": 9,
                           "ivr_paths": 11, "audit": 6}

    second = await asyncio.to_thread(ivrserver, "db", "import-redis", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().endswith(summary)
    assert await table_counts(empty_db) == after_first        # twice = once

    conn = await asyncpg.connect(empty_db)
    try:
        vip = await conn.fetchrow("SELECT tier, account_number, attributes FROM customers WHERE id = 'c-0'")
        assert (vip["tier"], vip["account_number"], vip["attributes"]) == ("vip", "ACC0000", '{"balance": "0"}')
        closed = await conn.fetchrow("SELECT status, owner_agent, severity, next_step, closed_at FROM cases "
                                     "WHERE customer_id = 'c-0'")
        assert (closed["status"], closed["owner_agent"], closed["severity"], closed["next_step"]) == (
            "closed", "agent1003", 2, "none")
        assert closed["closed_at"] is not None
        assert await conn.fetchval("SELECT count(*) FROM cases WHERE closed_at IS NULL") == 1
        contact = await conn.fetchrow("SELECT agents, ivr_path, outcome FROM contacts WHERE id = 'contact-0'")
        assert (contact["agents"], contact["ivr_path"], contact["outcome"]) == (
            ["agent1003"], ["main", "balance"], "answered")
        assert await conn.fetchval("SELECT count(*) FROM contacts WHERE customer_id IS NULL") == 1
        assert await conn.fetchval("SELECT count(*) FROM audit WHERE NOT allowed") == 1
        assert await conn.fetchval("SELECT count(*) FROM ivr_paths_default") == 0   # months' own partitions
    finally:
        await conn.close()


@covers("db import-redis")
def test_import_without_a_dsn_or_database_fails_cleanly(redis_url: str) -> None:
    missing = ivrserver("db", "import-redis", env=user_env(redis_url))
    assert missing.returncode == 2 and "postgres.dsn is not set" in missing.stderr
    assert_clean_failure(missing)
    dead = ivrserver("db", "import-redis", env=user_env(
        redis_url, IVRSERVER_POSTGRES__DSN="postgresql://ivrserver@127.0.0.1:1/x"))
    assert dead.returncode == 1 and "run it again" in dead.stderr
    assert_clean_failure(dead)
