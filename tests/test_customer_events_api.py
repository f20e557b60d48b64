"""POST /api/v1/customers/{id}/events on the real web app (IvrServer.web_app: sessions, scoped
back-office tokens), the real ReminderService and NoticeService on a real Redis, and SMS through
the operator's gateway (sms.transport gateway → the real Webhooks deliverer → a real HTTP receiver):
a back office posts roaming_started → the welcome SMS reaches the gateway once, however often the
event is posted; unknown events, hostile bodies and who may post."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.domain.model import ContactPreferences, Customer
from ivrserver.store import customers
from ivrserver.store.keys import Keys
from ivrserver.web.auth import AUTH, token_digest
from ivrserver.web.backoffice import digest
from tests.test_webhooks_delivery import SECRET, Receiver

REPO = Path(__file__).resolve().parent.parent
ROAMING = "roam-" + "7e1f0a" * 8  # scope events
CASES = "cases-" + "2b2b2b" * 8  # scope cases:read only
OPEN = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")
Headers = dict[str, str]


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def server(redis_url: str, redis_client: aioredis.Redis, keys: Keys, tmp_path: Path,
                 receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[IvrServer]:
    await customers.save_customer(redis_client, keys, Customer(
        id="c-vip", name="Sun Quan", phones=("+8613812345678",), language="zh", preferences=OPEN,
        attributes={"notices": "roaming"}))
    await customers.save_customer(redis_client, keys, Customer(
        id="c-quiet", name="Ma Dai", phones=("+8613812340000",), preferences=OPEN))  # no consent to roaming
    tokens = tmp_path / "backoffice-tokens.yaml"
    tokens.write_text(f'roaming: {{digest: "{digest(ROAMING)}", scopes: [events]}}\n'
                      f'billing: {{digest: "{digest(CASES)}", scopes: [cases:read]}}\n')
    hooks = tmp_path / "webhooks.yaml"
    hooks.write_text(f"endpoints:\n  - name: sms-gateway\n    url: {receiver.url}\n    events: [sms.send]\n"
                     "    secret_env: IVRSERVER_TEST_SMS_SECRET\n")
    monkeypatch.setenv("IVRSERVER_TEST_SMS_SECRET", SECRET.decode())
    settings = config.from_mapping({
        "redis": {"url": redis_url, "prefix": keys.prefix},
        "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml")},
        "menus": {"watch": False},
        "web": {"backoffice_tokens_file": str(tokens)},
        "webhooks": {"endpoints_file": str(hooks), "poll_interval": 0.05, "backoff_base_seconds": 0.05},
        "sms": {"transport": "gateway"},
    })
    srv = IvrServer(settings)
    deliverer = asyncio.create_task(srv.webhooks.run())
    try:
        yield srv
    finally:
        deliverer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await deliverer
        await srv.redis.aclose()
        await srv.pubsub_redis.aclose()


@pytest.fixture
async def client(server: IvrServer) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(server.web_app())) as c:
        yield c


async def login(client: TestClient, agent: str) -> Headers:
    auth = client.server.app[AUTH]  # type: ignore[index]
    token = secrets.token_urlsafe(32)
    await auth.redis.set(auth.keys.session(token_digest(token)), agent, ex=600)
    return bearer(token)


async def post(client: TestClient, headers: Headers, body: Any, expect: int, customer: str = "c-vip") -> Any:
    resp = await client.post(f"/api/v1/customers/{customer}/events", headers=headers,
                             data=body if isinstance(body, (bytes, str)) else json.dumps(body))
    text = await resp.text()
    assert resp.status == expect, f"{resp.status} {text}"
    return json.loads(text) if text else None


async def test_roaming_started_sends_the_welcome_sms_once(client: TestClient, receiver: Receiver) -> None:
    body = {"event": "roaming_started", "id": "roam-2027-01-10-8841", "at": time.time() - 60}
    answers = await asyncio.gather(*(post(client, bearer(ROAMING), body, 202) for _ in range(3)))
    statuses = sorted(a["reminders"][0]["status"] for a in answers)
    assert statuses.count("sms_sent") == 1 and set(statuses) <= {"sms_sent", "existing"}, statuses
    first = next(a for a in answers if a["reminders"][0]["status"] == "sms_sent")
    assert first["reminders"][0]["key"] == "reminder:roaming_welcome:c-vip:roam-2027-01-10-8841"
    assert first["reminders"][0]["rule"] == "roaming_welcome"
    deadline = time.monotonic() + 10
    while not receiver.hits:
        assert time.monotonic() < deadline, "the SMS gateway got nothing"
        await asyncio.sleep(0.05)
    again = await post(client, bearer(ROAMING), body, 202)  # later, the same id: nothing more
    assert again["reminders"][0]["status"] == "existing"
    await asyncio.sleep(0.5)
    assert len(receiver.hits) == 1
    data = receiver.hits[0]["body"]["data"]
    assert data["number"] == "+8613812345678" and data["sender"] == "1860"
    assert data["text"].startswith("Sun Quan，欢迎出境")  # the customer's language, Mandarin intact


async def test_a_supervisor_may_post_an_agent_may_not(client: TestClient, server: IvrServer) -> None:
    body = {"event": "roaming_started", "id": "roam-2"}
    answer = await post(client, await login(client, "agent1010"), body, 202)
    assert answer["reminders"][0]["status"] in ("sms_sent", "existing")
    await post(client, bearer(ROAMING), {"event": "roaming_started", "id": "roam-2b"}, 202)
    posted = [(e.who, e.role, e.target, e.why) for e in await server.audit.recent() if e.what == "customer.event"]
    assert sorted(posted) == [("agent1010", "supervisor", "c-vip", "roaming_started roam-2"),
                              ("roaming", "backoffice", "c-vip", "roaming_started roam-2b")]
    await post(client, await login(client, "agent1001"), body, 403)
    await post(client, bearer(CASES), body, 401)  # the token's scopes do not cover the path
    await post(client, {}, body, 401)


async def test_no_consent_is_refused_and_said(client: TestClient) -> None:
    answer = await post(client, bearer(ROAMING), {"event": "roaming_started", "id": "roam-3"}, 202, customer="c-quiet")
    assert answer["reminders"][0]["status"] == "refused"
    assert answer["reminders"][0]["reason"] == "no_consent"


async def test_unknown_event_lists_the_known_ones(client: TestClient) -> None:
    answer = await post(client, bearer(ROAMING), {"event": "roaming_stopped", "id": "roam-4"}, 422)
    assert answer == {"error": "unknown event", "known": ["roaming_started"]}


@pytest.mark.parametrize(("body", "field"), [
    ({"event": "roaming_started"}, "id"),
    ({"event": "roaming_started", "id": "x" * 129}, "id"),
    ({"event": "roaming_started", "id": "a b"}, "id"),
    ({"event": "roaming_started", "id": "a\nb"}, "id"),
    ({"event": "Roaming Started", "id": "r1"}, "event"),
    ({"event": ["roaming_started"], "id": "r1"}, "event"),
    ({"event": "roaming_started", "id": "r1", "at": "yesterday"}, "at"),
    ({"event": "roaming_started", "id": "r1", "at": "2027-01-10T08:00:00"}, "at"),  # no offset
    ({"event": "roaming_started", "id": "r1", "at": time.time() + 3600}, "at"),  # in the future
    ({"event": "roaming_started", "id": "r1", "at": True}, "at"),
    ({"event": "roaming_started", "id": "r1", "extra": 1}, "body"),
    ([1, 2], "body"),
    ("not json", "body"),
    ("[" * 100_000, "body"),
])
async def test_hostile_bodies(client: TestClient, body: Any, field: str) -> None:
    answer = await post(client, bearer(ROAMING), body, 400)
    assert field in answer["errors"], answer


async def test_unknown_customer(client: TestClient) -> None:
    await post(client, bearer(ROAMING), {"event": "roaming_started", "id": "r5"}, 404, customer="nobody")
    await post(client, bearer(ROAMING), {"event": "roaming_started", "id": "r5"}, 404, customer="..%2Fetc")
