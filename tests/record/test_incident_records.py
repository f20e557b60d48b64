"""Incidents reach PostgreSQL (migration 0007): every change is queued to the outbox in the script
that writes the incident to Redis, and the record sink upserts one row per incident — the newest
revision wins. Real Redis, real PostgreSQL."""

from __future__ import annotations

import json

import asyncpg
import redis.asyncio as aioredis

from ivrserver.record.sink import RecordSink
from ivrserver.store.keys import Keys
from tests.test_incidents_service import service


async def drain(redis: aioredis.Redis, pool: asyncpg.Pool, keys: Keys) -> None:
    sink = RecordSink(redis, pool, stream=keys.outbox(), dead_stream=keys.outbox_dead(), consumer="t", block_ms=10)
    await sink.ensure_group()
    while await sink.step():
        pass
    assert await redis.xlen(keys.outbox_dead()) == 0


async def test_an_incident_and_its_changes_reach_postgres(redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    keys = Keys("t", records=True)
    svc = service(redis_client, keys)
    opened = await svc.open("mobile_data", "Chaoyang, Liaoning", actor="supervisor:s1", cause="maintenance")
    await drain(redis_client, pool, keys)
    row = await pool.fetchrow("SELECT * FROM incidents WHERE id = $1", opened.id)
    assert row is not None
    assert (row["service"], row["area"], row["state"], row["planned"], row["opened_by"], row["cause"]) == (
        "mobile_data", "chaoyang-liaoning", "open", True, "supervisor:s1", "maintenance")
    assert json.loads(row["area_names"])["zh"] == "朝阳"

    report = await svc.resolve(opened.id, actor="backoffice:noc", cause="fibre cut repaired")
    await drain(redis_client, pool, keys)
    row = await pool.fetchrow("SELECT state, cause, resolved_at, revision, figures FROM incidents WHERE id = $1",
                              opened.id)
    assert (row["state"], row["cause"]) == ("resolved", "fibre cut repaired")
    assert row["revision"] == report.incident.revision and row["resolved_at"] is not None
    assert "notices_scheduled" in json.loads(row["figures"])
    assert await pool.fetchval("SELECT count(*) FROM incidents") == 1


async def test_notices_delivered_after_the_resolve_reach_the_archived_row(redis_client: aioredis.Redis,
                                                                          pool: asyncpg.Pool) -> None:
    keys = Keys("t", records=True)
    svc = service(redis_client, keys)
    opened = await svc.open("mobile_data", "Chaoyang, Liaoning", actor="supervisor:s1")
    await svc.resolve(opened.id, actor="backoffice:noc")
    for notice in ("n-1", "n-2", "n-1"):  # the NoticeService's hook, once per outcome noted; n-1 twice
        await svc.on_notice_delivered(opened.id, notice)
    await drain(redis_client, pool, keys)
    row = await pool.fetchrow("SELECT figures, revision FROM incidents WHERE id = $1", opened.id)
    assert json.loads(row["figures"])["notices_delivered"] == 2
    assert row["revision"] == (await svc.get(opened.id)).revision
