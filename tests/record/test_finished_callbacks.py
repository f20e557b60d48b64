"""The callback scheduler's store writes a `callback` outbox entry when a record reaches a final
state, and only then, and only with a system of record (real Redis, real PostgreSQL, real sink).
With one, a finished record then lives in Redis only redis.hot_days and leaves the callbacks index
once gone (still listed meanwhile); Redis-only it stays. The CLI (`ivrserver callbacks`, a real
process) does the same as the server when postgres.dsn is set."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import asyncpg
import redis.asyncio as aioredis

from ivrserver.domain.callbacks import CallbackMode, CallbackState
from ivrserver.record.sink import RecordSink
from ivrserver.store.callbacks import CallbackStore, UpdateResult
from ivrserver.store.keys import Keys
from tests.cli_harness import ivrserver, user_env
from tests.test_callback_store import NOW, job
from tests.test_cli_commands import tomorrow_at


async def test_final_states_reach_callbacks_finished_and_notifications(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
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


# --- with a system of record a finished callback lives in Redis only hot_days ------------------------

DAY = 86400


async def test_a_finished_record_expires_after_hot_days_and_leaves_the_index(
        redis_client: aioredis.Redis) -> None:
    keys = Keys("h", records=True)
    store = CallbackStore(redis_client, keys, hot_days=3)
    for i in range(5):
        await store.create(job(i))
    claims = {c.callback_id: c for c in await store.claim(NOW, lease_seconds=30, limit=10, claimer="A")}
    a, b, c, d = (claims[f"cb0000{i}"] for i in range(4))
    await store.complete(a, dataclasses.replace(a.record, state=CallbackState.DONE, final_reason="completed"))
    await store.save_leased(b, dataclasses.replace(b.record, state=CallbackState.DIALING))  # not final
    cb4 = await store.get("cb00004")
    assert cb4 is not None
    cancelled = dataclasses.replace(claims["cb00004"].record, state=CallbackState.CANCELLED)
    await store.cancel(claims["cb00004"], cancelled)
    # finished: expire after hot_days (both paths); the others stay
    for finished in ("cb00000", "cb00004"):
        assert 3 * DAY - 10 < await redis_client.ttl(keys.callback(finished)) <= 3 * DAY, finished
    for waiting in ("cb00001", "cb00002", "cb00003"):
        assert await redis_client.ttl(keys.callback(waiting)) == -1, waiting
    assert 0 < await redis_client.ttl(keys.callbacks_expiring()) <= 4 * DAY
    # recent finished callbacks are still listed (GET /api/v1/callbacks)
    listed = [cb.id for cb in await store.list(state=CallbackState.DONE)]
    assert listed == ["cb00000"]

    # three days later cb00000's record is gone: the next final write drops it from the index
    await redis_client.pexpire(keys.callback("cb00000"), 1)
    await redis_client.zadd(keys.callbacks_expiring(), {"cb00000": 1.0}, xx=True)
    await asyncio.sleep(0.01)
    await store.complete(c, dataclasses.replace(c.record, state=CallbackState.FAILED, final_reason="no answer"))
    index = set(await redis_client.zrange(keys.callback_index(), 0, -1))
    assert "cb00000" not in index and {"cb00001", "cb00002", "cb00003", "cb00004"} <= index
    assert await redis_client.zscore(keys.callbacks_expiring(), "cb00000") is None
    # a listing drops an entry whose record expired before any sweep saw it
    await redis_client.delete(keys.callback("cb00004"))
    assert "cb00004" not in [cb.id for cb in await store.list()]
    assert await redis_client.zscore(keys.callback_index(), "cb00004") is None
    # an unleased edit (API cancel) of a waiting job expires too
    await store.complete(d, None)
    cb3 = await store.get("cb00003")
    assert cb3 is not None
    assert await store.update(dataclasses.replace(cb3, state=CallbackState.CANCELLED, version=cb3.version + 1),
                              expected_version=cb3.version, due=None) is UpdateResult.OK
    assert 0 < await redis_client.ttl(keys.callback("cb00003")) <= 3 * DAY


async def test_redis_only_a_finished_record_stays(redis_client: aioredis.Redis) -> None:
    keys = Keys("k")
    store = CallbackStore(redis_client, keys, hot_days=3)
    await store.create(job(1))
    [claim] = await store.claim(NOW, lease_seconds=30, limit=10, claimer="A")
    await store.complete(claim, dataclasses.replace(claim.record, state=CallbackState.DONE))
    assert await redis_client.ttl(keys.callback("cb00001")) == -1
    assert await redis_client.zscore(keys.callback_index(), "cb00001") is not None
    assert await redis_client.exists(keys.callbacks_expiring()) == 0


async def test_the_cli_finishes_callbacks_like_the_server_when_postgres_is_configured(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    env = user_env(redis_url, IVRSERVER_REDIS__PREFIX="clicb", IVRSERVER_REDIS__HOT_DAYS="2",
                   IVRSERVER_POSTGRES__DSN="postgresql://u@127.0.0.1:9/db")  # the CLI never connects to it
    added = await asyncio.to_thread(ivrserver, "callbacks", "add", "--customer", "c1", "--number", "+8613800000001",
                                    "--at", tomorrow_at(10), env=env)  # inside calling hours whenever it runs
    assert added.returncode == 0, added.stdout + added.stderr
    callback_id = added.stdout.split()[0]
    keys = Keys("clicb")
    assert await redis_client.ttl(keys.callback(callback_id)) == -1
    cancelled = await asyncio.to_thread(ivrserver, "callbacks", "cancel", callback_id, env=env)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert 0 < await redis_client.ttl(keys.callback(callback_id)) <= 2 * DAY
    [(_, fields)] = await redis_client.xrange(keys.outbox())
    assert fields["kind"] == "callback" and json.loads(fields["data"])["state"] == "cancelled"
