"""REST /api/v1/incidents on the real web app (IvrServer.web_app: sessions, back-office tokens)
over a real aiohttp server and a real Redis: who may, hostile bodies, the whole lifecycle."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from ivrserver.app import IvrServer
from ivrserver.store.keys import Keys
from ivrserver.web.backoffice import digest
from tests.test_callbacks_api import BACKOFFICE_TOKEN, login, web_app

NOC_TOKEN = "noc-" + "5e1d" * 10  # the network team's system, scope incidents


@pytest.fixture
async def server(redis_url: str, keys: Keys, tmp_path: Path) -> AsyncIterator[IvrServer]:
    async with web_app(redis_url, keys, tmp_path) as srv:
        # web_app wrote a callbacks-only token "crm"; the network team's token has scope incidents
        tokens = tmp_path / "backoffice-tokens.yaml"
        tokens.write_text(tokens.read_text() + f'noc: {{digest: "{digest(NOC_TOKEN)}", scopes: [incidents]}}\n')
        srv.backoffice = srv._load_backoffice_tokens()
        yield srv


@pytest.fixture
async def anonymous(server: IvrServer) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(server.web_app())) as c:
        yield c


@pytest.fixture
async def noc(anonymous: TestClient) -> AsyncIterator[TestClient]:
    """The network team's system: a back-office token."""
    async with TestClient(anonymous.server, headers={"Authorization": f"Bearer {NOC_TOKEN}"}) as c:
        yield c


async def test_who_may(anonymous: TestClient, noc: TestClient) -> None:
    assert (await anonymous.get("/api/v1/incidents")).status == 401
    agent = await login(anonymous, "agent1001")
    assert (await anonymous.get("/api/v1/incidents", headers=agent)).status == 403
    supervisor = await login(anonymous, "agent1010")
    assert (await anonymous.get("/api/v1/incidents", headers=supervisor)).status == 200
    assert (await noc.get("/api/v1/incidents")).status == 200
    bad = {"Authorization": "Bearer " + "x" * 40}
    assert (await anonymous.get("/api/v1/incidents", headers=bad)).status == 401
    callbacks_only = {"Authorization": f"Bearer {BACKOFFICE_TOKEN}"}
    assert (await anonymous.get("/api/v1/incidents", headers=callbacks_only)).status == 401


@pytest.mark.parametrize(("body", "field"), [
    ({"service": "mobile_data"}, "area"),
    ({"service": "Mobile Data", "area": "beijing"}, "service"),
    ({"service": "telepathy", "area": "beijing"}, "service"),
    ({"service": "mobile_data", "area": "beijing", "expected_fix_at": "18:00"}, "expected_fix_at"),
    ({"service": "mobile_data", "area": "beijing", "expected_fix_at": 1e300}, "expected_fix_at"),
    ({"service": "mobile_data", "area": "beijing", "cause": "x\u0000y"}, "cause"),
    ({"service": "mobile_data", "area": "beijing", "cause": "c" * 501}, "cause"),
    ({"service": "mobile_data", "area": "beijing", "evil": 1}, "body"),
    ({"service": "mobile_data", "area": "---"}, "area"),
])
async def test_hostile_bodies_get_field_errors(noc: TestClient, body: dict[str, object], field: str) -> None:
    resp = await noc.post("/api/v1/incidents", json=body)
    assert resp.status == 400, await resp.text()
    assert field in (await resp.json())["errors"]


async def test_planned_outage_lifecycle(noc: TestClient, redis_client: aioredis.Redis, keys: Keys) -> None:
    fix = time.time() + 7200
    resp = await noc.post("/api/v1/incidents", json={"service": "mobile_data", "area": "Chaoyang, Liaoning",
                                                     "cause": "planned maintenance", "expected_fix_at": fix})
    assert resp.status == 201, await resp.text()
    opened = await resp.json()
    assert (opened["area"], opened["opened_by"], opened["planned"]) == ("chaoyang-liaoning", "backoffice:noc", True)
    assert opened["area_names"] == {"en": "Chaoyang", "zh": "朝阳"}  # from the shipped incidents.yaml
    again = await noc.post("/api/v1/incidents", json={"service": "mobile_data", "area": "chaoyang-liaoning"})
    assert again.status == 409 and (await again.json())["existing"] == opened["id"]
    ident = opened["id"]
    assert (await noc.get("/api/v1/incidents/inc-1-x-../../etc")).status == 404
    assert (await noc.get("/api/v1/incidents/inc-1-mobile_data-nowhere")).status == 404
    acked = await (await noc.post(f"/api/v1/incidents/{ident}/acknowledge")).json()
    assert acked["state"] == "acknowledged" and acked["acknowledged_at"]
    patched = await noc.patch(f"/api/v1/incidents/{ident}", json={"cause": "fibre cut", "expected_fix_at": None})
    assert patched.status == 200
    assert (await patched.json())["cause"] == "fibre cut" and (await patched.json())["expected_fix_at"] is None
    got = await (await noc.get(f"/api/v1/incidents/{ident}")).json()
    assert got["subscribers"] == 0 and got["revision"] == 3
    assert await redis_client.hexists(keys.incidents_active(), ident)
    resolved = await noc.post(f"/api/v1/incidents/{ident}/resolve", json={})
    assert resolved.status == 200, await resolved.text()
    body = await resolved.json()
    assert body["state"] == "resolved" and body["figures"]["time_to_fix_seconds"] is not None
    assert (body["notices_scheduled"], body["notices_refused"], body["notices_pending"]) == (0, 0, False)
    assert not await redis_client.hexists(keys.incidents_active(), ident)
    late = await noc.post(f"/api/v1/incidents/{ident}/acknowledge")
    assert late.status == 409
    listed = await (await noc.get("/api/v1/incidents?state=resolved")).json()
    assert [i["id"] for i in listed["incidents"]] == [ident]
    assert (await noc.get("/api/v1/incidents?state=lost")).status == 400


async def test_a_resolve_with_notices_that_take_longer_answers_202_and_they_go_on(
        noc: TestClient, server: IvrServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notices of a big resolve take seconds: the request answers after RESOLVE_WAIT_SECONDS
    (here 0) with 202, and GET shows the figures once every caller has been scheduled."""
    import asyncio

    from ivrserver.domain.model import CallerSnapshot
    from ivrserver.web import api_incidents

    monkeypatch.setattr(api_incidents, "RESOLVE_WAIT_SECONDS", 0.0)
    incidents = server.incidents
    assert incidents is not None
    opened = await (await noc.post("/api/v1/incidents", json={"service": "mobile_data",
                                                              "area": "chaoyang-liaoning"})).json()
    for n in range(12):
        assert await incidents.subscribe(opened["id"], CallerSnapshot(number=f"+86139042100{n:02d}"), None)
    resp = await noc.post(f"/api/v1/incidents/{opened['id']}/resolve", json={"cause": "fibre spliced"})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["state"] == "resolved" and body["notices_pending"] is True
    assert (body["notices_scheduled"], body["notices_refused"], body["figures"]) == (None, None, {})
    for _ in range(600):  # GET, as a back office polls it, until the figures are archived (≤ 30 s)
        got = await (await noc.get(f"/api/v1/incidents/{opened['id']}")).json()
        if "notices_scheduled" in got["figures"]:
            break
        await asyncio.sleep(0.05)
    assert (got["figures"]["notices_scheduled"], got["figures"]["notices_refused"]) == (12, 0)
    monkeypatch.setattr(api_incidents, "RESOLVE_WAIT_SECONDS", 10.0)
    again = await noc.post(f"/api/v1/incidents/{opened['id']}/resolve", json={})  # none twice, counted again
    assert again.status == 200 and (await again.json())["notices_scheduled"] == 12


async def test_a_fault_disposition_over_rest_counts_one_complaint(
        anonymous: TestClient, server: IvrServer, redis_client: aioredis.Redis, keys: Keys) -> None:
    """PUT /api/v1/contacts/{id} {"disposition": "fault:<service>"}: validated against
    incidents.yaml's services, counted once per contact for (service, the caller's area)."""
    from ivrserver.domain.model import Contact, ContactKind
    from ivrserver.store import contacts as contact_store

    now = time.time()
    contact_id = "c0ffee" * 5 + "ab"
    await contact_store.save_contact(redis_client, keys, Contact(
        contact_id, ContactKind.INBOUND, "+8613904210005", now - 60), now=now)
    supervisor = await login(anonymous, "agent1010")
    url = f"/api/v1/contacts/{contact_id}"
    resp = await anonymous.put(url, json={"disposition": "fault:telepathy"}, headers=supervisor)
    assert resp.status == 400, await resp.text()
    assert [e["field"] for e in (await resp.json())["errors"]] == ["disposition"]
    for _ in range(2):
        resp = await anonymous.put(url, json={"disposition": "fault:mobile_data"}, headers=supervisor)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["disposition"] == "fault:mobile_data"
    incidents = server.incidents
    assert incidents is not None
    (counts, _, _), = await incidents.store.pair_states([("mobile_data", "chaoyang-liaoning")], time.time(),
                                                         incidents.policy)
    assert counts.window == 1
