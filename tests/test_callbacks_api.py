"""REST /api/v1/callbacks on the real web app (IvrServer.web_app: sessions, back-office tokens,
access control, audit) over a real aiohttp server and a real Redis; plus the CLI on the same Redis."""

from __future__ import annotations

import argparse
import contextlib
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
from ivrserver.commands import callbacks as cli
from ivrserver.domain.model import ContactPreferences, Customer, Tier
from ivrserver.store import customers
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.keys import Keys
from ivrserver.web.auth import AUTH, token_digest
from ivrserver.web.backoffice import digest

REPO = Path(__file__).resolve().parent.parent
OPEN = {"timezone": "UTC", "allowed_from": "00:00", "allowed_until": "24:00"}
ALL_DAY = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")
BACKOFFICE_TOKEN = "bo-" + "7f3a9c" * 8  # what a CRM would send
# Customers of the tests: c1 and c2 standard, c-vip a VIP; numbers as the normaliser stores them.
CUSTOMERS = (
    Customer(id="c1", name="Zhao Yun", phones=("5551234",), preferences=ALL_DAY),
    Customer(id="c2", name="Ma Dai", phones=("5551234", "5550002"), preferences=ALL_DAY),
    Customer(id="c-vip", name="Sun Quan", phones=("5550009",), tier=Tier.VIP, preferences=ALL_DAY),
)


@contextlib.asynccontextmanager
async def web_app(redis_url: str, keys: Keys, tmp_path: Path) -> AsyncIterator[IvrServer]:
    """The web side of a real IvrServer (not started: no AMI, FastAGI or scheduler needed)."""
    agents = tmp_path / "agents.yaml"
    agents.write_text((REPO / "scripts" / "demo-agents.yaml").read_text())
    tokens = tmp_path / "backoffice-tokens.yaml"
    tokens.write_text(f'crm: "{digest(BACKOFFICE_TOKEN)}"\n')
    settings = config.from_mapping({
        "redis": {"url": redis_url, "prefix": keys.prefix},
        "routing": {"agents_file": str(agents)},
        "menus": {"watch": False},
        "web": {"backoffice_tokens_file": str(tokens)},
        "callbacks": {"calling_from": "00:00", "calling_until": "24:00"},
        "phone": {"default_region": "CN"},  # national numbers are read as Chinese ones
    })
    server = IvrServer(settings)
    try:
        yield server
    finally:
        await server.redis.aclose()
        await server.pubsub_redis.aclose()


async def login(client: TestClient, agent: str) -> dict[str, str]:
    """A session of `agent`, stored as POST /api/v1/login stores one (the login itself, with its
    password hashing and limits, is tested in test_auth.py)."""
    app = client.server.app
    assert app is not None
    auth = app[AUTH]
    token = secrets.token_urlsafe(32)
    await auth.redis.set(auth.keys.session(token_digest(token)), agent, ex=600)
    return {"Authorization": f"Bearer {token}"}


async def add_customers(redis_client: aioredis.Redis, keys: Keys) -> None:
    for customer in CUSTOMERS:
        await customers.save_customer(redis_client, keys, customer)


@pytest.fixture
async def server(redis_url: str, redis_client: aioredis.Redis, keys: Keys,
                 tmp_path: Path) -> AsyncIterator[IvrServer]:
    await add_customers(redis_client, keys)
    async with web_app(redis_url, keys, tmp_path) as srv:
        yield srv


@pytest.fixture
async def anonymous(server: IvrServer) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(server.web_app())) as c:
        yield c


@pytest.fixture
async def client(anonymous: TestClient) -> AsyncIterator[TestClient]:
    """agent1001's session (a plain agent, not a supervisor)."""
    headers = await login(anonymous, "agent1001")
    async with TestClient(anonymous.server, headers=headers) as c:
        yield c


async def create(client: TestClient, **body: object) -> dict[str, Any]:
    resp = await client.post("/api/v1/callbacks", json={"customer_id": "c1", "number": "555-1234",
                                                        "at": "+1h", **OPEN, **body})
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_create_defaults_preferred_agent_to_the_asking_agent(client: TestClient,
                                                                   redis_client: aioredis.Redis,
                                                                   keys: Keys) -> None:
    body = await create(client, reason="premium SMS", context="told the story once", case_id="K-1")
    assert body["preferred_agent"] == "agent1001" and body["requested_by"] == "agent1001"
    assert body["state"] == "scheduled" and body["number"] == "+865551234"  # E.164 in region CN
    assert abs(float(body["due_at"]) - (time.time() + 3600)) < 5  # type: ignore[arg-type]
    assert await redis_client.zscore(keys.callbacks_due(), str(body["id"])) == body["due_at"]
    other = await create(client, preferred_agent="agent1005")
    assert other["preferred_agent"] == "agent1005"


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"number": "call me"}, "number", "only digits"),
    ({"at": "yesterday"}, "at", "expected epoch seconds"),
    ({"at": 1.0}, "at", "in the past"),
    ({"customer_id": None}, "customer_id", "required"),
    ({"tier": "gold-plus"}, "tier", "one of"),
    ({"evil": "x"}, "body", "unknown field(s): evil"),
    ({"timezone": "Nowhere/Land"}, "timezone", "unknown time zone"),
])
async def test_create_rejects_bad_input_with_field_errors(client: TestClient, body: dict[str, object],
                                                          field: str, message: str) -> None:
    payload = {"customer_id": "c1", "number": "5551234", "at": "+1h", **body}
    resp = await client.post("/api/v1/callbacks", json={k: v for k, v in payload.items() if v is not None})
    assert resp.status == 400
    errors = (await resp.json())["errors"]
    assert message in errors[field], errors


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
async def test_create_rejects_non_object_bodies(client: TestClient, raw: bytes) -> None:
    resp = await client.post("/api/v1/callbacks", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert "body" in (await resp.json())["errors"]


async def test_get_list_patch_delete(client: TestClient) -> None:
    a = await create(client, customer_id="c1")
    b = await create(client, customer_id="c2", preferred_agent="agent1002")
    resp = await client.get(f"/api/v1/callbacks/{a['id']}")
    assert resp.status == 200 and (await resp.json())["id"] == a["id"]
    assert (await client.get("/api/v1/callbacks/nope")).status == 404

    listed = (await (await client.get("/api/v1/callbacks")).json())["callbacks"]
    assert [c["id"] for c in listed] == [b["id"], a["id"]]
    by_agent = (await (await client.get("/api/v1/callbacks?agent=agent1002")).json())["callbacks"]
    assert [c["id"] for c in by_agent] == [b["id"]]
    by_customer = (await (await client.get("/api/v1/callbacks?customer=c1")).json())["callbacks"]
    assert [c["id"] for c in by_customer] == [a["id"]]
    bad = await client.get("/api/v1/callbacks?state=lost")
    assert bad.status == 400 and "state" in (await bad.json())["errors"]
    assert (await client.get("/api/v1/callbacks?limit=0")).status == 400
    assert (await client.get("/api/v1/callbacks?sort=evil")).status == 400

    resp = await client.patch(f"/api/v1/callbacks/{a['id']}", json={"at": "+3h"})
    assert resp.status == 200
    moved = await resp.json()
    assert float(moved["due_at"]) > float(a["due_at"]) + 7000  # type: ignore[arg-type]
    resp = await client.patch(f"/api/v1/callbacks/{a['id']}", json={"earliest": "+2h", "latest": "+1h"})
    assert resp.status == 400 and "latest" in (await resp.json())["errors"]
    resp = await client.patch(f"/api/v1/callbacks/{a['id']}", json={"number": "666"})
    assert resp.status == 400
    assert (await client.patch("/api/v1/callbacks/nope", json={"at": "+1h"})).status == 404

    resp = await client.delete(f"/api/v1/callbacks/{a['id']}?reason=solved%20on%20inbound%20call")
    assert resp.status == 200
    gone = await resp.json()
    assert (gone["state"], gone["final_reason"]) == ("cancelled", "solved on inbound call")
    again = await client.delete(f"/api/v1/callbacks/{a['id']}")
    assert again.status == 409 and "cannot go from cancelled to cancelled" in (await again.json())["error"]
    resp = await client.patch(f"/api/v1/callbacks/{a['id']}", json={"at": "+1h"})
    assert resp.status == 409
    assert (await client.delete("/api/v1/callbacks/nope")).status == 404
    cancelled = (await (await client.get("/api/v1/callbacks?state=cancelled")).json())["callbacks"]
    assert [c["id"] for c in cancelled] == [a["id"]]


async def test_cancel_while_being_placed_is_409(client: TestClient, redis_client: aioredis.Redis,
                                                keys: Keys) -> None:
    body = await create(client, at=time.time())
    store = CallbackStore(redis_client, keys)
    [claim] = await store.claim(time.time(), lease_seconds=30, limit=1, claimer="elsewhere")
    resp = await client.delete(f"/api/v1/callbacks/{body['id']}")
    assert resp.status == 409 and "being placed" in (await resp.json())["error"]
    assert claim.callback_id == body["id"]


# ----------------------------------------------------------------------------- CLI

def cli_args(redis_url: str, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ivrserver")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["callbacks", "--redis-url", redis_url, "--prefix", "t", *argv])


async def test_cli_add_list_reschedule_cancel(redis_url: str, redis_client: aioredis.Redis,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    def run(*argv: str) -> int:
        args = cli_args(redis_url, *argv)
        return int((getattr(args, "func", None) or args.handler)(args))

    loop = asyncio.get_running_loop()
    code = await loop.run_in_executor(None, run, "add", "--customer", "c9", "--number", "+86 10 5555 0000",
                                      "--earliest", "+2h", "--latest", "+2d", "--agent", "agent1003",
                                      "--timezone", "Asia/Shanghai")
    out = capsys.readouterr().out
    assert code == 0 and "scheduled" in out and "8610" in out
    cb_id = out.split()[0]
    assert await loop.run_in_executor(None, run, "list", "--agent", "agent1003") == 0
    assert cb_id in capsys.readouterr().out
    assert await loop.run_in_executor(None, run, "reschedule", cb_id, "--earliest", "+1d", "--latest",
                                      "+3d") == 0
    capsys.readouterr()
    assert await loop.run_in_executor(None, run, "cancel", cb_id, "--reason", "done by phone") == 0
    assert "cancelled" in capsys.readouterr().out
    assert await loop.run_in_executor(None, run, "cancel", cb_id) == 1
    assert "cannot go from cancelled" in capsys.readouterr().err
    assert await loop.run_in_executor(None, run, "add", "--customer", "c9", "--number", "abc", "--at", "+1h") == 2
    assert "error: number:" in capsys.readouterr().err
