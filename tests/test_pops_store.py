"""PopStore and AuditLog against a real Redis."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis

from ivrserver.domain.model import Customer
from ivrserver.store import customers
from ivrserver.store.audit import AuditLog
from ivrserver.store.grants import Grant, contact_field
from ivrserver.store.keys import Keys
from ivrserver.store.pops import EPOCH, PopStore


@pytest.fixture
def store(redis_client: aioredis.Redis, keys: Keys) -> PopStore:
    return PopStore(redis_client, keys, backlog_seconds=3600)


def frames_data(frames: list[tuple[int, str]]) -> list[dict]:
    return [json.loads(f)["data"] for _, f in frames]


async def test_events_are_numbered_per_agent(store: PopStore) -> None:
    a = [(await store.append("a1", {"type": "pop", "n": i})).seq for i in range(3)]
    b = [(await store.append("b2", {"type": "pop", "n": i})).seq for i in range(2)]
    assert a == [1, 2, 3]
    assert b == [1, 2]
    assert await store.current_seq("a1") == 3
    assert await store.current_seq("nobody") == 0


async def test_frame_shape(store: PopStore) -> None:
    stored = await store.append("a1", {"type": "pop", "name": "<script>\u4e2d"})
    replay = await store.since("a1", 0)
    frame = json.loads(replay.frames[0][1])
    assert EPOCH.match(stored.epoch) and replay.epoch == stored.epoch
    assert frame == {"type": "event", "epoch": stored.epoch, "seq": 1, "ts": stored.ts_ms,
                     "data": {"type": "pop", "name": "<script>\u4e2d"}}


async def test_epoch_stays_with_the_counter_and_changes_when_redis_loses_it(
        store: PopStore, redis_client: aioredis.Redis) -> None:
    first = [await store.append("a1", {"type": "pop", "n": i}) for i in range(3)]
    other = await store.append("b2", {"type": "pop"})
    assert len({s.epoch for s in first}) == 1 and other.epoch != first[0].epoch  # one per agent
    assert await store.position("a1") == (3, first[0].epoch)
    await redis_client.flushall()  # Redis lost its data (FLUSHALL, restart without persistence)
    assert await store.position("a1") == (0, None)
    again = await store.append("a1", {"type": "pop", "n": 9})
    assert again.seq == 1 and EPOCH.match(again.epoch) and again.epoch != first[0].epoch
    assert await store.position("a1") == (1, again.epoch)


async def test_counter_without_epoch_gets_one_and_keeps_counting(store: PopStore, redis_client: aioredis.Redis,
                                                                 keys: Keys) -> None:
    # Data written before epochs existed: a counter and no epoch key.
    await redis_client.set(keys.agent_event_seq("a1"), 7)
    stored = await store.append("a1", {"type": "pop"})
    assert stored.seq == 8 and await store.position("a1") == (8, stored.epoch)


async def test_replay_for_another_epoch_restarts_at_zero(store: PopStore, redis_client: aioredis.Redis) -> None:
    old = [await store.append("a1", {"type": "pop", "n": i}) for i in range(9)]
    same = await store.since("a1", 3, epoch=old[0].epoch)
    assert [s for s, _ in same.frames] == [4, 5, 6, 7, 8, 9] and not same.reset and not same.lost
    await redis_client.flushall()
    new = [await store.append("a1", {"type": "pop", "n": 100 + i}) for i in range(5)]
    # The client saw 3 of the old numbering; the new one already counts past 3. Without the epoch
    # the replay would start at 4 and events 1-3 of the new numbering would be silently skipped.
    replay = await store.since("a1", 3, epoch=old[0].epoch)
    assert [s for s, _ in replay.frames] == [1, 2, 3, 4, 5]
    assert [d["n"] for d in frames_data(replay.frames)] == [100, 101, 102, 103, 104]
    assert (replay.after, replay.reset, replay.lost, replay.epoch) == (0, True, True, new[0].epoch)
    # A client on the current epoch, or one that does not know epochs, is served as before.
    assert [s for s, _ in (await store.since("a1", 3, epoch=new[0].epoch)).frames] == [4, 5]
    assert [s for s, _ in (await store.since("a1", 3)).frames] == [4, 5]


@pytest.mark.parametrize(("last_seq", "expected", "lost"), [
    (0, [1, 2, 3, 4, 5], False),
    (2, [3, 4, 5], False),
    (5, [], False),
    (9, [1, 2, 3, 4, 5], True),  # counter restarted since the client's number: everything, flagged
])
async def test_replay_since(store: PopStore, last_seq: int, expected: list[int], lost: bool) -> None:
    for i in range(5):
        await store.append("a1", {"type": "pop", "n": i})
    replay = await store.since("a1", last_seq)
    assert [s for s, _ in replay.frames] == expected
    assert [d["n"] for d in frames_data(replay.frames)] == [s - 1 for s in expected]
    assert replay.lost is lost


async def test_replay_is_paged_and_limited(store: PopStore) -> None:
    for i in range(250):
        await store.append("a1", {"type": "state", "n": i})
    full = await store.since("a1", 0)
    assert [s for s, _ in full.frames] == list(range(1, 251))
    assert not full.lost
    limited = await store.since("a1", 0, limit=40)
    assert [s for s, _ in limited.frames] == list(range(211, 251))
    assert limited.lost


async def test_backlog_is_trimmed_by_age(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = PopStore(redis_client, keys, backlog_seconds=1)
    await store.append("a1", {"type": "pop", "n": 1})
    await store.append("a1", {"type": "pop", "n": 2})
    await asyncio.sleep(1.2)
    await store.append("a1", {"type": "pop", "n": 3})
    # old entries are physically removed by the next append, and never replayed
    assert await redis_client.xlen(keys.agent_events("a1")) == 1
    replay = await store.since("a1", 0)
    assert [s for s, _ in replay.frames] == [3]
    assert replay.lost
    # the whole backlog expires when the agent gets nothing for the bounded time
    ttl = await redis_client.pttl(keys.agent_events("a1"))
    assert 0 < ttl <= 1000
    # numbering survives trimming
    assert await store.current_seq("a1") == 3


async def test_ack_and_unacked(store: PopStore) -> None:
    pop = {"type": "pop", "call_id": "c1", "phase": "ringing", "number": "555", "customer": {"id": "C1"}}
    s1 = (await store.append("a1", pop, needs_ack=True)).seq
    s2 = (await store.append("a2", {**pop, "call_id": "c2"}, needs_ack=True)).seq
    await store.append("a1", {"type": "state", "state": "ready"})  # not a pop: no ack needed
    now = time.time()
    pending = await store.unacked(now=now)
    assert [(p["agent"], p["seq"], p["call_id"], p["customer_id"]) for p in pending] == [
        ("a1", s1, "c1", "C1"), ("a2", s2, "c2", "C1")]
    assert await store.ack("a1", s1) is True
    assert await store.ack("a1", s1) is False  # second ack: nothing pending
    assert await store.ack("a1", s2) is False  # a1 cannot ack a2's pop (a1 has no such pop pending)
    assert [(p["agent"], p["seq"]) for p in await store.unacked(now=now)] == [("a2", s2)]
    # stale entries (older than the backlog) are dropped from the supervisors' list
    assert await store.unacked(now=now + 3601) == []


async def test_grants_expire(store: PopStore, redis_client: aioredis.Redis, keys: Keys) -> None:
    for cid in ("C1", "C2"):
        await customers.save_customer(redis_client, keys, Customer(id=cid, name=cid, phones=()))
    now = time.time()
    await store.grant("a1", Grant(now + 60, customer_id="C1", contact_id="T1"))
    await store.grant("a1", Grant(now + 5, customer_id="C2"))
    assert await store.has_access("a1", "C1", now=now)
    assert await store.has_access("a1", contact_field("T1"), now=now)
    assert await store.has_access("a1", "C2", now=now)
    assert not await store.has_access("a2", "C1", now=now)
    assert not await store.has_access("a1", "C3", now=now)
    assert not await store.has_access("a1", "C2", now=now + 6)
    assert await store.has_access("a1", "C1", now=now + 59)
    assert not await store.has_access("a1", "C1", now=now + 61)
    assert set(await store.grants("a1", now=now + 10)) == {"C1", contact_field("T1")}


async def test_append_grants_access(store: PopStore, redis_client: aioredis.Redis, keys: Keys) -> None:
    now = time.time()
    await store.append("a1", {"type": "pop"}, grant=Grant(now + 300, customer_id="C9", contact_id="T9"))
    assert await store.has_access("a1", "C9", now=now)
    assert await store.has_access("a1", contact_field("T9"), now=now)
    ttl = await redis_client.pttl(keys.agent_access("a1"))
    assert 290_000 < ttl <= 300_000


async def test_append_publishes_to_every_instance(redis_client: aioredis.Redis, redis_url: str,
                                                  keys: Keys, store: PopStore) -> None:
    other = aioredis.Redis.from_url(redis_url, decode_responses=True)
    pubsub = other.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(keys.pop_channel())
        stored = await store.append("a1", {"type": "pop", "x": 1})
        msg = None
        async with asyncio.timeout(5):
            while msg is None:
                msg = await pubsub.get_message(timeout=1)
        agent, epoch, seq, frame = msg["data"].split(" ", 3)
        assert (agent, epoch, int(seq)) == ("a1", stored.epoch, stored.seq)
        assert json.loads(frame)["data"] == {"type": "pop", "x": 1}
    finally:
        await pubsub.aclose()
        await other.aclose()


async def test_deleting_a_customer_revokes_every_grant_to_it(store: PopStore, redis_client: aioredis.Redis,
                                                              keys: Keys) -> None:
    for cid in ("C1", "C2"):
        await customers.save_customer(redis_client, keys, Customer(id=cid, name=cid, phones=()))
    now = time.time()
    await store.append("a1", {"type": "pop"}, grant=Grant(now + 300, customer_id="C1", contact_id="T1"))
    await store.append("a1", {"type": "pop"}, grant=Grant(now + 300, customer_id="C2", contact_id="T2"))
    await store.grant("b2", Grant(now + 900, customer_id="C1", contact_id="T1b"))
    await store.append("b2", {"type": "pop"}, grant=Grant(now + 300, contact_id="T-unknown"))
    assert set(await store.grants("a1", now=now)) == {"C1", contact_field("T1"), "C2", contact_field("T2")}

    assert await customers.delete_customer(redis_client, keys, "C1")

    assert set(await store.grants("a1", now=now)) == {"C2", contact_field("T2")}
    assert set(await store.grants("b2", now=now)) == {contact_field("T-unknown")}
    for agent, field_name in (("a1", "C1"), ("a1", contact_field("T1")), ("b2", "C1"), ("b2", contact_field("T1b"))):
        assert not await store.has_access(agent, field_name, now=now)
    assert not await redis_client.exists(keys.customer_grantees("C1"))
    assert await redis_client.exists(keys.customer_grantees("C2"))
    assert await store.revoke_customer("C1") == 0  # nothing left to revoke


async def test_a_grant_to_a_customer_that_no_longer_exists_is_not_listed(store: PopStore) -> None:
    # e.g. the "ended" phase of a call whose customer was deleted during the call re-grants it
    now = time.time()
    await store.append("a1", {"type": "pop_phase"}, grant=Grant(now + 900, customer_id="gone", contact_id="T3"))
    assert set(await store.grants("a1", now=now)) == {contact_field("T3")}
    assert not await store.has_access("a1", "gone", now=now)


@pytest.mark.parametrize("agent", ["", "a b", "a:b\n", "x" * 65, "../etc"])
async def test_bad_agent_ids_are_refused(store: PopStore, agent: str) -> None:
    with pytest.raises(ValueError):
        await store.append(agent, {"type": "pop"})


async def test_audit_is_append_only(redis_client: aioredis.Redis, keys: Keys) -> None:
    audit = AuditLog(redis_client, keys)
    ids = []
    for i in range(5):
        ids.append(await audit.append(who="a1", role="agent", what="customer.read", target=f"C{i}",
                                      why="screen pop", allowed=i % 2 == 0, at=1000.0 + i, source="127.0.0.1"))
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert await audit.length() == 5
    recent = await audit.recent(count=3)
    assert [e.target for e in recent] == ["C4", "C3", "C2"]
    assert recent[0].who == "a1" and recent[0].why == "screen pop" and recent[0].allowed is True
    assert recent[1].allowed is False and recent[0].at == 1004.0
    older = await audit.recent(count=10, before=recent[-1].id)
    assert [e.target for e in older] == ["C1", "C0"]
    # the class offers no way to change or delete history
    assert not any(hasattr(audit, name) for name in ("delete", "remove", "update", "trim", "clear"))
    await audit.append(who="s1", role="supervisor", what="audit.read", target="audit", why="review",
                       allowed=True, at=2000.0)
    assert await audit.length() == 6
    assert [e.target for e in await audit.recent(count=10)][1:] == ["C4", "C3", "C2", "C1", "C0"]
