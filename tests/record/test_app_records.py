"""The system of record wired into a running ivrserver: real FastAGI calls (in-process server, the
peer scripted the way res_agi.c talks, as tests/test_frozen_redis.py does), a real Redis and a real
PostgreSQL. No Asterisk runs here: the two AMI events of each call (Newchannel before the AGI
session, Hangup after it) are fed to the server's own AMI client (`AmiClient.feed`, the entry its
socket reader uses), so the contact tracker sees the call as it would behind Asterisk.

- a call's contact record and IVR path, and an audit entry, reach PostgreSQL through the outbox;
- Redis-only (no postgres.dsn): the outbox is never written;
- a schema behind the code: the server refuses to start and names `ivrserver db migrate`;
- PostgreSQL killed while calls go on: nothing lost, nothing written twice.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from ivrserver import config
from ivrserver.app import IvrServer, StartupError
from ivrserver.domain.model import Contact, ContactKind, Customer, Outcome
from ivrserver.record.local_cluster import LocalPostgres
from ivrserver.record.rows import decode_path_events, upsert_contacts
from ivrserver.store import callpath
from ivrserver.store import customers as customer_store
from tests.inprocess import (
    ScriptedCaller,
    agi_headers,
    eventually,
    hotline_menus,
    migrated,
    running,
    server_settings,
    stop,
)


def settings_for(redis_url: str, menus: Path, dsn: str) -> config.Settings:
    return server_settings(redis_url, menus, redis={"history_write_delay": 0.05}, postgres={"dsn": dsn},
                           instance="rec-test")


@pytest.fixture
def menus(tmp_path: Path) -> Path:
    return hotline_menus(tmp_path / "menus")


async def call(srv: IvrServer, n: int) -> str:
    """One caller: presses 1 during the greeting, hangs up at the third prompt. Returns its uniqueid."""
    uid = f"{time.time():.0f}.{n}"
    channel = {"Channel": f"PJSIP/callers-{n:08d}", "CallerIDNum": f"1555{n:04d}", "Uniqueid": uid, "Linkedid": uid}
    srv.ami.feed({"Event": "Newchannel", **channel})
    try:
        await ScriptedCaller(srv.fastagi.port, agi_headers(uid, n)).run()
        return uid
    finally:
        srv.ami.feed({"Event": "Hangup", "Cause": "16", **channel})


async def test_a_call_writes_its_contact_path_and_audit_rows_through_the_outbox(
        redis_url: str, redis_client: aioredis.Redis, empty_db: str, menus: Path) -> None:
    await migrated(empty_db)
    srv, task = await running(settings_for(redis_url, menus, empty_db))
    pool = await asyncpg.create_pool(empty_db, min_size=1, max_size=2)
    try:
        assert srv.keys.records
        uid = await call(srv, 1)
        await srv.audit.append(who="agent1001", role="agent", what="customer.read", target="c1", why="pop",
                               allowed=True, at=time.time(), source="test")
        await eventually(lambda: pool.fetchval("SELECT count(*) FROM contacts"), what="contact row")
        await eventually(lambda: pool.fetchval("SELECT count(*) FROM ivr_paths"), what="path row")
        await eventually(lambda: pool.fetchval("SELECT count(*) FROM audit"), what="audit row")
        row = await pool.fetchrow("SELECT number, kind FROM contacts")
        assert row["number"].endswith("15550001") and row["kind"] == "inbound"
        in_redis = await callpath.read_path(srv.redis, srv.keys, uid)
        assert in_redis is not None and in_redis.events
        path = await pool.fetchrow("SELECT call_id, menu, events FROM ivr_paths")
        assert (path["call_id"], path["menu"]) == (uid, "hotline")
        assert decode_path_events(path["events"]) == in_redis.events
        assert await pool.fetchval("SELECT actor FROM audit") == "agent1001"
        # the sink deleted what it wrote: nothing waits
        await eventually(lambda: _outbox_empty(redis_client, srv), what="outbox drained")
        # the history goes on past Redis's hot window: a call of a year ago is only in PostgreSQL
        await customer_store.save_customer(srv.redis, srv.keys, Customer(id="c-old", name="Li Lei", phones=()))
        old = Contact(id="k-old", kind=ContactKind.INBOUND, number="+8613800000009",
                      started_at=time.time() - 365 * 86400, customer_id="c-old", outcome=Outcome.ANSWERED,
                      notes="SMS charge disputed")
        async with pool.acquire() as conn:
            await upsert_contacts(conn, [(old, 1)])
        history = await srv.customers.timeline("c-old")
        assert history is not None and history.source == "record"
        assert [(c.id, c.notes) for c in history.contacts] == [("k-old", "SMS charge disputed")]
    finally:
        await stop(srv, task)
        await pool.close()


async def _outbox_empty(redis: aioredis.Redis, srv: IvrServer) -> bool:
    return int(await redis.xlen(srv.keys.outbox())) == 0


async def test_without_postgres_the_outbox_is_never_written(
        redis_url: str, redis_client: aioredis.Redis, menus: Path) -> None:
    srv, task = await running(settings_for(redis_url, menus, ""))
    try:
        assert not srv.keys.records
        await call(srv, 2)
        await srv.audit.append(who="agent1001", role="agent", what="customer.read", target="c1", why="pop",
                               allowed=True, at=time.time())
        await eventually(lambda: redis_client.keys("ivr:contact:*"), what="contact in Redis")
        assert await redis_client.keys("ivr:ivrpath:*")
        assert not await redis_client.exists(srv.keys.outbox())
    finally:
        await stop(srv, task)


async def test_a_schema_behind_the_code_refuses_to_start_and_says_what_to_run(
        redis_url: str, redis_client: aioredis.Redis, empty_db: str, menus: Path) -> None:
    await migrated(empty_db, target=1)
    srv = IvrServer(settings_for(redis_url, menus, empty_db))
    with pytest.raises(StartupError, match=r"version 1, this ivrserver needs \d+: run `ivrserver db migrate`"):
        await asyncio.wait_for(srv.run(asyncio.Event()), 15)


async def test_postgres_killed_under_load_loses_nothing_and_writes_nothing_twice(
        redis_url: str, redis_client: aioredis.Redis, menus: Path) -> None:
    workdir = tempfile.mkdtemp(prefix="ivrserver-pg-app-outage-")
    cluster = LocalPostgres(f"{workdir}/data", durable=True)
    await cluster.start()
    srv = task = None
    try:
        await migrated(cluster.dsn)
        srv, task = await running(settings_for(redis_url, menus, cluster.dsn))
        await asyncio.gather(*(call(srv, n) for n in range(100, 120)))
        await cluster.kill()  # a crash, while calls go on
        await asyncio.gather(*(call(srv, n) for n in range(120, 160)))
        await asyncio.sleep(0.5)
        assert await redis_client.xlen(srv.keys.outbox()) > 0  # waiting in Redis
        await cluster.start()
        await asyncio.gather(*(call(srv, n) for n in range(160, 170)))
        conn = await asyncpg.connect(cluster.dsn)
        try:
            await eventually(lambda: _count_is(conn, "ivr_paths", 70), timeout=30, what="70 paths")
            await eventually(lambda: _count_is(conn, "contacts", 70), timeout=30, what="70 contacts")
            assert await conn.fetchval("SELECT count(DISTINCT id) FROM contacts") == 70
            assert await conn.fetchval("SELECT count(DISTINCT call_id) FROM ivr_paths") == 70
            numbers = {r["number"][-4:] for r in await conn.fetch("SELECT number FROM contacts")}
            assert numbers == {f"{n:04d}" for n in range(100, 170)}
        finally:
            await conn.close()
    finally:
        if srv is not None and task is not None:
            await stop(srv, task)
        await cluster.stop()
        cluster.remove()


async def _count_is(conn: asyncpg.Connection, table: str, n: int) -> bool:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table}")) == n
