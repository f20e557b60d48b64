"""REST API for customers, history and cases over a real aiohttp server and the real Redis."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ivrserver.domain import identification
from ivrserver.domain.cases import CasePolicy
from ivrserver.domain.model import Contact, ContactKind, Outcome
from ivrserver.services.cases import CaseService
from ivrserver.services.customers import CustomerService
from ivrserver.store import contacts as contact_store
from ivrserver.store import customers as store
from ivrserver.store.keys import Keys
from ivrserver.web import api_cases
from ivrserver.web.api_customers import routes
from ivrserver.web.auth import require_supervisor
from tests.conftest import TEST_PEPPER

NOW = float(int(time.time()))

BODY: dict[str, Any] = {
    "id": "c1", "name": "Wang Lei", "phones": ["1555-0001"], "tier": "vip", "segment": "enterprise",
    "account_manager": "agent1001", "account_number": "80010001", "pin": "4321",
    "preferences": {"timezone": "Asia/Shanghai", "allowed_from": "09:00", "allowed_until": "21:00"},
    "attributes": {"balance": "12.50"},
}


async def _exists(service: CustomerService, customer_id: str) -> bool:
    return await service.get(customer_id) is not None


async def make_client(redis_client: aioredis.Redis, keys: Keys, **kw: Any) -> TestClient:
    app = web.Application()
    authorize = kw.pop("authorize", None)
    service = CustomerService(redis_client, keys, clock=lambda: NOW, **{"pepper": TEST_PEPPER, **kw})
    app.add_routes(routes(service, authorize) if authorize else routes(service))
    # the case routes (web/api_cases.py) over the same Redis, behind the same hook
    cases = CaseService(redis_client, keys, CasePolicy(), clock=lambda: NOW,
                        customer_exists=lambda cid: _exists(service, cid))
    app.add_routes(api_cases.routes(cases, authorize or api_cases.allow_all, supervisor=require_supervisor))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(redis_client: aioredis.Redis, keys: Keys) -> AsyncIterator[TestClient]:
    c = await make_client(redis_client, keys)
    yield c
    await c.close()


async def test_create_get_list_update_delete(client: TestClient, redis_client: aioredis.Redis, keys: Keys) -> None:
    resp = await client.post("/api/v1/customers", json=BODY)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == "/api/v1/customers/c1"
    created = await resp.json()
    assert created["phones"] == ["15550001"] and created["has_pin"] is True
    assert "pin" not in created and "pin_hash" not in created
    stored = await store.get_customer(redis_client, keys, "c1")
    assert stored is not None and stored.pin_hash and identification.verify_pin("4321", stored.pin_hash, TEST_PEPPER)
    assert "4321" not in str(await redis_client.get(keys.customer("c1")))

    resp = await client.get("/api/v1/customers/c1")
    assert resp.status == 200 and (await resp.json()) == created

    resp = await client.get("/api/v1/customers?offset=0&limit=10")
    page = await resp.json()
    assert page["total"] == 1 and [c["id"] for c in page["items"]] == ["c1"]

    # PUT without pin keeps the PIN; phones move in the index.
    update = {k: v for k, v in BODY.items() if k not in ("id", "pin")} | {"phones": ["15550009"], "tier": "gold"}
    resp = await client.put("/api/v1/customers/c1", json=update)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["tier"] == "gold"
    after = await store.get_customer(redis_client, keys, "c1")
    assert after is not None and after.pin_hash == stored.pin_hash
    assert await store.customer_ids_for_phone(redis_client, keys, "15550001") == []
    # pin: null removes it
    resp = await client.put("/api/v1/customers/c1", json=update | {"pin": None})
    assert (await resp.json())["has_pin"] is False

    resp = await client.delete("/api/v1/customers/c1")
    assert resp.status == 204
    assert (await client.get("/api/v1/customers/c1")).status == 404
    assert (await client.delete("/api/v1/customers/c1")).status == 404


async def test_create_without_id_generates_one(client: TestClient) -> None:
    resp = await client.post("/api/v1/customers", json={"name": "Anon Ymous"})
    assert resp.status == 201
    body = await resp.json()
    assert len(body["id"]) == 12 and resp.headers["Location"].endswith(body["id"])


async def test_conflicts(client: TestClient) -> None:
    assert (await client.post("/api/v1/customers", json=BODY)).status == 201
    resp = await client.post("/api/v1/customers", json=BODY)
    assert resp.status == 409 and (await resp.json())["errors"][0]["field"] == "id"
    resp = await client.post("/api/v1/customers", json=BODY | {"id": "c2"})
    assert resp.status == 409
    err = (await resp.json())["errors"][0]
    assert err["field"] == "account_number" and "c1" in err["message"]
    resp = await client.put("/api/v1/customers/zz", json=BODY | {"id": "zz", "account_number": None, "pin": None})
    assert resp.status == 404


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("post", "/api/v1/customers", b"{not json", "body"),
    ("post", "/api/v1/customers", b"", "body"),
    ("post", "/api/v1/customers", b"\xff\xfe", "body"),
    ("post", "/api/v1/customers", b"[" * 100000, "body"),                   # RecursionError in json
    ("post", "/api/v1/customers", b'{"name": NaN}', "body"),
    ("post", "/api/v1/customers", b"[]", "customer"),
    ("post", "/api/v1/customers", b'"text"', "customer"),
    ("post", "/api/v1/customers", b'{"name": "x", "tier": "platinum"}', "tier"),
    ("post", "/api/v1/customers", b'{"name": "x", "phones": ["abc"]}', "phones[0]"),
    ("post", "/api/v1/customers", b'{"name": "x", "pin": 1234, "account_number": "80010001"}', "pin"),
    ("post", "/api/v1/customers", b'{"name": "x", "preferences": {"timezone": "Nowhere/City"}}',
     "preferences.timezone"),
    ("post", "/api/v1/customers", b'{"name": "x", "admin": true}', "admin"),
    ("put", "/api/v1/customers/c1", b'{"id": "c2", "name": "x"}', "id"),
    ("get", "/api/v1/customers?limit=0", None, "limit"),
    ("get", "/api/v1/customers?limit=abc", None, "limit"),
    ("get", "/api/v1/customers?offset=-1", None, "offset"),
    ("get", "/api/v1/customers?limit=100000000000000000000", None, "limit"),
    ("post", "/api/v1/cases", b'{"customer_id": "c1"}', "summary"),
    ("post", "/api/v1/cases", b'{"customer_id": "nobody", "summary": "x"}', "customer_id"),
    ("post", "/api/v1/cases", b'{"customer_id": "c1", "summary": "x", "severity": 9}', "severity"),
    ("put", "/api/v1/cases/1", b'{"status": "pending"}', "status"),
    ("put", "/api/v1/cases/1", b"{}", "case"),
    ("put", "/api/v1/contacts/k1", b'{"outcome": "answered"}', "outcome"),
])
async def test_bad_input_is_a_precise_400(client: TestClient, method: str, path: str, body: bytes | None,
                                          field: str) -> None:
    assert (await client.post("/api/v1/customers", json=BODY)).status == 201
    resp = await client.request(method.upper(), path, data=body,
                                headers={"Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    payload = await resp.json()
    assert payload["error"] == "invalid request"
    assert field in [e["field"] for e in payload["errors"]], payload
    assert all(e["message"] for e in payload["errors"])


@pytest.mark.parametrize("path", [
    "/api/v1/customers/..%2F..%2Fetc", "/api/v1/customers/a%20b", "/api/v1/customers/" + "x" * 300,
    "/api/v1/customers/nobody/history", "/api/v1/cases/abc", "/api/v1/cases/0", "/api/v1/cases/42",
])
async def test_unknown_or_malformed_ids_are_404(client: TestClient, path: str) -> None:
    assert (await client.get(path)).status == 404


async def test_oversized_body_is_rejected_not_crashing(client: TestClient) -> None:
    resp = await client.post("/api/v1/customers", data=io.BytesIO(b"{" + b" " * (3 * 1024 * 1024) + b"}"),
                             headers={"Content-Type": "application/json"})
    assert resp.status == 413


async def test_history_and_cases(client: TestClient, redis_client: aioredis.Redis, keys: Keys) -> None:
    assert (await client.post("/api/v1/customers", json=BODY)).status == 201
    await contact_store.save_contact(redis_client, keys, Contact(
        id="k1", kind=ContactKind.INBOUND, number="15550001", started_at=NOW - 60, customer_id="c1",
        ended_at=NOW - 30, outcome=Outcome.ANSWERED, agents=("agent1003",)), now=NOW)
    resp = await client.post("/api/v1/cases", json={"customer_id": "c1", "summary": "SMS refund",
                                                    "owner_agent": "agent1003", "severity": 2})
    assert resp.status == 201
    case = await resp.json()
    assert case["id"] == "1" and case["status"] == "open" and resp.headers["Location"] == "/api/v1/cases/1"

    resp = await client.put("/api/v1/cases/1", json={"next_step": "call back", "still_needed": "date"})
    assert resp.status == 200 and (await resp.json())["next_step"] == "call back"
    assert (await (await client.get("/api/v1/cases/1")).json())["still_needed"] == "date"

    resp = await client.put("/api/v1/contacts/k1", json={"disposition": "resolved", "notes": "refund"})
    assert resp.status == 200 and (await resp.json())["notes"] == "refund"
    # one rule with the agent desktop's write-back: a disposition from the same vocabulary only
    resp = await client.put("/api/v1/contacts/k1", json={"disposition": "refund granted"})
    assert resp.status == 400 and [e["field"] for e in (await resp.json())["errors"]] == ["disposition"]

    hist = await (await client.get("/api/v1/customers/c1/history?limit=5")).json()
    assert [c["id"] for c in hist["contacts"]] == ["k1"]
    assert (hist["source"], hist["next_before"]) == ("redis", None)  # no system of record; not a full page
    full = await (await client.get("/api/v1/customers/c1/history?limit=1")).json()
    assert full["next_before"] == NOW - 60  # a full page: the next is ?before=<its last started_at>
    older = await (await client.get(f"/api/v1/customers/c1/history?limit=1&before={NOW - 60}")).json()
    assert older["contacts"] == [] and older["next_before"] is None
    for bad in ("abc", "nan", "inf", "-5", "0", "1e400", "9" * 40):
        resp = await client.get(f"/api/v1/customers/c1/history?before={bad}")
        assert resp.status == 400 and [e["field"] for e in (await resp.json())["errors"]] == ["before"], bad
    assert hist["contacts"][0]["outcome"] == "answered" and hist["contacts"][0]["disposition"] == "resolved"
    assert [c["id"] for c in hist["open_cases"]] == ["1"]

    resp = await client.put("/api/v1/cases/1", json={"status": "closed"})
    assert (await resp.json())["status"] == "closed"
    hist = await (await client.get("/api/v1/customers/c1/history")).json()
    assert hist["open_cases"] == [] and [c["status"] for c in hist["cases"]] == ["closed"]
    assert (await client.put("/api/v1/contacts/zz", json={"notes": "x"})).status == 404


async def test_authorize_hook_is_called_and_can_forbid(redis_client: aioredis.Redis, keys: Keys) -> None:
    calls: list[tuple[str | None, str]] = []

    async def authorize(request: web.Request, customer_id: str | None, purpose: str) -> None:
        calls.append((customer_id, purpose))
        if customer_id == "secret" or request.headers.get("X-Agent") == "intruder":
            raise web.HTTPForbidden()

    client = await make_client(redis_client, keys, authorize=authorize)
    try:
        assert (await client.post("/api/v1/customers", json=BODY)).status == 201
        assert (await client.post("/api/v1/customers", json={"id": "secret", "name": "S"})).status == 201
        assert (await client.get("/api/v1/customers/c1")).status == 200
        assert (await client.get("/api/v1/customers/secret")).status == 403
        assert (await client.get("/api/v1/customers/secret/history")).status == 403
        assert (await client.get("/api/v1/customers", headers={"X-Agent": "intruder"})).status == 403
        resp = await client.post("/api/v1/cases", json={"customer_id": "secret", "summary": "x"})
        assert resp.status == 403
        assert ("c1", "customer.read") in calls and ("secret", "history.read") in calls
        assert ("secret", "case.create") in calls and (None, "customer.create") in calls
    finally:
        await client.close()


async def test_store_down_is_503_not_500(keys: Keys) -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    client = await make_client(dead, keys)
    try:
        resp = await client.get("/api/v1/customers/c1")
        assert resp.status == 503 and (await resp.json())["error"] == "customer store unavailable"
    finally:
        await client.close()
        await dead.aclose()
