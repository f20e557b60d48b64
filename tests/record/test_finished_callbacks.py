"""The callback scheduler's store writes a `callback` outbox entry when a record reaches a final
state, and only then, and only with a system of record (real Redis, real PostgreSQL, real sink)."""

from __future__ import annotations

import dataclasses
import json

import asyncpg
import redis.asyncio as aioredis

from ivrserver.domain.callbacks import CallbackMode, CallbackState
from ivrserver.record.sink import RecordSink
from ivrserver.store.callbacks import CallbackStore, UpdateResult
from ivrserver.store.keys import Keys
from tests.record.test_sink_records import pool  # noqa: F401 - the migrated database fixture
from tests.test_callback_store import NOW, job


async def test_final_states_reach_callbacks_finished_and_notifications(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:  # noqa: F811
    keys = Keys("t", records=True)
    store = CallbackStore(redis_client, keys)
    for i in range(3):
        await store.create(job(i))
    await store.create(job(9, mode=CallbackMode.CUSTOMER_FIRST))
    claims = {c.callback_id: c for c in await store.claim(NOW, lease_seconds=30, limit=10, claimer="A")}
    a, b, c, n = (claims[f"cb0000{i}"] for i in (0, 1, 2, 9))
    await store.save_leased(a, dataclasses.replace(a.record, state=CallbackState.DIALING))  # not final
    assert await redis_client.xlen(keys.outbox()) == 0
    await store.complete(a, dataclasses.replace(a.record, state=CallbackState.DONE, final_reason="completed"))
    await store.cancel(b, dataclasses.replace(b.record, state=CallbackState.CANCELLED, final_reason="by agent"))
    await store.reschedule(c, dataclasses.replace(c.record, state=CallbackState.RETRY_WAIT), NOW + 60)  # not final
    await store.complete(n, dataclasses.replace(n.record, state=CallbackState.FAILED, final_reason="no answer"))
    # an unleased edit (API cancel) of a waiting job
    await store.create(job(5))
    cb5 = await store.get("cb00005")
    assert cb5 is not None
    cancelled = dataclasses.replace(cb5, state=CallbackState.CANCELLED, version=cb5.version + 1)
    assert await store.update(cancelled, expected_version=cb5.version, due=None) is UpdateResult.OK
    assert await redis_client.xlen(keys.outbox()) == 4
    # a write refused (stale lease) records nothing
    assert await store.complete(a, dataclasses.replace(a.record, state=CallbackState.FAILED)) is False
    assert await redis_client.xlen(keys.outbox()) == 4

    sink = RecordSink(redis_client, pool, stream=keys.outbox(), dead_stream=keys.outbox_dead(), consumer="a",
                      block_ms=50)
    await sink.ensure_group()
    assert await sink.step() == 4
    rows = await pool.fetch("SELECT id, state, record FROM callbacks_finished ORDER BY id")
    assert [(r["id"], r["state"]) for r in rows] == [("cb00000", "done"), ("cb00001", "cancelled"),
                                                     ("cb00005", "cancelled")]
    assert json.loads(rows[0]["record"])["final_reason"] == "completed"
    assert await pool.fetchval("SELECT state FROM notifications WHERE id = 'cb00009'") == "failed"


async def test_without_a_system_of_record_nothing_is_appended(redis_client: aioredis.Redis) -> None:
    keys = Keys("t")
    store = CallbackStore(redis_client, keys)
    await store.create(job(1))
    [claim] = await store.claim(NOW, lease_seconds=30, limit=10, claimer="A")
    await store.complete(claim, dataclasses.replace(claim.record, state=CallbackState.DONE))
    assert await redis_client.exists(keys.outbox()) == 0
