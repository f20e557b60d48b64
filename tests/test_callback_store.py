"""The Redis scheduler on a real redis-server: atomic claims, leases, guarded writes, placed markers."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import redis.asyncio as aioredis

from ivrserver.domain import callbacks as cbm
from ivrserver.domain.callbacks import Callback, CallbackState
from ivrserver.domain.model import ContactPreferences
from ivrserver.store.callbacks import CallbackStore, DialStart, UpdateResult, _json, lease_info_key
from ivrserver.store.keys import Keys

NOW = 1_717_408_800.0


def job(i: int, due: float = NOW, **kw: object) -> Callback:
    base: dict[str, object] = dict(id=f"cb{i:05d}", customer_id=f"c{i % 7}", number="5551234",
                                   earliest=due, latest=due + 7200, created_at=NOW - 100 + i,
                                   state=CallbackState.SCHEDULED, due_at=due)
    base.update(kw)
    return Callback(**base)  # type: ignore[arg-type]


async def test_create_get_and_duplicate_id(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    cb = job(1, context="said: \"charged twice\"\nwants a refund", preferred_agent="agent1001")
    assert await store.create(cb) is True
    assert await store.create(dataclasses.replace(cb, number="999")) is False
    assert await store.get(cb.id) == cb
    assert await store.get("nope") is None
    assert await redis_client.zscore(keys.callbacks_due(), cb.id) == NOW


async def test_claim_takes_only_due_jobs_oldest_first(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    for i, due in enumerate([NOW + 10, NOW - 5, NOW, NOW + 0.5]):
        await store.create(job(i, due))
    claims = await store.claim(NOW, lease_seconds=30, limit=10, claimer="A")
    assert [(c.callback_id, c.due) for c in claims] == [("cb00001", NOW - 5), ("cb00002", NOW)]
    assert len({c.token for c in claims}) == 2
    assert await store.claim(NOW, lease_seconds=30, limit=10, claimer="B") == []
    assert await store.counts() == {"due": 2, "leased": 2, "total": 4}
    info = await redis_client.hget(lease_info_key(keys), "cb00001")
    assert info is not None and info.endswith(" A")


async def test_claim_batch_tells_the_next_due_time_and_lease_expiry(redis_client: aioredis.Redis,
                                                                    keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    empty = await store.claim_batch(NOW, lease_seconds=30, limit=10, claimer="A")
    assert (empty.claims, empty.next_due, empty.next_expiry) == ([], None, None)
    for i, due in enumerate([NOW - 1, NOW, NOW + 90.5, NOW + 600]):
        await store.create(job(i, due))
    batch = await store.claim_batch(NOW, lease_seconds=30, limit=1, claimer="A")
    assert [c.callback_id for c in batch.claims] == ["cb00000"]
    assert (batch.next_due, batch.next_expiry) == (NOW, NOW + 30)  # cb00001 is due and left waiting
    later = await store.claim_batch(NOW + 5, lease_seconds=30, limit=10, claimer="B")
    assert [c.callback_id for c in later.claims] == ["cb00001"]
    assert (later.next_due, later.next_expiry) == (NOW + 90.5, NOW + 30)


async def test_many_concurrent_claimers_never_get_the_same_job(redis_url: str, redis_client: aioredis.Redis,
                                                               keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    n = 600
    pipe_jobs = [job(i, NOW - (i % 50)) for i in range(n)]
    await asyncio.gather(*(store.create(cb) for cb in pipe_jobs))
    clients = [aioredis.Redis.from_url(redis_url, decode_responses=True) for _ in range(12)]
    try:
        async def claimer(idx: int) -> list[str]:
            own = CallbackStore(clients[idx], keys)
            got: list[str] = []
            while True:
                claims = await own.claim(NOW, lease_seconds=60, limit=7, claimer=f"i{idx}")
                if not claims:
                    return got
                got.extend(c.callback_id for c in claims)
                await asyncio.sleep(0)

        results = await asyncio.gather(*(claimer(i) for i in range(12)))
    finally:
        for c in clients:
            await c.aclose()
    everything = [cid for r in results for cid in r]
    assert len(everything) == n, "a job was claimed twice or lost"
    assert set(everything) == {cb.id for cb in pipe_jobs}
    assert sum(1 for r in results if r) > 1, "claims were not actually concurrent"


async def test_expired_lease_is_requeued_at_its_old_due(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    await store.create(job(1, NOW - 3))
    [claim] = await store.claim(NOW, lease_seconds=30, limit=5, claimer="A")
    assert await store.reap(NOW + 29) == []
    assert await store.reap(NOW + 31) == ["cb00001"]
    assert await redis_client.zscore(keys.callbacks_due(), "cb00001") == NOW - 3
    assert await redis_client.hget(lease_info_key(keys), "cb00001") is None
    [again] = await store.claim(NOW + 31, lease_seconds=30, limit=5, claimer="B")
    assert again.callback_id == claim.callback_id and again.token != claim.token


async def test_renew_keeps_a_slow_holder_from_being_reaped(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    await store.create(job(1))
    [claim] = await store.claim(NOW, lease_seconds=30, limit=5, claimer="A")
    assert await store.renew(claim, NOW + 20, 30)
    assert await store.reap(NOW + 45) == []
    assert await store.reap(NOW + 51) == ["cb00001"]
    assert not await store.renew(claim, NOW + 52, 30), "a reaped lease cannot be renewed"


async def test_stale_token_cannot_touch_a_reclaimed_job(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    cb = job(1)
    await store.create(cb)
    [stale] = await store.claim(NOW, lease_seconds=10, limit=1, claimer="A")
    await store.reap(NOW + 11)
    [fresh] = await store.claim(NOW + 11, lease_seconds=10, limit=1, claimer="B")
    dialing = cbm.start_attempt(cb, NOW + 11, "a1")
    failed = cbm.fail(cb, "by stale holder", NOW + 12)
    assert not await store.save_leased(stale, failed)
    assert not await store.complete(stale, failed)
    assert not await store.reschedule(stale, failed, NOW + 999)
    assert not await store.cancel(stale, cbm.cancel(cb, NOW + 12))
    assert await store.get(cb.id) == cb
    assert await store.save_leased(fresh, dialing)
    assert await store.complete(fresh, dialing)
    assert await store.get(cb.id) == dialing
    assert await store.counts() == {"due": 0, "leased": 0, "total": 1}
    assert not await store.complete(fresh, dialing), "a settled lease is gone"


async def test_reschedule_puts_the_job_back_and_complete_drops_it(redis_client: aioredis.Redis,
                                                                 keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    cb = job(1)
    await store.create(cb)
    [claim] = await store.claim(NOW, lease_seconds=10, limit=1, claimer="A")
    waiting = cbm.wait_until(cb, NOW + 600, NOW)
    assert await store.reschedule(claim, waiting, NOW + 600)
    assert await redis_client.zscore(keys.callbacks_due(), cb.id) == NOW + 600
    assert await store.claim(NOW + 599, lease_seconds=10, limit=1, claimer="A") == []
    [claim2] = await store.claim(NOW + 600, lease_seconds=10, limit=1, claimer="A")
    assert await store.complete(claim2, None)
    assert await store.get(cb.id) == waiting
    assert await store.counts() == {"due": 0, "leased": 0, "total": 1}


async def test_placed_marker_is_set_once_even_across_restarts(redis_url: str, redis_client: aioredis.Redis,
                                                             keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    assert await store.mark_placed("cb1", 1, "A tok 1.0")
    assert not await store.mark_placed("cb1", 1, "B tok 2.0")
    assert await store.mark_placed("cb1", 2, "B tok 3.0"), "each attempt has its own marker"
    assert 0 < await redis_client.ttl(keys.callback_placed("cb1", 1)) <= 30 * 86400
    restarted = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        after = CallbackStore(restarted, keys)
        assert not await after.mark_placed("cb1", 1, "C")
        assert await after.placed_by("cb1", 1) == "A tok 1.0"
        assert await after.placed_by("cb1", 3) is None
    finally:
        await restarted.aclose()


async def test_jobs_survive_a_new_client(redis_url: str, redis_client: aioredis.Redis, keys: Keys) -> None:
    await CallbackStore(redis_client, keys).create(job(1))
    other = aioredis.Redis.from_url(redis_url, decode_responses=False)  # bytes replies work too
    try:
        store = CallbackStore(other, keys)
        [claim] = await store.claim(NOW, lease_seconds=10, limit=5, claimer="new process")
        assert claim.callback_id == "cb00001"
        assert (await store.get("cb00001")) == job(1)
    finally:
        await other.aclose()


async def test_unleased_update_is_version_checked_and_refused_while_leased(
        redis_client: aioredis.Redis, keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    cb = job(1)
    await store.create(cb)
    moved = cbm.wait_until(cb, NOW + 300, NOW)
    assert await store.update(moved, expected_version=cb.version + 7, due=NOW + 300) is UpdateResult.CONFLICT
    assert await store.update(moved, expected_version=cb.version, due=NOW + 300) is UpdateResult.OK
    assert await redis_client.zscore(keys.callbacks_due(), cb.id) == NOW + 300
    [claim] = await store.claim(NOW + 300, lease_seconds=10, limit=1, claimer="A")
    cancelled = cbm.cancel(moved, NOW + 301)
    assert await store.update(cancelled, expected_version=moved.version, due=None) is UpdateResult.LEASED
    assert await store.reschedule(claim, moved, NOW + 900)
    assert await store.update(cancelled, expected_version=moved.version, due=None) is UpdateResult.OK
    assert await redis_client.zscore(keys.callbacks_due(), cb.id) is None
    ghost = dataclasses.replace(cb, id="ghost")
    assert await store.update(ghost, expected_version=0, due=None) is UpdateResult.MISSING


async def test_list_filters(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    await store.create(job(1, preferred_agent="a1"))
    await store.create(job(2, preferred_agent="a2", state=CallbackState.CANCELLED, due_at=None))
    await store.create(job(3, customer_id="vip7"))
    assert [c.id for c in await store.list()] == ["cb00003", "cb00002", "cb00001"]
    assert [c.id for c in await store.list(agent="a1")] == ["cb00001"]
    assert [c.id for c in await store.list(state=CallbackState.CANCELLED)] == ["cb00002"]
    assert [c.id for c in await store.list(customer="vip7")] == ["cb00003"]
    assert [c.id for c in await store.list(limit=1)] == ["cb00003"]


async def test_claim_brings_the_records_along(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    jobs = [job(i, NOW - i, context=f"note {i}") for i in range(3)]
    for cb in jobs:
        await store.create(cb)
    await redis_client.delete(keys.callback("cb00001"))  # a due job whose record vanished
    await redis_client.set(keys.callback("cb00000"), "{not json")  # and one that is unreadable
    claims = await store.claim(NOW, lease_seconds=30, limit=10, claimer="A")
    assert [c.callback_id for c in claims] == ["cb00002", "cb00001", "cb00000"]
    assert [(c.loaded, c.record) for c in claims] == [(True, jobs[2]), (True, None), (False, None)]
    await store.create(job(5))
    [bare] = await store.claim(NOW, lease_seconds=30, limit=10, claimer="A", with_records=False)
    assert (bare.callback_id, bare.loaded, bare.record) == ("cb00005", False, None)


async def test_start_dial_saves_marks_and_refreshes_the_lease_atomically(redis_client: aioredis.Redis,
                                                                         keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    cb = job(1)
    await store.create(cb)
    [claim] = await store.claim(NOW, lease_seconds=10, limit=1, claimer="A")
    dialing = cbm.start_attempt(cb, NOW + 2, "a1")
    assert await store.start_dial(claim, dialing, "A tok 2.0", now=NOW + 2, lease_seconds=10) is DialStart.MARKED
    assert await store.get(cb.id) == dialing
    assert await store.placed_by(cb.id, 1) == "A tok 2.0"
    assert 0 < await redis_client.ttl(keys.callback_placed(cb.id, 1)) <= 30 * 86400
    assert await redis_client.zscore(keys.callbacks_leased(), cb.id) == NOW + 12
    assert await store.reap(NOW + 11) == [], "the lease was refreshed for the dial"
    # The same attempt again under a valid lease: saved, but the marker is not taken twice.
    assert await store.start_dial(claim, dialing, "A tok 3.0", now=NOW + 3, lease_seconds=10) \
        is DialStart.ALREADY_PLACED
    assert await store.placed_by(cb.id, 1) == "A tok 2.0"


async def test_start_dial_with_a_lost_lease_writes_nothing(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = CallbackStore(redis_client, keys)
    cb = job(1)
    await store.create(cb)
    [stale] = await store.claim(NOW, lease_seconds=10, limit=1, claimer="A")
    assert await store.reap(NOW + 11) == [cb.id]
    dialing = cbm.start_attempt(cb, NOW + 11, "a1")
    assert await store.start_dial(stale, dialing, "A", now=NOW + 11, lease_seconds=10) is DialStart.LEASE_LOST
    assert await store.get(cb.id) == cb
    assert await store.placed_by(cb.id, 1) is None
    assert await redis_client.zscore(keys.callbacks_due(), cb.id) == NOW, "still due, not leased"
    [fresh] = await store.claim(NOW + 11, lease_seconds=10, limit=1, claimer="B")
    assert await store.start_dial(fresh, dialing, "B", now=NOW + 11, lease_seconds=10) is DialStart.MARKED
    assert await store.start_dial(stale, dialing, "A", now=NOW + 12, lease_seconds=10) is DialStart.LEASE_LOST
    assert await store.placed_by(cb.id, 1) == "B"


def test_record_json_is_exactly_that_of_to_dict() -> None:
    plain = job(1)
    busy = cbm.after_attempt(cbm.start_attempt(job(2, context="said: \"é\" \u2603\nline 2", preferred_agent="a1",
                                                   case_id="K-1", prompt="p", requested_by="a2"),
                                               NOW + 1, "a1"),
                             cbm.AttemptOutcome.BUSY, ContactPreferences(), cbm.CallbackPolicy(), NOW + 2,
                             detail="busy, really")
    held = job(3, queue_place=cbm.QueuePlace("general", NOW - 5, 2), mode=cbm.CallbackMode.CUSTOMER_FIRST,
               preferences=ContactPreferences(timezone="Asia/Tokyo", do_not_call=True), due_at=None)
    for cb in (plain, busy, held):
        assert _json(cb) == json.dumps(cbm.to_dict(cb), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        assert cbm.from_dict(json.loads(_json(cb))) == cb
    assert busy.history and busy.history[-1].outcome is cbm.AttemptOutcome.BUSY
