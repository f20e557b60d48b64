"""The webhook delivery log in PostgreSQL: every attempt's settle appends the delivery to the outbox
(in the script that writes it), the record sink upserts it into webhook_deliveries — real Redis,
real PostgreSQL, a real receiver that fails once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from ivrserver.domain.webhooks import DeliveryState, delivery_id
from ivrserver.record.rows import upsert_webhook_deliveries, webhook_delivery_row
from ivrserver.record.sink import RecordSink
from ivrserver.store.keys import Keys
from ivrserver.store.webhooks import outbox_data
from tests.test_webhooks_delivery import SECRET, Receiver, endpoint, settled, status, webhooks


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def drain(redis: aioredis.Redis, pool: asyncpg.Pool, keys: Keys) -> None:
    sink = RecordSink(redis, pool, stream=keys.outbox(), dead_stream=keys.outbox_dead(), consumer="t", block_ms=10)
    await sink.ensure_group()
    while await sink.step():
        pass
    assert await redis.xlen(keys.outbox_dead()) == 0


async def test_each_attempt_reaches_webhook_deliveries(redis_client: aioredis.Redis, pool: asyncpg.Pool,
                                                       receiver: Receiver) -> None:
    keys = Keys("t", records=True)
    receiver.answers = [status(500)]
    w = webhooks(redis_client, keys, [endpoint(receiver, max_attempts=3)])
    task = asyncio.create_task(w.run())
    try:
        await w.publish("case.resolved", {"case_id": "K-1", "名": "张三"}, key="case:K-1:resolved")
        d = await settled(w, delivery_id("case:K-1:resolved", "crm"), DeliveryState.DELIVERED)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await redis_client.xlen(keys.outbox()) == 2  # one per attempt
    await drain(redis_client, pool, keys)
    row = await pool.fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1", d.id)
    assert row is not None
    assert (row["endpoint"], row["event"], row["key"], row["state"], row["attempts"], row["last_status"]) == (
        "crm", "case.resolved", "case:K-1:resolved", "delivered", 2, 200)
    log: list[dict[str, Any]] = json.loads(row["log"])
    assert [a["status"] for a in log] == [500, 200] and all(a["by"] == "i1" for a in log)
    assert json.loads(row["payload"]) == {"case_id": "K-1", "名": "张三"}
    assert row["next_at"] is None and abs(row["created_at"].timestamp() - d.created_at) < 0.001
    assert SECRET.decode() not in json.dumps({k: str(v) for k, v in dict(row).items()})


async def test_dead_letters_are_logged_and_an_older_copy_never_wins(redis_client: aioredis.Redis,
                                                                     pool: asyncpg.Pool, receiver: Receiver) -> None:
    keys = Keys("t", records=True)
    receiver.answers = [status(404)]
    w = webhooks(redis_client, keys, [endpoint(receiver)])
    task = asyncio.create_task(w.run())
    try:
        await w.publish("case.action_requested", {"action": "cancel"}, key="k-dead")
        d = await settled(w, delivery_id("k-dead", "crm"), DeliveryState.DEAD)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await drain(redis_client, pool, keys)
    row = await pool.fetchrow("SELECT state, dead_reason, rev FROM webhook_deliveries WHERE id = $1", d.id)
    assert (row["state"], row["dead_reason"]) == ("dead", "final answer 404")
    # the same delivery as it was before (pending), delivered late with a lower revision: ignored
    from dataclasses import replace
    older = replace(d, state=DeliveryState.PENDING, attempt=0, attempts=0, log=(), dead_reason="")
    async with pool.acquire() as conn:
        await upsert_webhook_deliveries(conn, [(webhook_delivery_row(outbox_data(older)), row["rev"] - 1)])
    assert await pool.fetchval("SELECT state FROM webhook_deliveries WHERE id = $1", d.id) == "dead"


@pytest.mark.parametrize("data", ['"text"', '{"state": "lost", "log": []}', '{"state": "dead"}', "[]",
                                  '{"state": "dead", "log": [], "id": "x"}'])
def test_unreadable_entries_are_refused(data: str) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        webhook_delivery_row(data)


async def test_the_log_is_partitioned_by_month_and_kept_for_its_retention(pool: asyncpg.Pool) -> None:
    from datetime import UTC, datetime

    from ivrserver.domain.webhooks import Delivery
    from ivrserver.record import partitions

    old = datetime(2025, 1, 15, tzinfo=UTC)
    delivery = Delivery(delivery_id("k-old", "crm"), "crm", "case.resolved", "k-old", old.timestamp(), "{}",
                        state=DeliveryState.DELIVERED, attempts=1, updated_at=old.timestamp())
    async with pool.acquire() as conn:
        created, _ = await partitions.maintain(conn, {}, now=old)
        assert "webhook_deliveries_2025_01" in created
        await upsert_webhook_deliveries(conn, [(webhook_delivery_row(outbox_data(delivery)), 5)])
        await upsert_webhook_deliveries(conn, [(webhook_delivery_row(outbox_data(delivery)), 6)])  # again: one row
        assert await conn.fetchval("SELECT tableoid::regclass::text FROM webhook_deliveries WHERE id = $1",
                                   delivery.id) == "webhook_deliveries_2025_01"
        assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
        _, dropped = await partitions.maintain(conn, {"webhook_deliveries": 365}, now=datetime(2026, 3, 10, tzinfo=UTC))
        assert "webhook_deliveries_2025_01" in dropped
        assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
