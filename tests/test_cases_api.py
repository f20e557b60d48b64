"""Cases on the real web app (IvrServer.web_app: sessions, scoped back-office tokens, access grants,
audit) over a real aiohttp server and a real Redis: the lifecycle, the checklist, the hand-off to a
back office and its result, compensation within authority, overdue cases; the case follow-up's
retries (its webhooks handler against a real receiver: tests/test_case_followup_webhooks.py)."""

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
from ivrserver.domain.cases import CaseChange
from ivrserver.domain.model import Customer, Tier
from ivrserver.services.case_followup import CaseFollowup
from ivrserver.store import cases as case_store
from ivrserver.store import customers
from ivrserver.store.grants import Grant
from ivrserver.store.keys import Keys
from ivrserver.web.auth import AUTH, token_digest
from ivrserver.web.backoffice import digest

REPO = Path(__file__).resolve().parent.parent
PARTNER = "pb-" + "3c9e1a" * 8  # partner-billing: cases:read + cases:write
BILLING = "bl-" + "77aa01" * 8  # billing: cases:read only
CRM = "crm-" + "5d5d5d" * 8  # the old form: callbacks only
Headers = dict[str, str]


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def web_app(redis_url: str, keys: Keys, tmp_path: Path) -> AsyncIterator[IvrServer]:
    agents = tmp_path / "agents.yaml"
    agents.write_text((REPO / "scripts" / "demo-agents.yaml").read_text())
    tokens = tmp_path / "backoffice-tokens.yaml"
    tokens.write_text(f'crm: "{digest(CRM)}"\n'
                      f'partner-billing: {{digest: "{digest(PARTNER)}", scopes: [cases:read, cases:write]}}\n'
                      f'billing:\n  digest: "{digest(BILLING)}"\n  scopes: [cases:read]\n')
    settings = config.from_mapping({
        "redis": {"url": redis_url, "prefix": keys.prefix},
        "routing": {"agents_file": str(agents)},
        "menus": {"watch": False},
        "web": {"backoffice_tokens_file": str(tokens)},
    })
    server = IvrServer(settings)
    try:
        yield server
    finally:
        await server.redis.aclose()
        await server.pubsub_redis.aclose()


@pytest.fixture
async def server(redis_url: str, redis_client: aioredis.Redis, keys: Keys, tmp_path: Path) -> AsyncIterator[IvrServer]:
    for c in (Customer(id="c-vip", name="Sun Quan", phones=("5550009",), tier=Tier.VIP),
              Customer(id="c2", name="Ma Dai", phones=("5550002",))):
        await customers.save_customer(redis_client, keys, c)
    async with web_app(redis_url, keys, tmp_path) as srv:
        yield srv


@pytest.fixture
async def client(server: IvrServer) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(server.web_app())) as c:
        yield c


async def login(client: TestClient, agent: str) -> Headers:
    auth = client.server.app[AUTH]  # type: ignore[index]
    token = secrets.token_urlsafe(32)
    await auth.redis.set(auth.keys.session(token_digest(token)), agent, ex=600)
    return bearer(token)


async def handling(server: IvrServer, agent: str, customer_id: str) -> None:
    """`agent`'s phone rang with the customer's call: the pop's grant lets them work its records."""
    await server.pops.grant(agent, Grant(until=time.time() + 300, customer_id=customer_id))


async def call(client: TestClient, method: str, path: str, headers: Headers, expect: int, body: Any = None) -> Any:
    resp = await client.request(method, path, headers=headers, json=body)
    text = await resp.text()
    assert resp.status == expect, f"{method} {path}: {resp.status} {text}"
    return json.loads(text) if text and resp.content_type == "application/json" else None


async def open_case(client: TestClient, agent: Headers, **body: Any) -> dict[str, Any]:
    return await call(client, "POST", "/api/v1/cases", agent, 201,  # type: ignore[no-any-return]
                      {"customer_id": "c-vip", "summary": "premium SMS charged without consent", "severity": 2,
                       **body})


# --- the VIP's story -------------------------------------------------------------------------------

async def test_recorded_handed_to_the_partner_resolved_by_it(client: TestClient, server: IvrServer) -> None:
    await handling(server, "agent1001", "c-vip")
    agent = await login(client, "agent1001")
    case = await open_case(client, agent, checklist=[{"text": "bill of December", "from": "customer"}])
    cid = case["id"]
    assert case["status"] == "open" and case["overdue"] is False and case["open_items"] == 1
    assert 24 * 3600 - 5 < case["due_at"] - case["opened_at"] <= 24 * 3600  # severity 2: 24 h (cases.yaml)

    moved = await call(client, "POST", f"/api/v1/cases/{cid}/status", agent, 200, {"status": "in_progress"})
    assert moved["status"] == "in_progress"
    # why is required to wait, resolve and reopen
    await call(client, "POST", f"/api/v1/cases/{cid}/status", agent, 400, {"status": "waiting_customer"})
    handed = await call(client, "POST", f"/api/v1/cases/{cid}/actions", agent, 200, {
        "action": "cancel_partner_charge", "to": "partner-billing", "params": {"service": "SP-1860", "amount": 30}})
    assert handed["status"] == "waiting_backoffice" and handed["handed_to"] == ["partner-billing"]
    assert [i["from"] for i in handed["checklist"]] == ["customer", "backoffice"]

    partner = bearer(PARTNER)
    seen = await call(client, "GET", f"/api/v1/cases/{cid}", partner, 200)
    assert seen["id"] == cid
    listed = await call(client, "GET", "/api/v1/cases?filter=handed", partner, 200)
    assert [c["id"] for c in listed["items"]] == [cid]
    # another back office, or one without cases:write, or the old callbacks token: nothing
    await call(client, "GET", f"/api/v1/cases/{cid}", bearer(BILLING), 404)
    await call(client, "GET", f"/api/v1/cases/{cid}", bearer(CRM), 401)
    await call(client, "PUT", f"/api/v1/cases/{cid}", partner, 403, {"summary": "mine now"})
    await call(client, "POST", f"/api/v1/cases/{cid}/compensations", partner, 403,
               {"amount_cents": 1, "currency": "CNY", "reason": "x"})
    await call(client, "GET", "/api/v1/customers/c-vip", partner, 401)

    resolved = await call(client, "POST", f"/api/v1/cases/{cid}/results", partner, 200,
                          {"result": "charge cancelled", "resolve": True})
    assert resolved["status"] == "resolved"
    assert all(i["done"] for i in resolved["checklist"] if i["from"] == "backoffice")
    assert resolved["checklist"][1]["done_by"] == "backoffice:partner-billing"

    events = (await call(client, "GET", f"/api/v1/cases/{cid}/events", agent, 200))["events"]
    assert [(e["kind"], e["actor"], e["status"]) for e in events] == [
        ("opened", "agent:agent1001", "open"), ("moved", "agent:agent1001", "in_progress"),
        ("action_requested", "agent:agent1001", "waiting_backoffice"),
        ("resolved", "backoffice:partner-billing", "resolved")]
    assert events[3]["why"] == "charge cancelled" and events[2]["detail"]["params"] == {"service": "SP-1860",
                                                                                      "amount": 30}
    # the customer confirms: closed; the back office sees it no more
    await call(client, "POST", f"/api/v1/cases/{cid}/status", agent, 200, {"status": "closed"})
    await call(client, "GET", f"/api/v1/cases/{cid}", partner, 404)
    assert (await call(client, "GET", "/api/v1/cases?filter=handed", partner, 200))["items"] == []


async def test_a_read_only_back_office_cannot_post_results(client: TestClient, server: IvrServer) -> None:
    await handling(server, "agent1001", "c-vip")
    agent = await login(client, "agent1001")
    cid = (await open_case(client, agent))["id"]
    await call(client, "POST", f"/api/v1/cases/{cid}/actions", agent, 200, {"action": "check_bill"})
    await call(client, "GET", f"/api/v1/cases/{cid}", bearer(BILLING), 200)
    await call(client, "POST", f"/api/v1/cases/{cid}/results", bearer(BILLING), 403, {"result": "bill checked"})
    # a result on a case never handed to the partner: as if it did not exist
    await call(client, "POST", f"/api/v1/cases/{cid}/results", bearer(PARTNER), 404, {"result": "x"})
    await call(client, "POST", "/api/v1/cases/999/results", bearer(PARTNER), 404, {"result": "x"})


async def test_lifecycle_rules_over_rest(client: TestClient, server: IvrServer) -> None:
    await handling(server, "agent1001", "c-vip")
    agent = await login(client, "agent1001")
    cid = (await open_case(client, agent))["id"]
    await call(client, "POST", f"/api/v1/cases/{cid}/status", agent, 200, {"status": "closed"})
    conflict = await call(client, "POST", f"/api/v1/cases/{cid}/status", agent, 409,
                          {"status": "resolved", "why": "x"})
    assert conflict["errors"][0]["field"] == "status"
    # the old PUT status "open" reopens (in_progress) — with a why
    assert (await call(client, "PUT", f"/api/v1/cases/{cid}", agent, 400, {"status": "open"}))["errors"][0][
        "field"] == "why"
    reopened = await call(client, "PUT", f"/api/v1/cases/{cid}", agent, 200,
                          {"status": "open", "why": "the charge is back on the bill"})
    assert reopened["status"] == "in_progress"
    ticked = await call(client, "POST", f"/api/v1/cases/{cid}/checklist", agent, 200,
                        {"add": [{"text": "screenshot of the SMS"}], "done": []})
    item = ticked["checklist"][0]["id"]
    ticked = await call(client, "POST", f"/api/v1/cases/{cid}/checklist", agent, 200, {"done": [item]})
    assert ticked["checklist"][0]["done_by"] == "agent:agent1001" and ticked["open_items"] == 0
    history = await call(client, "GET", "/api/v1/customers/c-vip/history", agent, 200)
    assert [c["id"] for c in history["open_cases"]] == [cid]  # open unless closed


@pytest.mark.parametrize(("path", "body", "field"), [
    ("status", {"status": "open"}, "status"),
    ("status", {"status": "resolved", "why": "\x1b[2J"}, "why"),
    ("status", ["resolved"], "body"),
    ("checklist", {"add": [{"text": "x", "from": "partner"}]}, "add[0].from"),
    ("checklist", {"done": ["<script>"]}, "done"),
    ("actions", {"action": "refund_everything"}, "action"),
    ("actions", {"action": "cancel_partner_charge", "to": "billing"}, "to"),
    ("actions", {"action": "cancel_partner_charge", "params": {"x": [1, 2]}}, "params.x"),
    ("compensations", {"amount_cents": 500, "currency": "CNY", "reason": "x", "state": "granted"}, "state"),
    ("compensations", {"amount_cents": 5.5, "currency": "CNY", "reason": "x"}, "amount_cents"),
    ("compensations", {"amount_cents": 500, "currency": "USD", "reason": "x"}, "currency"),
])
async def test_hostile_bodies(client: TestClient, server: IvrServer, path: str, body: Any, field: str) -> None:
    await handling(server, "agent1001", "c-vip")
    agent = await login(client, "agent1001")
    cid = (await open_case(client, agent))["id"]
    answer = await call(client, "POST", f"/api/v1/cases/{cid}/{path}", agent, 400, body)
    assert field in [e["field"] for e in answer["errors"]]
    resp = await client.post(f"/api/v1/cases/{cid}/status", headers=agent, data=b'{"status": "closed"' + b" " * 10)
    assert resp.status == 400


async def test_an_agent_not_handling_the_customer_is_refused(client: TestClient, server: IvrServer) -> None:
    await handling(server, "agent1001", "c-vip")
    cid = (await open_case(client, await login(client, "agent1001")))["id"]
    other = await login(client, "agent1004")
    for method, path, body in (("GET", f"/api/v1/cases/{cid}", None),
                               ("POST", f"/api/v1/cases/{cid}/status", {"status": "closed"}),
                               ("POST", f"/api/v1/cases/{cid}/compensations",
                                {"amount_cents": 100, "currency": "CNY", "reason": "sorry"})):
        await call(client, method, path, other, 403, body)
    await call(client, "GET", f"/api/v1/cases/{cid}", {}, 401)


# --- compensation within authority -----------------------------------------------------------------

async def test_compensation_within_authority_then_above_it_approved_by_a_supervisor(
        client: TestClient, server: IvrServer, redis_client: aioredis.Redis, keys: Keys) -> None:
    await handling(server, "agent1001", "c-vip")
    agent = await login(client, "agent1001")
    cid = (await open_case(client, agent))["id"]  # severity 2: an agent may grant 5000 per case
    body = {"amount_cents": 3000, "currency": "CNY", "reason": "30 yuan charged without consent", "key": "k1"}
    granted = await call(client, "POST", f"/api/v1/cases/{cid}/compensations", agent, 201, body)
    assert granted["state"] == "granted" and granted["granted_by"] == "agent:agent1001"
    again = await call(client, "POST", f"/api/v1/cases/{cid}/compensations", agent, 200, body)  # same key
    assert again["id"] == granted["id"]
    above = await call(client, "POST", f"/api/v1/cases/{cid}/compensations", agent, 202,
                       {"amount_cents": 3000, "currency": "CNY", "reason": "three calls to get through"})
    assert above["state"] == "requested"
    case = await call(client, "GET", f"/api/v1/cases/{cid}", agent, 200)
    assert case["compensated_cents"] == 3000 and case["currency"] == "CNY"

    # agents cannot decide; supervisors see the request and approve it
    await call(client, "GET", "/api/v1/compensations?state=requested", agent, 403)
    await call(client, "POST", f"/api/v1/compensations/{above['id']}/approve", agent, 403)
    supervisor = await login(client, "agent1010")
    waiting = await call(client, "GET", "/api/v1/compensations?state=requested", supervisor, 200)
    assert [c["id"] for c in waiting["items"]] == [above["id"]]
    await call(client, "POST", f"/api/v1/compensations/{above['id']}/refuse", supervisor, 400, {})  # why needed
    approved = await call(client, "POST", f"/api/v1/compensations/{above['id']}/approve", supervisor, 200,
                          {"why": "three calls"})
    assert approved["state"] == "approved" and approved["approved_by"] == "supervisor:agent1010"
    await call(client, "POST", f"/api/v1/compensations/{above['id']}/refuse", supervisor, 409, {"why": "late"})
    assert (await call(client, "GET", "/api/v1/compensations", supervisor, 200))["items"] == []
    case = await call(client, "GET", f"/api/v1/cases/{cid}", agent, 200)
    assert case["compensated_cents"] == 6000
    listed = await call(client, "GET", f"/api/v1/cases/{cid}/compensations", agent, 200)
    assert [(c["state"], c["amount_cents"]) for c in listed["items"]] == [("granted", 3000), ("approved", 3000)]
    kinds = [e["kind"] for e in (await call(client, "GET", f"/api/v1/cases/{cid}/events", agent, 200))["events"]]
    assert kinds == ["opened", "compensation_granted", "compensation_requested", "compensation_approved"]
    # every grant, request and decision audited
    audit = [f for _, f in await redis_client.xrange(keys.audit())]
    decisions = [(f["who"], f["what"], f["allowed"]) for f in audit if f["what"].endswith("ed")
                 and f["what"].startswith("compensation.")]
    assert decisions == [("agent1001", "compensation.granted", "1"), ("agent1001", "compensation.requested", "0"),
                         ("agent1010", "compensation.approved", "1")]
    granted_entry = next(f for f in audit if f["what"] == "compensation.granted")
    assert granted_entry["target"] == f"case:{cid}" and "3000 CNY" in granted_entry["why"]


async def test_a_refusal_and_the_daily_limit(client: TestClient, server: IvrServer) -> None:
    await handling(server, "agent1001", "c-vip")
    agent = await login(client, "agent1001")
    supervisor = await login(client, "agent1010")
    ids = [(await open_case(client, agent, severity=1))["id"] for _ in range(4)]  # 10000 per case, 30000 a day
    states = [(await call(client, "POST", f"/api/v1/cases/{cid}/compensations", agent, expect, {
        "amount_cents": 10000, "currency": "CNY", "reason": "outage"}))["state"]
        for cid, expect in zip(ids, (201, 201, 201, 202), strict=True)]
    assert states == ["granted", "granted", "granted", "requested"]  # the fourth is past the day's 30000
    request = (await call(client, "GET", "/api/v1/compensations", supervisor, 200))["items"][0]
    refused = await call(client, "POST", f"/api/v1/compensations/{request['id']}/refuse", supervisor, 200,
                         {"why": "already compensated on the bill"})
    assert refused["state"] == "refused" and refused["decision_why"] == "already compensated on the bill"
    assert (await call(client, "GET", f"/api/v1/cases/{ids[3]}", agent, 200))["compensated_cents"] == 0
    await call(client, "POST", "/api/v1/compensations/cp-000000000000000000000000/approve", supervisor, 404)
    await call(client, "POST", "/api/v1/compensations/..%2Fx/approve", supervisor, 404)


async def test_grants_racing_never_exceed_the_authority(client: TestClient, server: IvrServer) -> None:
    """Twenty grants sent at once: the case's per-severity limit and the agent's day hold exactly
    (the store WATCHes the case, the compensation and the day's total; a lost race retries)."""
    await handling(server, "agent1001", "c-vip")
    agent = await login(client, "agent1001")
    cid = (await open_case(client, agent))["id"]  # severity 2: 5000 per case for an agent

    async def grant(i: int) -> str:
        resp = await client.post(f"/api/v1/cases/{cid}/compensations", headers=agent, json={
            "amount_cents": 1000, "currency": "CNY", "reason": f"race {i}"})
        assert resp.status in (201, 202), await resp.text()
        return str((await resp.json())["state"])

    states = await asyncio.gather(*(grant(i) for i in range(20)))
    assert states.count("granted") == 5 and states.count("requested") == 15
    case = await call(client, "GET", f"/api/v1/cases/{cid}", agent, 200)
    assert case["compensated_cents"] == 5000

    day_cases = [(await open_case(client, agent, severity=1))["id"] for _ in range(6)]  # 10000 each, 30000 a day
    more = await asyncio.gather(*(client.post(f"/api/v1/cases/{c}/compensations", headers=agent, json={
        "amount_cents": 10000, "currency": "CNY", "reason": "outage"}) for c in day_cases))
    granted_today = [r.status for r in more].count(201)
    assert granted_today == 2  # 5000 already granted today: 25000 left, so two of 10000
    assert [r.status for r in more].count(202) == 4


async def test_policy_tells_the_page_its_authority(client: TestClient, server: IvrServer) -> None:
    policy = await call(client, "GET", "/api/v1/case-policy", await login(client, "agent1001"), 200)
    assert policy["compensation"]["role"] == "agent" and policy["compensation"]["per_case"]["2"] == 5000
    assert {a["name"] for a in policy["actions"]} == {"cancel_partner_charge", "check_bill"}
    assert "in_progress" in policy["statuses"]["closed"]
    assert (await call(client, "GET", "/api/v1/case-policy", await login(client, "agent1010"), 200))[
        "compensation"]["per_day"] is None


# --- overdue and old cases -------------------------------------------------------------------------

async def test_supervisors_list_overdue_cases(client: TestClient, server: IvrServer, redis_client: aioredis.Redis,
                                              keys: Keys) -> None:
    now = time.time()
    late = await case_store.open_case(redis_client, keys, customer_id="c2", summary="no line", now=now - 7200,
                                      severity=1, due_at=now - 3600)
    await case_store.open_case(redis_client, keys, customer_id="c2", summary="fine", now=now, due_at=now + 3600)
    done = await case_store.open_case(redis_client, keys, customer_id="c2", summary="fixed", now=now - 7200,
                                      due_at=now - 3600)
    await case_store.update_case(redis_client, keys, done.id, {"status": case_store.CaseStatus.CLOSED})
    supervisor = await login(client, "agent1010")
    overdue = await call(client, "GET", "/api/v1/cases?filter=overdue", supervisor, 200)
    assert [(c["id"], c["overdue"]) for c in overdue["items"]] == [(late.id, True)]
    await call(client, "GET", "/api/v1/cases?filter=overdue", await login(client, "agent1001"), 403)
    await call(client, "GET", "/api/v1/cases?filter=everything", supervisor, 400)
    await call(client, "GET", "/api/v1/cases?filter=handed", supervisor, 403)


async def test_a_case_from_before_the_lifecycle_still_loads(client: TestClient, server: IvrServer,
                                                            redis_client: aioredis.Redis, keys: Keys) -> None:
    old = {"id": "41", "customer_id": "c2", "status": "open", "summary": "router dead", "opened_at": 1.7e9,
           "owner_agent": None, "severity": 3, "still_needed": "", "next_step": ""}
    await redis_client.set(keys.case("41"), json.dumps(old))
    await redis_client.zadd(keys.open_cases("c2"), {"41": 1.7e9})
    await redis_client.zadd(keys.customer_cases("c2"), {"41": 1.7e9})
    supervisor = await login(client, "agent1010")
    case = await call(client, "GET", "/api/v1/cases/41", supervisor, 200)
    assert case["status"] == "open" and case["checklist"] == [] and case["due_at"] is None and not case["overdue"]
    closed = await call(client, "PUT", "/api/v1/cases/41", supervisor, 200, {"status": "closed"})
    assert closed["status"] == "closed"


# --- the follow-up: every change to the webhooks, once ---------------------------------------------

async def test_a_failing_handler_is_retried_and_the_others_do_not_run_twice(
        redis_client: aioredis.Redis, keys: Keys) -> None:
    seen: dict[str, list[str]] = {"flaky": [], "steady": []}

    async def flaky(change: CaseChange) -> None:
        seen["flaky"].append(change.kind)
        if len(seen["flaky"]) < 3:
            raise ConnectionError("the notices service is away")

    async def steady(change: CaseChange) -> None:
        seen["steady"].append(change.kind)

    followup = CaseFollowup(redis_client, keys, consumer="t2", block_ms=20, retry_base=0.05, retry_max=0.1)
    followup.register("flaky", flaky)
    followup.register("steady", steady)
    with pytest.raises(ValueError):
        followup.register("steady", steady)
    await case_store.open_case(redis_client, keys, customer_id="c1", summary="x", now=time.time())
    await redis_client.xadd(keys.case_changes(), {"kind": "opened", "case": "not json"})  # unreadable
    await followup.drain(10)
    assert seen == {"flaky": ["opened"] * 3, "steady": ["opened"]}
    assert await redis_client.xlen(keys.case_changes_dead()) == 1
    # a second follow-up (another instance) finds nothing left to do
    other = CaseFollowup(redis_client, keys, consumer="t3", block_ms=20)
    other.register("steady", steady)
    assert await other.step() == 0 and seen["steady"] == ["opened"]
