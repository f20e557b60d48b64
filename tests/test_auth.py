"""Login, sessions, the privacy gate and the agent REST API over a real aiohttp server and real Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivrserver.store import cases as case_store
from ivrserver.store import contacts as contact_store
from ivrserver.store.keys import Keys
from ivrserver.web.auth import COOKIE, MAX_LOGIN_FAILURES, hash_password, verify_password
from tests.test_agent_ws import POP, Desk, make_desk, open_agent, recv


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def desk(redis_url: str, redis_client: aioredis.Redis, keys: Keys, clock: Clock) -> AsyncIterator[Desk]:
    async with make_desk(redis_url, keys, clock=clock, static_tokens={"agent1002": "static-token-for-bob-000000"}) as d:
        yield d


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def login(http: aiohttp.ClientSession, desk: Desk, agent: str, password: str | None = None) -> str:
    async with http.post(desk.url + "/api/v1/login", json={"agent": agent, "password": password or agent}) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- password hashing ---------------------------------------------------------------------------
def test_hash_roundtrip() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$scrypt$ln=17,r=8,p=1$")  # OWASP's scrypt minimum
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert hash_password("x") != hash_password("x")  # salted


@pytest.mark.parametrize("stored", [
    "", "plain", "scrypt$1$8$1$AAAA$AAAA", "scrypt$16384$8$1$!!!$AAAA", "md5$x$y$z$a$b",
    "scrypt$16385$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==",  # N not a power of two
    "scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==",  # absurd cost
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",  # hash too short
])
def test_malformed_hash_never_verifies(stored: str) -> None:
    assert not verify_password("anything", stored)


# ---- login / sessions ---------------------------------------------------------------------------
async def test_login_issues_session(desk: Desk, http: aiohttp.ClientSession, redis_client: aioredis.Redis) -> None:
    async with http.post(desk.url + "/api/v1/login", json={"agent": "agent1001", "password": "agent1001"}) as r:
        assert r.status == 200
        body = await r.json()
        cookie = r.cookies[COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
    assert body["agent"] == {"id": "agent1001", "name": "Alice", "supervisor": False}
    token = body["token"]
    # Redis holds only a digest of the token, never the token itself.
    stored = [k async for k in redis_client.scan_iter("t:session:*")]
    assert len(stored) == 1 and token not in stored[0]
    assert 0 < await redis_client.ttl(stored[0]) <= 12 * 3600
    async with http.get(desk.url + "/api/v1/me", headers=bearer(token)) as r:
        assert r.status == 200
        assert (await r.json())["agent"]["id"] == "agent1001"


async def test_cookie_authenticates(desk: Desk) -> None:
    # its cookie jar keeps the session cookie (unsafe=True: the server is on an IP address)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await login(http, desk, "agent1001")
        async with http.get(desk.url + "/api/v1/me") as r:
            assert r.status == 200
        async with http.post(desk.url + "/api/v1/logout", json={}) as r:
            assert r.status == 200
        async with http.get(desk.url + "/api/v1/me") as r:
            assert r.status == 401


@pytest.mark.parametrize(("body", "status"), [
    ({"agent": "agent1001", "password": "wrong"}, 401),
    ({"agent": "nobody", "password": "nobody"}, 401),
    ({"agent": "agent1001"}, 400),
    ({"agent": ["agent1001"], "password": "agent1001"}, 400),
    ({"agent": "a b\n", "password": "x"}, 401),
    ({"agent": "agent1001", "password": "x" * 5000}, 401),
])
async def test_bad_logins(desk: Desk, http: aiohttp.ClientSession, body: dict[str, Any], status: int) -> None:
    async with http.post(desk.url + "/api/v1/login", json=body) as r:
        assert r.status == status
        assert "token" not in await r.json()


async def test_login_needs_json(desk: Desk, http: aiohttp.ClientSession) -> None:
    async with http.post(desk.url + "/api/v1/login", data={"agent": "agent1001", "password": "agent1001"}) as r:
        assert r.status == 415
    async with http.post(desk.url + "/api/v1/login", data=b"{" * 20000,
                         headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
    async with http.post(desk.url + "/api/v1/login", data=b"{nope",
                         headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400


async def test_login_is_throttled(desk: Desk, http: aiohttp.ClientSession) -> None:
    for _ in range(MAX_LOGIN_FAILURES):
        async with http.post(desk.url + "/api/v1/login", json={"agent": "agent1001", "password": "bad"}) as r:
            assert r.status == 401
    async with http.post(desk.url + "/api/v1/login", json={"agent": "agent1001", "password": "agent1001"}) as r:
        assert r.status == 429


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer "}, {"Authorization": "Bearer " + "x" * 43}, {"Authorization": "Basic abc"},
    {"Cookie": f"{COOKIE}=forged-forged-forged-forged"},
])
async def test_no_valid_session_is_401(desk: Desk, http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
    async with http.get(desk.url + "/api/v1/me", headers=headers) as r:
        assert r.status == 401


async def test_static_token_from_config(desk: Desk, http: aiohttp.ClientSession) -> None:
    async with http.get(desk.url + "/api/v1/me", headers=bearer("static-token-for-bob-000000")) as r:
        assert (await r.json())["agent"]["id"] == "agent1002"


# ---- privacy gate and audit -----------------------------------------------------------------------
async def audit_rows(desk: Desk) -> list[tuple[str, str, str, bool]]:
    """Customer-access decisions, oldest first (contact write-backs are audited too, separately)."""
    return [(e.who, e.what, e.target, e.allowed) for e in reversed(await desk.audit.recent(count=100))]


async def test_agent_reads_customer_only_while_handling(desk: Desk, http: aiohttp.ClientSession,
                                                        clock: Clock) -> None:
    token = await login(http, desk, "agent1001")
    url = desk.url + "/api/v1/customers/C1"
    async with http.get(url, headers=bearer(token)) as r:
        assert r.status == 403
    # The pop grants access (ringing: a few minutes; answered: the call; ended: a short while after).
    await desk.hub.publish("agent1001", POP, now=clock.now)
    async with http.get(url, headers={**bearer(token), "X-Access-Reason": "check balance\t"}) as r:
        assert r.status == 200
    await desk.hub.publish("agent1001", {"type": "pop_phase", "call_id": "ctx-1", "phase": "ended"},
                           customer_id="C1", now=clock.now)
    clock.now += 899
    async with http.get(url, headers=bearer(token)) as r:
        assert r.status == 200
    clock.now += 2
    async with http.get(url, headers=bearer(token)) as r:
        assert r.status == 403
    # Another customer never; listing all customers is for supervisors.
    async with http.get(desk.url + "/api/v1/customers/C2", headers=bearer(token)) as r:
        assert r.status == 403
    async with http.get(desk.url + "/api/v1/customers", headers=bearer(token)) as r:
        assert r.status == 403
    assert await audit_rows(desk) == [
        ("agent1001", "customer.read", "C1", False),
        ("agent1001", "customer.read", "C1", True),
        ("agent1001", "customer.read", "C1", True),
        ("agent1001", "customer.read", "C1", False),
        ("agent1001", "customer.read", "C2", False),
        ("agent1001", "customer.list", "*", False),
    ]
    whys = [e.why for e in reversed(await desk.audit.recent(count=100))]
    assert whys[:2] == ["not handling this customer", "check balance (handling this customer's call)"]
    assert whys[-1] == "supervisors only"


async def test_supervisor_reads_any_customer_audited(desk: Desk, http: aiohttp.ClientSession) -> None:
    token = await login(http, desk, "sup1")
    async with http.get(desk.url + "/api/v1/customers/C77",
                        headers={**bearer(token), "X-Access-Reason": "quality review"}) as r:
        assert r.status == 200
    async with http.get(desk.url + "/api/v1/customers", headers=bearer(token)) as r:
        assert r.status == 200
    entry = (await desk.audit.recent(count=2))[1]
    assert (entry.who, entry.role, entry.what, entry.target, entry.why, entry.allowed) == (
        "sup1", "supervisor", "customer.read", "C77", "quality review (supervisor)", True)
    assert entry.source == "127.0.0.1"
    assert entry.at > 0


async def test_api_needs_a_session(desk: Desk, http: aiohttp.ClientSession) -> None:
    for path in ("/api/v1/customers/C1", "/api/v1/whoami", "/api/v1/me"):
        async with http.get(desk.url + path) as r:
            assert r.status == 401
    token = await login(http, desk, "agent1002")
    async with http.get(desk.url + "/api/v1/whoami", headers=bearer(token)) as r:
        assert await r.json() == {"agent": "agent1002"}


# ---- write-back ---------------------------------------------------------------------------------
def note(case_id: str) -> dict[str, Any]:
    return {"notes": "Customer <b>angry</b>; refund promised", "disposition": "follow_up",
            "case": {"id": case_id, "status": "open", "next_step": "refund decision by Friday",
                     "still_needed": "bill"}}


async def test_notes_only_for_handled_contact(desk: Desk, http: aiohttp.ClientSession) -> None:
    token = await login(http, desk, "agent1001")
    url = desk.url + "/api/v1/contacts/T1/notes"
    body = note(desk.cases["C1"])
    async with http.post(url, json=body, headers=bearer(token)) as r:
        assert r.status == 403
    await desk.hub.publish("agent1001", POP)  # contact T1 (customer C1) rings at agent1001
    async with http.post(url, json=body, headers=bearer(token)) as r:
        assert r.status == 200, await r.text()
    contact = await contact_store.get_contact(desk.redis, desk.keys, "T1")
    assert contact is not None
    assert (contact.notes, contact.disposition) == (body["notes"], "follow_up")
    case = await case_store.get_case(desk.redis, desk.keys, desk.cases["C1"])
    assert case is not None
    assert (case.status, case.next_step, case.still_needed) == ("open", "refund decision by Friday", "bill")
    # Closing the case from the desk takes it out of the customer's open cases.
    body["case"]["status"] = "closed"
    async with http.post(url, json=body, headers=bearer(token)) as r:
        assert r.status == 200
    assert await case_store.list_open_cases(desk.redis, desk.keys, "C1") == []
    # Another agent, or another customer's case, is refused.
    bob = await login(http, desk, "agent1002")
    async with http.post(url, json=body, headers=bearer(bob)) as r:
        assert r.status == 403
    async with http.post(url, json=note(desk.cases["C2"]), headers=bearer(token)) as r:
        assert r.status == 400
        assert "case" in (await r.json())["error"]
    case2 = await case_store.get_case(desk.redis, desk.keys, desk.cases["C2"])
    assert case2 is not None and case2.next_step == ""


@pytest.mark.parametrize(("body", "status"), [
    ({"notes": "x"}, 400),
    ({"notes": "x", "disposition": "<script>"}, 400),
    ({"notes": 5, "disposition": "resolved"}, 400),
    ({"notes": "x" * 4001, "disposition": "resolved"}, 400),
    ({"notes": "a\u0000b", "disposition": "resolved"}, 400),
    ({"notes": "x", "disposition": "resolved", "case": "K1"}, 400),
    ({"notes": "x", "disposition": "resolved", "case": {"id": "../../K1"}}, 400),
    ({"notes": "x", "disposition": "resolved", "case": {"id": "1", "status": "deleted"}}, 400),
    ({"notes": "x", "disposition": "resolved", "case": {"id": "999"}}, 400),
    ({"notes": "x", "disposition": "resolved"}, 200),
])
async def test_notes_validation(desk: Desk, http: aiohttp.ClientSession, body: dict[str, Any], status: int) -> None:
    token = await login(http, desk, "agent1001")
    await desk.hub.publish("agent1001", POP)
    async with http.post(desk.url + "/api/v1/contacts/T1/notes", json=body, headers=bearer(token)) as r:
        assert r.status == status


async def test_notes_unknown_contact_is_404(desk: Desk, http: aiohttp.ClientSession) -> None:
    token = await login(http, desk, "sup1")
    async with http.post(desk.url + "/api/v1/contacts/T404/notes", json={"notes": "x", "disposition": "other"},
                         headers=bearer(token)) as r:
        assert r.status == 404


async def test_state_change_is_requested_and_published(desk: Desk, http: aiohttp.ClientSession) -> None:
    token = await login(http, desk, "agent1001")
    ws = await open_agent(http, desk, token)
    async with http.post(desk.url + "/api/v1/me/state", json={"state": "paused", "reason": "lunch"},
                         headers=bearer(token)) as r:
        assert r.status == 202
    assert desk.paused == [("agent1001", True)]
    frame = await recv(ws)
    assert frame["data"]["type"] == "state" and frame["data"]["state"] == "paused"
    async with http.post(desk.url + "/api/v1/me/state", json={"state": "on_call"}, headers=bearer(token)) as r:
        assert r.status == 400
    await ws.close()


# ---- supervisor views ---------------------------------------------------------------------------
async def test_unacked_and_audit_are_for_supervisors(desk: Desk, http: aiohttp.ClientSession) -> None:
    agent = await login(http, desk, "agent1001")
    sup = await login(http, desk, "sup1")
    seq = await desk.hub.publish("agent1001", POP)
    for path in ("/api/v1/pops/unacked", "/api/v1/audit"):
        async with http.get(desk.url + path, headers=bearer(agent)) as r:
            assert r.status == 403
    async with http.get(desk.url + "/api/v1/pops/unacked", headers=bearer(sup)) as r:
        [item] = (await r.json())["unacked"]
        assert (item["agent"], item["seq"], item["call_id"]) == ("agent1001", seq, "ctx-1")
    async with http.get(desk.url + "/api/v1/customers/C5", headers=bearer(agent)) as r:
        assert r.status == 403
    async with http.get(desk.url + "/api/v1/audit?count=5", headers=bearer(sup)) as r:
        body = await r.json()
        entries = body["entries"]
        assert entries[0]["target"] == "C5" and entries[0]["allowed"] is False
        assert body["source"] == "redis"  # no system of record here
        assert body["next_before"] == (entries[-1]["id"] if len(entries) == 5 else None)
    async with http.get(desk.url + "/api/v1/audit?count=1", headers=bearer(sup)) as r:
        body = await r.json()
        assert len(body["entries"]) == 1 and body["next_before"] == body["entries"][0]["id"]  # a full page
    async with http.get(desk.url + "/api/v1/audit?count=5000", headers=bearer(sup)) as r:
        assert r.status == 400
    async with http.get(desk.url + "/api/v1/audit?before=1;DROP", headers=bearer(sup)) as r:
        assert r.status == 400


async def test_page_has_strict_csp(desk: Desk, http: aiohttp.ClientSession) -> None:
    for path in ("/", "/static/app.js", "/static/app.css"):
        async with http.get(desk.url + path) as r:
            assert r.status == 200
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
            assert r.headers["X-Content-Type-Options"] == "nosniff"
    async with http.get(desk.url + "/static/app.js") as r:
        assert "innerHTML" not in await r.text()
