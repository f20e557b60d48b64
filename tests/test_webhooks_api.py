"""REST for supervisors over outgoing webhooks (/api/v1/webhooks/…) on the real web app
(IvrServer.web_app: sessions, supervisor guard, audit) with webhooks.yaml naming a real receiver on
127.0.0.1 and the app's own deliverer on a real Redis."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.domain.webhooks import DeliveryState, delivery_id
from ivrserver.store.keys import Keys
from ivrserver.web.auth import AUTH, token_digest
from tests.test_webhooks_delivery import SECRET, Receiver, running, settled, status

REPO = Path(__file__).resolve().parent.parent
__all__ = ["running"]  # a fixture of test_webhooks_delivery, used here


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def rest(redis_url: str, keys: Keys, receiver: Receiver, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[IvrServer, TestClient]]:
    """The real web app with webhooks.yaml naming the receiver, a supervisor's session."""
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET.decode())
    (tmp_path / "webhooks.yaml").write_text(
        f"endpoints:\n  - {{name: crm, url: '{receiver.url}', events: ['case.*'], secret_env: TEST_WEBHOOK_SECRET,"
        " max_attempts: 1}\n")
    settings = config.from_mapping({
        "redis": {"url": redis_url, "prefix": keys.prefix},
        "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml")},
        "menus": {"watch": False},
        "webhooks": {"endpoints_file": str(tmp_path / "webhooks.yaml"), "poll_interval": 0.05,
                     "backoff_base_seconds": 0.05},
    })
    server = IvrServer(settings)
    async with TestClient(TestServer(server.web_app())) as client:
        yield server, client
    await server.redis.aclose()
    await server.pubsub_redis.aclose()


async def session(client: TestClient, agent: str) -> dict[str, str]:
    app = client.server.app
    assert app is not None
    auth = app[AUTH]
    token = secrets.token_urlsafe(32)
    await auth.redis.set(auth.keys.session(token_digest(token)), agent, ex=600)
    return {"Authorization": f"Bearer {token}"}


async def test_rest_for_supervisors(redis_client: aioredis.Redis, rest: tuple[IvrServer, TestClient],
                                    receiver: Receiver, running: Any) -> None:
    server, client = rest
    sup = await session(client, "agent1010")
    agent = await session(client, "agent1001")
    resp = await client.get("/api/v1/webhooks/endpoints", headers=sup)
    assert resp.status == 200
    text = await resp.text()
    assert json.loads(text) == {"endpoints": [{"name": "crm", "url": receiver.url, "events": ["case.*"],
                                               "timeout": 10.0, "max_attempts": 1}]}
    assert SECRET.decode() not in text
    for path in ("/api/v1/webhooks/endpoints", "/api/v1/webhooks/deliveries", "/api/v1/webhooks/dead"):
        assert (await client.get(path, headers=agent)).status == 403
        assert (await client.get(path)).status == 401
    receiver.answers = [status(500)]
    running(server.webhooks)
    await server.webhooks.publish("case.resolved", {"case_id": "K-9"}, key="rest-1")
    ident = delivery_id("rest-1", "crm")
    await settled(server.webhooks, ident, DeliveryState.DEAD)
    dead = await (await client.get("/api/v1/webhooks/dead", headers=sup)).json()
    assert [d["id"] for d in dead["deliveries"]] == [ident]
    assert dead["deliveries"][0]["log"][0]["status"] == 500 and "body" not in dead["deliveries"][0]
    log = await (await client.get("/api/v1/webhooks/deliveries?state=dead&event=case.resolved",
                                  headers=sup)).json()
    assert [d["id"] for d in log["deliveries"]] == [ident]
    assert (await (await client.get("/api/v1/webhooks/deliveries?state=delivered", headers=sup)).json()) == {
        "deliveries": []}
    assert (await client.post(f"/api/v1/webhooks/deliveries/{ident}/retry", headers=agent)).status == 403
    resp = await client.post(f"/api/v1/webhooks/deliveries/{ident}/retry", headers=sup)
    assert resp.status == 200 and (await resp.json())["state"] == "pending"
    await settled(server.webhooks, ident, DeliveryState.DELIVERED)
    resp = await client.post(f"/api/v1/webhooks/deliveries/{ident}/retry", headers=sup)
    assert resp.status == 409
    missing = delivery_id("nope", "crm")
    assert (await client.post(f"/api/v1/webhooks/deliveries/{missing}/retry", headers=sup)).status == 404
    assert (await client.post("/api/v1/webhooks/deliveries/..%2Fx/retry", headers=sup)).status == 404
    audit = await redis_client.xrange(server.keys.audit())
    assert any(f["what"] == "webhook.retry" and f["who"] == "agent1010" and f["target"] == ident for _, f in audit)


@pytest.mark.parametrize("query", ["state=gone", "state=", "event=Case", "event=", "limit=0", "limit=1001",
                                   "limit=x", "other=1"])
async def test_rest_refuses_bad_queries(rest: tuple[IvrServer, TestClient], query: str) -> None:
    _, client = rest
    sup = await session(client, "agent1010")
    resp = await client.get(f"/api/v1/webhooks/deliveries?{query}", headers=sup)
    assert resp.status == 400 and "errors" in await resp.json()
