"""An agent's page language is a record (issue 20 §4, "chosen per agent and remembered"): with
postgres.dsn each change goes through the outbox to PostgreSQL (agent_preferences), and the warm-up
brings it back into a Redis that lost it. Real Redis, real PostgreSQL (tests/pg_fixtures.py), an
in-process IvrServer for the REST path, the real CLI for `db import-redis`."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from ivrserver.record.local_cluster import LocalPostgres
from ivrserver.record.rows import AgentPrefsRow, upsert_agent_preferences
from ivrserver.record.sink import RecordSink, decode
from ivrserver.services.agent_prefs import AgentPrefsService
from ivrserver.services.record_warmup import RecordWarmup
from ivrserver.store.agent_prefs import AgentPrefsStore, agent_prefs_entry
from ivrserver.store.keys import Keys
from tests.cli_harness import covers, ivrserver, user_env
from tests.inprocess import eventually, hotline_menus, migrated, running, server_settings, stop

PREFS = "/api/v1/me/preferences"
AGENT = "agent1001"  # scripts/demo-agents.yaml: the password is the id
NOW = 1_750_000_000.0


@pytest.fixture
def menus(tmp_path: Path) -> Path:
    return hotline_menus(tmp_path / "menus")


async def login(http: aiohttp.ClientSession, base: str, agent: str = AGENT) -> dict[str, str]:
    async with http.post(f"{base}/api/v1/login", json={"agent": agent, "password": agent}) as r:
        assert r.status == 200, await r.text()
        return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def put_language(http: aiohttp.ClientSession, base: str, auth: dict[str, str], language: str) -> None:
    async with http.put(base + PREFS, headers=auth, json={"language": language}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["chosen"] == language


async def get_prefs(http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> dict[str, object]:
    async with http.get(base + PREFS, headers={**auth, "Accept-Language": "en-US"}) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def row_of(conn: asyncpg.Connection | asyncpg.Pool, agent: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT language, updated_at, rev FROM agent_preferences WHERE agent_id = $1", agent)


async def language_is(conn: asyncpg.Connection | asyncpg.Pool, agent: str, language: str) -> bool:
    row = await row_of(conn, agent)
    return row is not None and row["language"] == language


def sink_for(redis: aioredis.Redis, keys: Keys, pool: asyncpg.Pool) -> RecordSink:
    return RecordSink(redis, pool, stream=keys.outbox(), dead_stream=keys.outbox_dead(), consumer="a", block_ms=50)


async def test_a_language_set_over_rest_is_a_row_and_comes_back_after_flushall(
        redis_url: str, redis_client: aioredis.Redis, empty_db: str, menus: Path) -> None:
    await migrated(empty_db)
    settings = server_settings(redis_url, menus, postgres={"dsn": empty_db}, instance="prefs-test")
    srv, task = await running(settings)
    pool = await asyncpg.create_pool(empty_db, min_size=1, max_size=2)
    base = f"http://127.0.0.1:{srv.web_port}"
    try:
        async with aiohttp.ClientSession() as http:
            before = time.time()
            await put_language(http, base, await login(http, base), "zh")
            await eventually(lambda: language_is(pool, AGENT, "zh"), what="the agent's row in PostgreSQL")
            row = await row_of(pool, AGENT)
            assert row is not None and row["rev"] > 0
            assert before - 1 <= row["updated_at"].timestamp() <= time.time() + 1
            assert await pool.fetchval("SELECT count(*) FROM agent_preferences") == 1

            await redis_client.flushall()  # sessions, preferences, everything
            auth = await login(http, base)
            back = await eventually(lambda: _chosen(http, base, auth), what="the language back from PostgreSQL")
            assert back == {"language": "zh", "source": "agent", "chosen": "zh", "languages": ["en", "zh"]}
            assert await redis_client.hgetall(srv.keys.agent_prefs(AGENT)) == {"language": "zh"}
            # the flush took the outbox and its consumer group too: a change now still reaches PostgreSQL
            await put_language(http, base, auth, "en")
            await eventually(lambda: language_is(pool, AGENT, "en"), what="a change after the flush recorded")
    finally:
        await stop(srv, task)
        await pool.close()


async def _chosen(http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> dict[str, object] | None:
    found = await get_prefs(http, base, auth)
    return found if found["chosen"] is not None else None


async def test_a_change_made_while_postgres_is_down_is_accepted_and_lands_when_it_is_back(
        redis_url: str, redis_client: aioredis.Redis, menus: Path) -> None:
    workdir = tempfile.mkdtemp(prefix="ivrserver-pg-prefs-outage-")
    cluster = LocalPostgres(f"{workdir}/data", durable=True)
    await cluster.start()
    srv = task = None
    try:
        await migrated(cluster.dsn)
        srv, task = await running(server_settings(redis_url, menus, postgres={"dsn": cluster.dsn},
                                                  instance="prefs-outage"))
        base = f"http://127.0.0.1:{srv.web_port}"
        async with aiohttp.ClientSession() as http:
            auth = await login(http, base)
            await put_language(http, base, auth, "zh")
            conn = await asyncpg.connect(cluster.dsn)
            try:
                await eventually(lambda: language_is(conn, AGENT, "zh"), what="zh recorded")
            finally:
                await conn.close()
            await cluster.kill()
            await put_language(http, base, auth, "en")  # accepted: PostgreSQL is not on this path
            assert (await get_prefs(http, base, auth))["chosen"] == "en"
            await asyncio.sleep(0.5)
            assert await redis_client.xlen(srv.keys.outbox()) > 0  # waiting in Redis
            await cluster.start()
            conn = await asyncpg.connect(cluster.dsn)
            try:
                await eventually(lambda: language_is(conn, AGENT, "en"), timeout=30, what="en recorded once back")
                assert await conn.fetchval("SELECT count(*) FROM agent_preferences") == 1
            finally:
                await conn.close()
    finally:
        if srv is not None and task is not None:
            await stop(srv, task)
        await cluster.stop()
        cluster.remove()


async def test_an_older_revision_never_overwrites_a_newer_one(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await upsert_agent_preferences(conn, [(AgentPrefsRow("agent1001", "zh", NOW), 200)])
        await upsert_agent_preferences(conn, [(AgentPrefsRow("agent1001", "en", NOW - 60), 100)])  # late, older
        row = await row_of(conn, "agent1001")
        assert row is not None and (row["language"], row["rev"], row["updated_at"].timestamp()) == ("zh", 200, NOW)
        await upsert_agent_preferences(conn, [(AgentPrefsRow("agent1001", "zh", NOW), 200)])  # delivered again
        await upsert_agent_preferences(conn, [(AgentPrefsRow("agent1001", "en", NOW + 5), 300)])
        assert await language_is(conn, "agent1001", "en")
        # the Redis import's copy (rev 0) never replaces what the sink wrote
        await upsert_agent_preferences(conn, [(AgentPrefsRow("agent1001", "zh", NOW + 9), 0)])
        assert await language_is(conn, "agent1001", "en")


async def test_the_sink_writes_the_newest_change_and_dead_letters_a_bad_one(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    keys = Keys("t", records=True)
    prefs = AgentPrefsService(redis_client, keys, clock=lambda: NOW)
    await prefs.set_language("agent1001", "zh")
    await prefs.set_language("agent1002", "zh")
    await prefs.set_language("agent1001", "en")  # same batch, later in the stream: wins
    bad = [{"kind": "agent_prefs", "data": json.dumps({"agent_id": "agent1003", "at": NOW,
                                                       "prefs": {"language": "fr"}})},
           {"kind": "agent_prefs", "data": json.dumps({"agent_id": "../x", "at": NOW, "prefs": {"language": "zh"}})},
           {"kind": "agent_prefs", "data": json.dumps({"agent_id": "agent1004", "at": 1e300,
                                                       "prefs": {"language": "zh"}})}]
    for entry in bad:
        await redis_client.xadd(keys.outbox(), entry)
    sink = sink_for(redis_client, keys, pool)
    await sink.ensure_group()
    await sink.drain(10)
    got = {r["agent_id"]: (r["language"], r["updated_at"].timestamp())
           for r in await pool.fetch("SELECT agent_id, language, updated_at FROM agent_preferences")}
    assert got == {"agent1001": ("en", NOW), "agent1002": ("zh", NOW)}
    dead = await redis_client.xrange(keys.outbox_dead())
    assert len(dead) == 3 and all(f["kind"] == "agent_prefs" for _, f in dead)
    assert "language must be one of en, zh" in dead[0][1]["error"]
    assert await redis_client.xlen(keys.outbox()) == 0


def test_the_outbox_entry_round_trips() -> None:
    entry = agent_prefs_entry("agent1001", {"language": "zh"}, NOW)
    batch = decode([("1750000000000-3", entry)])
    assert not batch.dead
    assert batch.records[0].value == (AgentPrefsRow("agent1001", "zh", NOW), 1_750_000_000_000 * 1_000_000 + 3)


async def test_without_postgres_a_change_stays_in_redis_alone(redis_client: aioredis.Redis) -> None:
    keys = Keys("t")  # no postgres.dsn: records=False
    await AgentPrefsService(redis_client, keys).set_language("agent1001", "zh")
    assert await redis_client.hgetall(keys.agent_prefs("agent1001")) == {"language": "zh"}
    assert not await redis_client.exists(keys.outbox())


async def test_the_warmup_restores_every_agent_and_keeps_a_choice_made_since_the_flush(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    keys = Keys("t", records=True)
    prefs = AgentPrefsService(redis_client, keys, clock=lambda: NOW)
    agents = [f"agent{1001 + i}" for i in range(5)]  # more than one page (batch 2)
    for agent in agents:
        await prefs.set_language(agent, "zh")
    sink = sink_for(redis_client, keys, pool)
    await sink.ensure_group()
    await sink.drain(10)
    await redis_client.flushall()
    assert (await prefs.get("agent1002")).source == "fallback"
    await prefs.set_language("agent1001", "en")  # chosen since the flush: newer than the record
    done = await RecordWarmup(redis_client, keys, pool, retention_days=30, batch=2).warm_up()
    assert (done.agents, done.unreadable) == (4, 0)
    assert (await prefs.get("agent1001")).chosen == "en"
    for agent in agents[1:]:
        assert (await prefs.get(agent, accept_language="en")).to_dict() == {
            "language": "zh", "source": "agent", "chosen": "zh", "languages": ["en", "zh"]}
    # a row this ivrserver cannot show (a newer one's language) is skipped and counted, not raised
    await pool.execute("INSERT INTO agent_preferences (agent_id, language, updated_at) "
                       "VALUES ('agent2001', 'fr', now())")
    await redis_client.flushall()
    again = await RecordWarmup(redis_client, keys, pool, retention_days=30, batch=2).warm_up()
    assert (again.agents, again.unreadable) == (5, 1)
    assert not await redis_client.exists(keys.agent_prefs("agent2001"))


async def test_restore_counts_only_agents_it_wrote(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = AgentPrefsStore(redis_client, keys)
    await store.write("agent1001", {"language": "en"}, at=NOW)
    written = await store.restore([("agent1001", {"language": "zh"}), ("agent1002", {"language": "zh"})])
    assert written == 1
    assert await store.read("agent1001") == {"language": "en"}
    assert await store.read("agent1002") == {"language": "zh"}
    assert await store.restore([]) == 0


@covers("db import-redis")
async def test_import_redis_copies_the_preferences_and_keeps_what_the_sink_wrote(
        empty_db: str, redis_url: str, redis_client: aioredis.Redis) -> None:
    keys = Keys("ivr")  # the CLI's default prefix; a Redis-only deployment: no outbox
    store = AgentPrefsStore(redis_client, keys)
    for i in range(5):
        await store.write(f"agent{1001 + i}", {"language": "zh" if i % 2 else "en"}, at=NOW)
    await redis_client.hset(keys.agent_prefs("agent1009"), "language", "fr")  # not a language of the pages
    env = user_env(redis_url, IVRSERVER_POSTGRES__DSN=empty_db)
    await migrated(empty_db)

    first = await asyncio.to_thread(ivrserver, "db", "import-redis", "--batch", "2", env=env)
    assert first.returncode == 0, first.stderr
    assert "agents' preferences: 5 imported" in first.stdout, first.stdout
    assert "skipped 1 unreadable agent preference(s)" in first.stdout
    conn = await asyncpg.connect(empty_db)
    try:
        got = {r["agent_id"]: (r["language"], r["rev"]) for r in await conn.fetch(
            "SELECT agent_id, language, rev FROM agent_preferences")}
        assert got == {f"agent{1001 + i}": ("zh" if i % 2 else "en", 0) for i in range(5)}
        # the sink wrote a newer choice since: a second import (twice = once) keeps it
        await upsert_agent_preferences(conn, [(AgentPrefsRow("agent1001", "zh", NOW + 60), 5)])
        second = await asyncio.to_thread(ivrserver, "db", "import-redis", env=env)
        assert second.returncode == 0, second.stderr
        assert await language_is(conn, "agent1001", "zh")
        assert await conn.fetchval("SELECT count(*) FROM agent_preferences") == 5
    finally:
        await conn.close()


async def test_the_sink_creates_its_group_again_after_redis_lost_it(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    keys = Keys("t", records=True)
    prefs = AgentPrefsService(redis_client, keys, clock=lambda: NOW)
    sink = sink_for(redis_client, keys, pool)
    task = asyncio.create_task(sink.run())
    try:
        await prefs.set_language("agent1001", "zh")
        await eventually(lambda: language_is(pool, "agent1001", "zh"), what="zh recorded")
        await redis_client.flushall()  # the stream and its consumer group are gone
        await prefs.set_language("agent1001", "en")
        await eventually(lambda: language_is(pool, "agent1001", "en"), what="en recorded after the flush")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
