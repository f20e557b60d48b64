"""The case lifecycle on record: real Redis + real PostgreSQL through the outbox and the sink.
Every change is a case_events row with its actor and why; compensations are case_compensations
rows; the new case columns survive a lost Redis (the warm-up); cases from before keep loading."""

from __future__ import annotations

import json
import time

import asyncpg
import redis.asyncio as aioredis

from ivrserver.domain.cases import ActionDef, CasePolicy
from ivrserver.domain.compensation import Authority, CompensationPolicy
from ivrserver.domain.model import Agent, CaseStatus, Customer
from ivrserver.record.sink import RecordSink
from ivrserver.services.cases import CaseService
from ivrserver.services.record_warmup import RecordWarmup
from ivrserver.store import cases as case_store
from ivrserver.store import customers as customer_store
from ivrserver.store.keys import Keys

NOW = round(time.time(), 6)
POLICY = CasePolicy(
    due_hours={1: 4, 2: 24, 3: 72},
    actions={"cancel_partner_charge": ActionDef("cancel_partner_charge", "Cancel the charge", "partner-billing")},
    compensation=CompensationPolicy(currency="CNY", roles={
        "agent": Authority(per_case={2: 5000}, per_day=30000),
        "supervisor": Authority(per_case={2: 100000}, per_day=None)}))
AGENT = Agent(id="agent1001", name="Wang Fang", endpoint="PJSIP/agent1001")
SUPERVISOR = Agent(id="agent1010", name="Wu Hong", endpoint="PJSIP/agent1010", supervisor=True)


async def drain(redis: aioredis.Redis, keys: Keys, pool: asyncpg.Pool) -> None:
    sink = RecordSink(redis, pool, stream=keys.outbox(), dead_stream=keys.outbox_dead(), consumer="a", block_ms=50)
    await sink.ensure_group()
    await sink.drain(10)
    assert await redis.xlen(keys.outbox_dead()) == 0


async def test_lifecycle_events_and_compensations_reach_postgres_and_come_back(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    keys = Keys("lc", records=True)
    await customer_store.save_customer(redis_client, keys, Customer(id="c-vip", name="Sun Quan", phones=("5550009",)))
    service = CaseService(redis_client, keys, POLICY)
    case = await service.open({"customer_id": "c-vip", "summary": "premium SMS", "severity": 2},
                              actor="agent:agent1001", checklist=[("bill of December", "customer")])
    await service.move(case.id, CaseStatus.IN_PROGRESS, actor="agent:agent1001")
    await service.hand_off(case.id, "cancel_partner_charge", {"service": "SP-1860"}, to=None,
                           actor="agent:agent1001", why="partner charged without consent")
    granted, _ = await service.grant(case.id, {"amount_cents": 3000, "reason": "sorry", "key": None},
                                     agent=AGENT)
    requested, _ = await service.grant(case.id, {"amount_cents": 3000, "reason": "three calls", "key": None},
                                       agent=AGENT)
    await service.decide_request(requested.id, approve=True, supervisor=SUPERVISOR, why="ok")
    await service.backoffice_result(case.id, "partner-billing", "charge cancelled", resolve=True)
    await service.note_event(case.id, "notice", {"notice_id": "n1", "outcome": "heard"}, actor="system")
    await drain(redis_client, keys, pool)

    rows = await pool.fetch("SELECT actor, kind, why FROM case_events WHERE case_id = $1 ORDER BY at, entry_id",
                            case.id)
    assert [(r["actor"], r["kind"], r["why"]) for r in rows] == [
        ("agent:agent1001", "opened", ""),
        ("agent:agent1001", "moved", ""),
        ("agent:agent1001", "action_requested", "partner charged without consent"),
        ("agent:agent1001", "compensation_granted", "sorry"),
        ("agent:agent1001", "compensation_requested", "three calls"),
        ("supervisor:agent1010", "compensation_approved", "ok"),
        ("backoffice:partner-billing", "resolved", "charge cancelled"),
        ("system", "notice", ""),
    ]
    comps = await pool.fetch("SELECT id, amount_cents, currency, state, granted_by, approved_by, decided_at "
                             "FROM case_compensations WHERE case_id = $1 ORDER BY requested_at, id", case.id)
    assert [(r["id"], r["amount_cents"], r["state"], r["granted_by"], r["approved_by"]) for r in comps] == [
        (granted.id, 3000, "granted", "agent:agent1001", None),
        (requested.id, 3000, "approved", "agent:agent1001", "supervisor:agent1010")]
    assert comps[1]["decided_at"] is not None and comps[0]["currency"] == "CNY"
    row = await pool.fetchrow("SELECT status, due_at, checklist, handed_to, compensated_cents, resolved_at, closed_at "
                              "FROM cases WHERE id = $1", case.id)
    assert (row["status"], list(row["handed_to"]), row["compensated_cents"]) == ("resolved", ["partner-billing"], 6000)
    assert row["resolved_at"] is not None and row["closed_at"] is None
    assert [i["from"] for i in json.loads(row["checklist"])] == ["customer", "backoffice"]
    assert abs(row["due_at"].timestamp() - (case.opened_at + 24 * 3600)) < 1e-3

    # Redis loses everything: the warm-up brings the case back as it was
    before = await service.get(case.id)
    await redis_client.flushall()
    await RecordWarmup(redis_client, keys, pool, retention_days=365, batch=50).warm_up()
    after = await service.get(case.id)
    assert after == before
    # a reopen clears resolved_at; closing sets closed_at once
    await service.move(case.id, CaseStatus.IN_PROGRESS, actor="agent:agent1001", why="charged again")
    await service.move(case.id, CaseStatus.CLOSED, actor="agent:agent1001")
    await drain(redis_client, keys, pool)
    row = await pool.fetchrow("SELECT status, resolved_at, closed_at FROM cases WHERE id = $1", case.id)
    assert row["status"] == "closed" and row["closed_at"] is not None and row["resolved_at"] is not None


async def test_overdue_index_comes_back_after_a_flush(redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    keys = Keys("od", records=True)
    await customer_store.save_customer(redis_client, keys, Customer(id="c1", name="Zhao Yun", phones=("5551234",)))
    late = await case_store.open_case(redis_client, keys, customer_id="c1", summary="no line", now=NOW - 7200,
                                      due_at=NOW - 3600)
    await drain(redis_client, keys, pool)
    await redis_client.flushall()
    await RecordWarmup(redis_client, keys, pool, retention_days=365, batch=50).warm_up()
    assert [c.id for c in await case_store.overdue_cases(redis_client, keys, now=NOW)] == [late.id]


async def test_a_case_recorded_before_the_lifecycle_still_loads(redis_client: aioredis.Redis,
                                                              pool: asyncpg.Pool) -> None:
    keys = Keys("old", records=True)
    await pool.execute("INSERT INTO customers (id, name) VALUES ('c9', 'Old Timer')")
    await pool.execute("INSERT INTO cases (id, customer_id, status, summary, opened_at) "
                       "VALUES ('77', 'c9', 'open', 'from 2024', now() - interval '1 year')")
    await RecordWarmup(redis_client, keys, pool, retention_days=365, batch=50).warm_up()
    case = await case_store.get_case(redis_client, keys, "77")
    assert case is not None and case.status is CaseStatus.OPEN and case.checklist == () and case.due_at is None
    assert [c.id for c in await case_store.list_open_cases(redis_client, keys, "c9")] == ["77"]
