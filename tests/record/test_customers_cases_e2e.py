"""Customers and cases reach PostgreSQL from a running server, and come back after Redis lost them
(issue 16 point 1, end to end). An in-process IvrServer on a real Redis and a real PostgreSQL
(postgres.dsn), its own sink and warm-up: customers imported through the real CLI (a child
process), a supervisor creating, editing and deleting customers and working a case through the
REST API, an agent rung by a call's screen-pop opening a case and closing it with the call's
note; FastAGI calls (the peer scripted the way res_agi.c talks, AMI events fed to the server's own
AMI client: no Asterisk here — tests/test_redis_ttls.py's harness). Once the sink wrote
everything, PostgreSQL holds every customer, case, case event (with who did it), contact and
audit entry Redis held; then FLUSHALL: the warm-up restores customers and cases, and a known
caller is recognised again — by the snapshot and by a new call."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from ivrserver.app import IvrServer
from ivrserver.store import cases as case_store
from ivrserver.store import customers as customer_store
from tests.inprocess import eventually, migrated, running, stop
from tests.test_redis_ttls import _contexts, call, hang_up, import_customers, ring_agent, settings_for

SUPERVISOR, AGENT = "agent1010", "agent1001"
VIP_NUMBER = "15550001"  # c-vip-1 of scripts/demo-customers.yaml


async def login(http: aiohttp.ClientSession, base: str, agent: str) -> dict[str, str]:
    async with http.post(f"{base}/api/v1/login", json={"agent": agent, "password": agent}) as r:
        assert r.status == 200, await r.text()
        return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def send(http: aiohttp.ClientSession, method: str, url: str, auth: dict[str, str], status: int,
               body: Any = None) -> Any:
    async with http.request(method, url, headers=auth, json=body) as r:
        assert r.status == status, f"{method} {url}: {r.status} {await r.text()}"
        return await r.json() if r.content_type == "application/json" else None


async def work_day(srv: IvrServer, redis: aioredis.Redis, base: str) -> dict[str, str]:
    """What people do through the server; returns the ids of the cases it opened."""
    async with aiohttp.ClientSession() as http:
        sup = await login(http, base, SUPERVISOR)
        await send(http, "POST", f"{base}/api/v1/customers", sup, 201, {
            "id": "c-e2e-1", "name": "Sun Li", "phones": ["15557001"], "tier": "gold", "account_number": "70070001",
            "pin": "4321"})
        await send(http, "PUT", f"{base}/api/v1/customers/c-e2e-1", sup, 200, {
            "name": "Sun Li-Wei", "phones": ["15557001", "15557009"], "tier": "vip", "account_number": "70070001"})
        await send(http, "POST", f"{base}/api/v1/customers", sup, 201, {"id": "c-e2e-gone", "name": "Gone Soon",
                                                                         "phones": ["15557002"]})
        await send(http, "DELETE", f"{base}/api/v1/customers/c-e2e-gone", sup, 204)
        sup_case = (await send(http, "POST", f"{base}/api/v1/cases", sup, 201,
                               {"customer_id": "c-e2e-1", "summary": "fibre cut"}))["id"]
        for change in ({"next_step": "send a technician"}, {"status": "closed"},
                       {"status": "open", "why": "the line is down again"}):
            await send(http, "PUT", f"{base}/api/v1/cases/{sup_case}", sup, 200, change)

        agent = await login(http, base, AGENT)
        vip = await call(srv, 1, VIP_NUMBER, b"0")
        other = await call(srv, 2, "15550002", b"1")
        contexts = await eventually(lambda: _contexts(redis, srv.keys), what="a call context")
        vip_ctx = next(c for c in contexts if c.get("customer_id") == "c-vip-1")
        await ring_agent(srv, vip, vip_ctx["id"], AGENT)  # the screen-pop: the agent may now work c-vip-1
        hang_up(srv, vip)
        hang_up(srv, other)
        contact_id = await eventually(lambda: redis.get(srv.keys.call_by_linkedid(vip["Linkedid"])),
                                      what="the VIP call's contact")
        await eventually(lambda: _answered(redis, srv, contact_id), what="the VIP contact final")
        agent_case = (await send(http, "POST", f"{base}/api/v1/cases", agent, 201,
                                 {"customer_id": "c-vip-1", "summary": "slow line"}))["id"]
        await send(http, "POST", f"{base}/api/v1/contacts/{contact_id}/notes", agent, 200, {
            "notes": "line reset", "disposition": "resolved", "case": {"id": agent_case, "status": "closed"}})
        await send(http, "GET", f"{base}/api/v1/customers/c-vip-1/history", agent, 200)  # an audited read
    return {"supervisor": sup_case, "agent": agent_case}


async def _answered(redis: aioredis.Redis, srv: IvrServer, contact_id: str) -> bool:
    raw = await redis.get(srv.keys.contact(contact_id))
    return bool(raw) and json.loads(raw).get("ended_at") is not None


async def redis_state(redis: aioredis.Redis, srv: IvrServer) -> dict[str, Any]:
    keys = srv.keys
    customer_ids = await redis.zrange(keys.customer_ids(), 0, -1)
    case_names = [k async for k in redis.scan_iter(match=keys.case("*"))]
    contact_names = [k async for k in redis.scan_iter(match=keys.contact("*"))]
    return {
        "customers": {c.id: c for c in await customer_store.get_customers(redis, keys, list(customer_ids))},
        "cases": {c.id: c for c in (case_store.case_from_json(r) for r in await redis.mget(case_names)) if c},
        "contacts": {n.removeprefix(keys.contact("")) for n in contact_names},
        "audit": {i for i, _ in await redis.xrange(keys.audit())},
    }


async def test_customers_cases_contacts_and_audit_reach_postgres_and_come_back_after_a_flush(
        redis_url: str, redis_client: aioredis.Redis, empty_db: str, tmp_path: Path) -> None:
    await migrated(empty_db)
    settings = settings_for(redis_url, tmp_path, empty_db)
    srv, task = await running(settings)
    try:
        await import_customers(redis_url, empty_db)  # scripts/demo-customers.yaml: customers and 1 case
        [(imported_case, _)] = [(c.id, c) for c in await case_store.list_cases(redis_client, srv.keys, "c-vip-1")]
        opened = await work_day(srv, redis_client, f"http://127.0.0.1:{srv.web_port}")
        await eventually(lambda: _drained(redis_client, srv), what="outbox drained")
        before = await redis_state(redis_client, srv)
        region = settings.phone.default_region
        known = await customer_store.snapshot_by_number(redis_client, srv.keys, VIP_NUMBER, default_country=region)
        assert known.customer is not None and known.last_contact is not None

        pg = await asyncpg.connect(empty_db)
        try:
            # every customer Redis holds, with its profile (the deleted one in neither)
            rows = await pg.fetch("SELECT id, name, tier, account_number, pin_hash FROM customers")
            assert {r["id"]: (r["name"], r["tier"], r["account_number"], r["pin_hash"]) for r in rows} == {
                c.id: (c.name, c.tier.value, c.account_number, c.pin_hash) for c in before["customers"].values()}
            assert "c-e2e-1" in before["customers"] and "c-e2e-gone" not in {r["id"] for r in rows}
            assert before["customers"]["c-e2e-1"].pin_hash  # set through the API, on record too
            phones = await pg.fetch("SELECT phone FROM customer_phones WHERE customer_id = 'c-e2e-1'")
            assert {r["phone"] for r in phones} == set(before["customers"]["c-e2e-1"].phones)
            # every case, as Redis has it
            rows = await pg.fetch("SELECT id, customer_id, status, summary, next_step FROM cases")
            assert {r["id"]: (r["customer_id"], r["status"], r["summary"], r["next_step"]) for r in rows} == {
                c.id: (c.customer_id, c.status.value, c.summary, c.next_step) for c in before["cases"].values()}
            # every change of a case, by whom
            rows = await pg.fetch("SELECT case_id, actor, kind, detail FROM case_events ORDER BY at, entry_id")
            assert [(r["case_id"], r["actor"], r["kind"]) for r in rows] == [
                (imported_case, "import", "opened"),
                (opened["supervisor"], f"supervisor:{SUPERVISOR}", "opened"),
                (opened["supervisor"], f"supervisor:{SUPERVISOR}", "updated"),
                (opened["supervisor"], f"supervisor:{SUPERVISOR}", "closed"),
                (opened["supervisor"], f"supervisor:{SUPERVISOR}", "reopened"),
                (opened["agent"], f"agent:{AGENT}", "opened"),
                (opened["agent"], f"agent:{AGENT}", "closed"),
            ]
            assert json.loads(rows[2]["detail"]) == {"next_step": "send a technician"}
            # every contact and audit entry
            contacts = {r["id"] for r in await pg.fetch("SELECT id FROM contacts")}
            assert contacts == before["contacts"] and len(contacts) >= 2
            note = await pg.fetchval("SELECT notes FROM contacts WHERE customer_id = 'c-vip-1'")
            assert note == "line reset"
            audit = {r["entry_id"] for r in await pg.fetch("SELECT entry_id FROM audit")}
            assert audit == before["audit"] and audit

            await redis_client.flushall()
            assert (await customer_store.snapshot_by_number(redis_client, srv.keys, VIP_NUMBER,
                                                            default_country=region)).customer is None
            await eventually(lambda: redis_client.exists(srv.keys.record_restored()), timeout=40,
                             what="the warm-up after FLUSHALL")
            after = await redis_state(redis_client, srv)
            assert after["customers"] == before["customers"]  # every field, the PIN hash included
            assert differences(before["cases"], after["cases"]) == {}
            again = await customer_store.snapshot_by_number(redis_client, srv.keys, VIP_NUMBER, default_country=region)
            assert (again.customer, again.open_cases) == (known.customer, known.open_cases)
            assert again.last_contact is not None
            # contact times come back at PostgreSQL's precision (timestamps: microseconds; wait and
            # talk seconds: its column type): equal to within that
            times = ("started_at", "ended_at", "wait_seconds", "talk_seconds")
            assert dataclasses.replace(again.last_contact, **dict.fromkeys(times, 0)) == dataclasses.replace(
                known.last_contact, **dict.fromkeys(times, 0))
            for name in times:
                assert abs((getattr(again.last_contact, name) or 0) - (getattr(known.last_contact, name) or 0)) < 1e-3
            # a new call from the known caller is the customer's again
            channel = await call(srv, 9, VIP_NUMBER, b"1")
            hang_up(srv, channel)
            contact_id = await eventually(lambda: redis_client.get(srv.keys.call_by_linkedid(channel["Linkedid"])),
                                          what="the new call's contact")
            raw = await eventually(lambda: redis_client.get(srv.keys.contact(contact_id)), what="its record")
            assert json.loads(raw)["customer_id"] == "c-vip-1"
            # and PostgreSQL lost nothing meanwhile
            assert {r["id"] for r in await pg.fetch("SELECT id FROM customers")} == set(before["customers"])
            assert await pg.fetchval("SELECT count(*) FROM case_events") == 7
        finally:
            await pg.close()
    finally:
        await stop(srv, task)


def differences(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """id → {field: (before, after)} of the records that differ (a missing one: all its fields)."""
    out: dict[str, Any] = {}
    for key in set(before) | set(after):
        b, a = before.get(key), after.get(key)
        fields = dataclasses.fields(b or a)  # type: ignore[arg-type]
        diff = {f.name: (getattr(b, f.name, None), getattr(a, f.name, None)) for f in fields
                if getattr(b, f.name, None) != getattr(a, f.name, None)}
        if diff:
            out[key] = diff
    return out


async def _drained(redis: aioredis.Redis, srv: IvrServer) -> bool:
    return int(await redis.xlen(srv.keys.outbox())) == 0
