"""SmsService (services/sms.py) on a real Redis: exactly once per key, the outcome recorded, a
retry only when nothing left; the gateway variant through the real Webhooks to a real HTTP
receiver (the operator's SMS gateway): one POST per key, Mandarin intact. The Asterisk transport
on a real Asterisk + SIPp phone: tests/integration/test_sms_messages.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ivrserver.config import AmiSettings
from ivrserver.domain.webhooks import Endpoint
from ivrserver.metrics import Metrics
from ivrserver.pbx.ami import AmiClient
from ivrserver.pbx.messaging import AmiMessageSender
from ivrserver.services.sms import GatewaySms, SmsService
from ivrserver.services.webhooks import Webhooks
from ivrserver.store.keys import Keys
from ivrserver.store.sms import SmsMarkers
from tests.conftest import free_port
from tests.test_webhooks_delivery import FAST, SECRET, Receiver

TEXT = "您的卡将于2027年1月31日到期。新卡正在寄出。"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def markers(redis: aioredis.Redis, keys: Keys) -> SmsMarkers:
    return SmsMarkers(redis, keys, kept_seconds=3600)


def gateway(redis: aioredis.Redis, keys: Keys, receiver: Receiver | None) -> Webhooks:
    endpoints = [Endpoint("sms-gateway", receiver.url, ("sms.send",), SECRET, timeout=FAST.timeout_seconds,
                          max_attempts=FAST.max_attempts)] if receiver is not None else []
    return Webhooks(redis, keys, endpoints, settings=FAST, hot_days=1, instance="i1")


async def test_gateway_sms_goes_out_once_per_key(redis_client: aioredis.Redis, keys: Keys,
                                                 receiver: Receiver) -> None:
    hooks = gateway(redis_client, keys, receiver)
    deliverer = asyncio.create_task(hooks.run())
    try:
        metrics = Metrics()
        sms = SmsService(markers(redis_client, keys), GatewaySms(hooks, sender="1860"), metrics=metrics)
        outcomes = await asyncio.gather(*(sms.send(number="+8613812345678", text=TEXT, key="reminder:r:c1:2027-01-31")
                                          for _ in range(5)))
        assert outcomes.count("sent") >= 1 and set(outcomes) <= {"sent", "failed:in_progress"}, outcomes
        assert await sms.send(number="+8613812345678", text=TEXT, key="reminder:r:c1:2027-01-31") == "sent"
        assert await sms.outcome("reminder:r:c1:2027-01-31") == "done sent"
        assert metrics.registry.get_sample_value("ivrserver_sms_total", {"outcome": "sent"}) == 1.0  # one send
        deadline = time.monotonic() + 10
        while not receiver.hits:
            assert time.monotonic() < deadline, "the gateway got nothing"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # nothing more comes
    finally:
        deliverer.cancel()
        await asyncio.gather(deliverer, return_exceptions=True)
    assert len(receiver.hits) == 1
    hit = receiver.hits[0]
    assert hit["headers"]["Idempotency-Key"] == "sms:reminder:r:c1:2027-01-31"
    assert hit["body"]["event"] == "sms.send"
    assert hit["body"]["data"] == {"number": "+8613812345678", "text": TEXT, "sender": "1860"}


async def test_nothing_left_lets_a_later_send_try_again(redis_client: aioredis.Redis, keys: Keys,
                                                        receiver: Receiver) -> None:
    # no endpoint takes sms.send yet: nothing is queued, the key stays usable
    unconfigured = SmsService(markers(redis_client, keys), GatewaySms(gateway(redis_client, keys, None), sender="1860"))
    assert await unconfigured.send(number="13812345678", text="hello", key="k1") == "failed:not_connected"
    assert await unconfigured.outcome("k1") == "retry failed:not_connected"
    # AMI down: MessageSend never left
    ami = AmiClient(AmiSettings(host="127.0.0.1", port=free_port()))
    over_ami = SmsService(markers(redis_client, keys),
                          AmiMessageSender(ami, destination="pjsip:customers/sip:{number}@127.0.0.1", sender="1860"))
    assert await over_ami.send(number="13812345678", text="hello", key="k1") == "failed:not_connected"
    # configured now: the same key goes out
    configured = SmsService(markers(redis_client, keys), GatewaySms(gateway(redis_client, keys, receiver),
                                                                   sender="1860"))
    assert await configured.send(number="13812345678", text="hello", key="k1") == "sent"
    assert await over_ami.send(number="13812345678", text="hello", key="k1") == "sent"  # recorded: not sent again


async def test_an_instance_that_died_mid_send_is_never_sent_again(redis_client: aioredis.Redis, keys: Keys,
                                                                  receiver: Receiver) -> None:
    marks = markers(redis_client, keys)
    assert await marks.claim("k2", now=time.time() - 600, instance="dead") is None  # claimed, never finished
    sms = SmsService(marks, GatewaySms(gateway(redis_client, keys, receiver), sender="1860"))
    assert await sms.send(number="13812345678", text="hello", key="k2") == "failed:unconfirmed"
    assert await marks.claim("k3", now=time.time(), instance="busy") is None  # being sent right now
    assert await sms.send(number="13812345678", text="hello", key="k3") == "failed:in_progress"


@pytest.mark.parametrize(("number", "text", "outcome"), [
    ("138 1234", "hello", "failed:invalid_number"),
    ("13812345678@evil", "hello", "failed:invalid_number"),
    ("13812345678", "two\nlines", "failed:invalid_text"),
    ("13812345678", "", "failed:invalid_text"),
    ("13812345678", "x" * 321, "failed:invalid_text"),
])
async def test_invalid_number_or_text_is_refused_before_anything(redis_client: aioredis.Redis, keys: Keys,
                                                                 receiver: Receiver, number: str, text: str,
                                                                 outcome: str) -> None:
    sms = SmsService(markers(redis_client, keys), GatewaySms(gateway(redis_client, keys, receiver), sender="1860"))
    assert await sms.send(number=number, text=text, key="k4") == outcome
    assert await sms.outcome("k4") is None  # the key was not used up


async def test_disabled(redis_client: aioredis.Redis, keys: Keys) -> None:
    sms = SmsService(markers(redis_client, keys), None)
    assert await sms.send(number="13812345678", text="hello", key="k5") == "failed:disabled"
