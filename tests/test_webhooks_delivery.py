"""Outgoing webhooks end to end: Webhooks.publish and the deliverer on a real Redis, against a real
aiohttp receiver on 127.0.0.1 that checks the signature itself (plain hmac, as a receiver would),
answers 500, sleeps past the timeout, is down (port closed) and comes back (the REST routes:
tests/test_webhooks_api.py). The receiver de-duplicates by Idempotency-Key, as the contract asks of receivers, and
also counts its raw hits: at least once, never lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from ivrserver.config import WebhookSettings
from ivrserver.devstack.webhook_receiver import Behaviour, SignedReceiver
from ivrserver.domain.webhooks import DeliveryState, Endpoint, delivery_id
from ivrserver.metrics import Metrics
from ivrserver.services.webhooks import WebhookNotDead, WebhookNotFound, Webhooks
from ivrserver.store.keys import Keys
from tests.conftest import free_port
from tests.inprocess import eventually

SECRET = b"receiver-secret-0123456789"
FAST = WebhookSettings(timeout_seconds=0.5, max_attempts=5, backoff_base_seconds=0.05, backoff_max_seconds=0.2,
                       lease_seconds=1.0, poll_interval=0.05, concurrency=8)



def ok() -> web.Response:
    return web.json_response({"ok": True})


@dataclass
class Receiver(SignedReceiver):
    """The tests' receiver: SignedReceiver with this module's SECRET, on a port chosen up front
    (an endpoint may name its url before the receiver starts)."""

    secret: bytes = SECRET
    port: int = field(default_factory=free_port)


def status(code: int, headers: dict[str, str] | None = None) -> Behaviour:
    async def answer(_n: int) -> web.StreamResponse:
        return web.json_response({"status": code}, status=code, headers=headers)
    return answer


def sleep(seconds: float) -> Behaviour:
    async def answer(_n: int) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return ok()
    return answer


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def endpoint(receiver: Receiver, name: str = "crm", events: tuple[str, ...] = ("case.*",), **kw: Any) -> Endpoint:
    return Endpoint(name, receiver.url, events, SECRET, timeout=kw.get("timeout", FAST.timeout_seconds),
                    max_attempts=kw.get("max_attempts", FAST.max_attempts))


def webhooks(redis: aioredis.Redis, keys: Keys, endpoints: list[Endpoint], instance: str = "i1",
             settings: WebhookSettings = FAST, metrics: Metrics | None = None) -> Webhooks:
    return Webhooks(redis, keys, endpoints, settings=settings, hot_days=1, instance=instance, metrics=metrics)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Webhooks], asyncio.Task[None]]]:
    """Starts deliverers; every one is stopped (cancelled) at the end."""
    tasks: list[asyncio.Task[None]] = []

    def start(w: Webhooks) -> asyncio.Task[None]:
        task = asyncio.create_task(w.run())
        tasks.append(task)
        return task

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def settled(w: Webhooks, ident: str, state: DeliveryState, timeout: float = 15.0) -> Any:
    async def check() -> Any:
        d = await w.store.get(ident)
        return d if d is not None and d.state is state else None
    return await eventually(check, timeout, f"{ident} {state.value}")


async def test_delivered_signed_with_the_contract_envelope_once(redis_client: aioredis.Redis, keys: Keys,
                                                                 receiver: Receiver, running: Any) -> None:
    metrics = Metrics()
    w = webhooks(redis_client, keys, [endpoint(receiver)], metrics=metrics)
    running(w)
    assert await w.publish("case.resolved", {"case_id": "K-1", "result": "charge cancelled"}, key="case:K-1:7") is True
    ident = delivery_id("case:K-1:7", "crm")
    d = await settled(w, ident, DeliveryState.DELIVERED)
    assert len(receiver.hits) == 1 and receiver.bad_signatures == 0
    hit = receiver.hits[0]
    assert hit["body"]["id"] == ident and hit["body"]["event"] == "case.resolved" and hit["body"]["key"] == "case:K-1:7"
    assert hit["body"]["data"] == {"case_id": "K-1", "result": "charge cancelled"}
    assert isinstance(hit["body"]["created_at"], float)
    assert hit["headers"]["X-Ivrserver-Event"] == "case.resolved"
    assert hit["headers"]["Idempotency-Key"] == "case:K-1:7"
    assert hit["headers"]["Content-Type"] == "application/json"
    assert [(a.status, a.error, a.by) for a in d.log] == [(200, "", "i1")]
    # the same key again (the caller retrying, or another instance): nothing more is sent
    assert await w.publish("case.resolved", {"case_id": "K-1"}, key="case:K-1:7") is False
    # an event no endpoint wants: accepted, nothing sent
    assert await w.publish("incident.opened", {"id": "I-1"}, key="incident:I-1") is True
    await asyncio.sleep(0.3)
    assert len(receiver.hits) == 1
    assert metrics.webhook_attempts.labels("delivered")._value.get() == 1
    # the secret is nowhere in Redis
    for name in await redis_client.keys("*"):
        kind = await redis_client.type(name)
        dump = json.dumps(await redis_client.hgetall(name)) if kind == "hash" else ""
        assert SECRET.decode() not in dump + name


async def test_500s_are_retried_with_backoff_until_delivered(redis_client: aioredis.Redis, keys: Keys,
                                                             receiver: Receiver, running: Any) -> None:
    receiver.answers = [status(500), status(503), status(502)]
    w = webhooks(redis_client, keys, [endpoint(receiver)])
    running(w)
    await w.publish("case.action_requested", {"action": "cancel partner charge"}, key="k-500")
    d = await settled(w, delivery_id("k-500", "crm"), DeliveryState.DELIVERED)
    assert [a.status for a in d.log] == [500, 503, 502, 200]
    assert len(receiver.hits) == 4 and len(receiver.accepted) == 1
    gaps = [b.at - a.at for a, b in zip(d.log, d.log[1:], strict=False)]
    assert all(g >= 0.02 for g in gaps)  # backoff (0.05 s doubling, jitter up to half) between attempts


async def test_a_timeout_is_retried_and_the_receiver_deduplicates(redis_client: aioredis.Redis, keys: Keys,
                                                                  receiver: Receiver, running: Any) -> None:
    receiver.answers = [sleep(1.0)]  # past the 0.5 s timeout: the receiver got it, we never heard back
    w = webhooks(redis_client, keys, [endpoint(receiver)])
    running(w)
    await w.publish("case.resolved", {"n": 1}, key="k-slow")
    d = await settled(w, delivery_id("k-slow", "crm"), DeliveryState.DELIVERED)
    assert [(a.status, a.error) for a in d.log] == [(None, "timeout after 0.5s"), (200, "")]
    assert len(receiver.hits) == 2  # at least once: the raw hits
    assert list(receiver.accepted) == ["k-slow"]  # acted on once


async def test_receiver_down_then_back_gets_it_once(redis_client: aioredis.Redis, keys: Keys, receiver: Receiver,
                                                    running: Any) -> None:
    await receiver.stop()  # the port is closed
    settings = WebhookSettings(**{**FAST.__dict__, "max_attempts": 50})
    w = webhooks(redis_client, keys, [endpoint(receiver, max_attempts=50)], settings=settings)
    running(w)
    await w.publish("case.resolved", {"n": 1}, key="k-down")
    ident = delivery_id("k-down", "crm")

    async def refused_twice() -> bool:
        d = await w.store.get(ident)
        return d is not None and sum(a.error == "connection refused" for a in d.log) >= 2
    await eventually(refused_twice, 10, "two refused attempts")
    assert receiver.hits == []
    await receiver.start()  # back on the same port
    d = await settled(w, ident, DeliveryState.DELIVERED)
    assert d.log[-1].status == 200 and all(a.error == "connection refused" for a in d.log[:-1])
    assert len(receiver.hits) == 1 and list(receiver.accepted) == ["k-down"]


async def test_dead_after_max_attempts_then_retried_from_the_dead_letters(
        redis_client: aioredis.Redis, keys: Keys, receiver: Receiver, running: Any) -> None:
    receiver.answers = [status(500)] * 3
    metrics = Metrics()
    w = webhooks(redis_client, keys, [endpoint(receiver, max_attempts=3)], metrics=metrics)
    running(w)
    await w.publish("case.compensation_granted", {"amount_cents": 500}, key="k-dead")
    ident = delivery_id("k-dead", "crm")
    d = await settled(w, ident, DeliveryState.DEAD)
    assert d.dead_reason == "gave up after 3 attempts" and d.attempt == 3
    assert [x.id for x in await w.dead()] == [ident]
    assert metrics.webhook_attempts.labels("retry")._value.get() == 2
    assert metrics.webhook_attempts.labels("dead")._value.get() == 1
    assert 0 < await redis_client.ttl(keys.webhook_delivery(ident)) <= 86400  # hot_days
    await asyncio.sleep(0.3)
    assert len(receiver.hits) == 3  # dead: no more attempts
    # a supervisor re-queues it: a fresh budget, the receiver answers 200 now
    again = await w.retry(ident, by="agent1010")
    assert again.state is DeliveryState.PENDING and again.attempt == 0
    # pending: no expiry (read with its state in one transaction: the running deliverer may
    # already have delivered it, and a delivered one expires after hot_days)
    async with redis_client.pipeline(transaction=True) as pipe:
        state, ttl = await pipe.hget(keys.webhook_delivery(ident), "state").ttl(keys.webhook_delivery(ident)).execute()
    assert (state, ttl) == (DeliveryState.PENDING.value, -1) or (
        state == DeliveryState.DELIVERED.value and 0 < ttl <= 86400), (state, ttl)
    d = await settled(w, ident, DeliveryState.DELIVERED)
    assert [a.status for a in d.log] == [500, 500, 500, 200] and d.attempts == 4
    assert await w.dead() == []
    with pytest.raises(WebhookNotDead):
        await w.retry(ident, by="agent1010")
    with pytest.raises(WebhookNotFound):
        await w.retry(delivery_id("nope", "crm"), by="agent1010")


@pytest.mark.parametrize("code", [400, 404, 410, 301])
async def test_a_final_answer_is_dead_at_once(redis_client: aioredis.Redis, keys: Keys, receiver: Receiver,
                                              running: Any, code: int) -> None:
    receiver.answers = [status(code, {"Location": "http://127.0.0.1:1/elsewhere"} if code == 301 else None)]
    w = webhooks(redis_client, keys, [endpoint(receiver)])
    running(w)
    await w.publish("case.resolved", {}, key=f"k-{code}")
    d = await settled(w, delivery_id(f"k-{code}", "crm"), DeliveryState.DEAD)
    assert d.dead_reason == f"final answer {code}" and len(d.log) == 1
    await asyncio.sleep(0.2)
    assert len(receiver.hits) == 1  # and a redirect is not followed


async def test_429_retry_after_is_honoured(redis_client: aioredis.Redis, keys: Keys, receiver: Receiver,
                                           running: Any) -> None:
    receiver.answers = [status(429, {"Retry-After": "1"})]
    w = webhooks(redis_client, keys, [endpoint(receiver)])
    running(w)
    await w.publish("case.resolved", {}, key="k-429")
    d = await settled(w, delivery_id("k-429", "crm"), DeliveryState.DELIVERED)
    first, second = d.log
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 0.9  # not the 0.05 s backoff


async def test_publish_creates_each_delivery_once_across_instances(redis_client: aioredis.Redis, keys: Keys,
                                                                   receiver: Receiver) -> None:
    eps = [endpoint(receiver, "crm", ("case.*",)), endpoint(receiver, "billing", ("case.compensation_*",)),
           endpoint(receiver, "noc", ("incident.*",))]
    a, b = webhooks(redis_client, keys, eps, "a"), webhooks(redis_client, keys, eps, "b")
    results = await asyncio.gather(*[w.publish("case.compensation_granted", {"x": 1}, key="same")
                                     for w in (a, b) * 10])
    assert sorted(results) == [False] * 19 + [True]
    assert await redis_client.zcard(keys.webhooks_due()) == 2  # crm and billing, not noc
    assert {d.endpoint for d in await a.deliveries()} == {"crm", "billing"}


async def test_two_instances_deliver_each_event_once(redis_client: aioredis.Redis, keys: Keys, receiver: Receiver,
                                                     running: Any) -> None:
    eps = [endpoint(receiver)]
    a, b = webhooks(redis_client, keys, eps, "a"), webhooks(redis_client, keys, eps, "b")
    running(a)
    running(b)
    for n in range(40):
        await (a if n % 2 else b).publish("case.resolved", {"n": n}, key=f"k{n}")

    async def all_delivered() -> bool:
        return len(await a.deliveries(state="delivered", limit=100)) == 40
    await eventually(all_delivered, 20, "40 delivered")
    await asyncio.sleep(0.3)
    assert len(receiver.hits) == 40 and len(receiver.accepted) == 40  # each exactly once
    assert await redis_client.zcard(keys.webhooks_leased()) == 0


async def test_an_instance_killed_mid_delivery_is_redelivered_after_its_lease(
        redis_client: aioredis.Redis, keys: Keys, receiver: Receiver, running: Any) -> None:
    receiver.answers = [sleep(3)]  # the first attempt hangs on the receiver (past the lease)
    settings = WebhookSettings(**{**FAST.__dict__, "timeout_seconds": 20.0, "lease_seconds": 1.0})
    eps = [endpoint(receiver, timeout=0.6)]  # → a lease of 1.2 s (twice the timeout)
    a = webhooks(redis_client, keys, eps, "a", settings=settings)
    task = running(a)
    await a.publish("case.resolved", {"n": 1}, key="k-kill")
    await eventually(lambda: asyncio.sleep(0, result=len(receiver.hits) == 1), 5, "first hit")
    task.cancel()  # instance a dies mid-attempt: nothing settles its lease
    await asyncio.gather(task, return_exceptions=True)
    ident = delivery_id("k-kill", "crm")
    assert await redis_client.zscore(keys.webhooks_leased(), ident) is not None
    b = webhooks(redis_client, keys, eps, "b", settings=settings)
    running(b)
    d = await settled(b, ident, DeliveryState.DELIVERED)
    assert [(x.status, x.by) for x in d.log] == [(200, "b")]
    assert len(receiver.hits) == 2 and list(receiver.accepted) == ["k-kill"]


async def test_the_deliverer_waits_out_a_redis_outage(keys: Keys, receiver: Receiver, running: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    down = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)  # nothing listens
    try:
        w = webhooks(down, keys, [endpoint(receiver)])
        task = running(w)
        await asyncio.sleep(0.5)  # ~10 polls, every claim refused
        assert not task.done()  # no crash, no restart storm: it looks again every poll interval
        warnings = [r for r in caplog.records if "cannot claim deliveries" in r.getMessage()]
        assert len(warnings) == 1  # said once, not every poll
    finally:
        await down.aclose()
