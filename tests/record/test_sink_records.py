"""Customers, cases, case events and finished callbacks through the outbox into a real PostgreSQL
(real Redis stream, real sink): revisions, stream order within a batch, deletions, and poison
records dead-lettered one by one while the rest of their batch is written."""

from __future__ import annotations

import dataclasses
import json

import asyncpg
import pytest
import redis.asyncio as aioredis

from ivrserver.domain.callbacks import Callback, CallbackMode, CallbackState
from ivrserver.domain.model import Case, CaseStatus, ContactPreferences, Customer, Outcome, Tier
from ivrserver.record.rows import delete_customers, upsert_cases, upsert_customers
from ivrserver.record.sink import (
    Outbox,
    RecordSink,
    callback_entry,
    case_entry,
    customer_deleted_entry,
    customer_entry,
    revision,
)
from tests.record.test_sink import contact

STREAM, DEAD = "t:outbox", "t:outbox:dead"
T0 = 1_764_800_000.0  # 2025-12-03


@pytest.fixture
async def sink(redis_client: aioredis.Redis, pool: asyncpg.Pool) -> RecordSink:
    s = RecordSink(redis_client, pool, stream=STREAM, dead_stream=DEAD, consumer="a", block_ms=50)
    await s.ensure_group()
    return s


def customer(cid: str = "c1", name: str = "Wang Fang", phones: tuple[str, ...] = ("+8613800000001",),
             **kw: object) -> Customer:
    return Customer(id=cid, name=name, phones=phones, tier=Tier.GOLD, account_number=f"ACC-{cid}",
                    pin_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
                    preferences=ContactPreferences(timezone="Asia/Shanghai", do_not_call=True),
                    attributes={"city": "上海"}, **kw)  # type: ignore[arg-type]


def case(kid: str = "7", cid: str = "c1", **kw: object) -> Case:
    base = Case(id=kid, customer_id=cid, status=CaseStatus.OPEN, summary="router dead", opened_at=T0)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def callback(cid: str, mode: CallbackMode, state: CallbackState) -> Callback:
    return Callback(id=cid, customer_id="c1", number="+8613800000001", earliest=T0, latest=T0 + 3600,
                    created_at=T0, mode=mode, state=state, final_reason="completed", updated_at=T0 + 600)


async def test_customers_cases_events_and_finished_callbacks_reach_postgres(
        redis_client: aioredis.Redis, pool: asyncpg.Pool, sink: RecordSink) -> None:
    out = Outbox(redis_client, STREAM)
    await out.customer(customer())
    await out.customer(customer(phones=("+8613800000002", "+8613800000003")))  # the phones are replaced
    await out.case(case(), T0)
    await out.case_event("7", "c1", at=T0, actor="agent1003", kind="opened", detail={"summary": "router dead"})
    await out.case(case(status=CaseStatus.CLOSED, next_step="none"), T0 + 60)
    await out.case_event("7", "c1", at=T0 + 60, actor="backoffice:crm", kind="closed", detail={})
    await out.callback(callback("cb1", CallbackMode.AGENT_FIRST, CallbackState.DONE))
    await out.callback(callback("n1", CallbackMode.CUSTOMER_FIRST, CallbackState.FAILED))
    assert await sink.step() == 8
    row = await pool.fetchrow("SELECT name, tier, account_number, pin_hash, preferences, attributes, rev "
                              "FROM customers WHERE id = 'c1'")
    assert row["name"] == "Wang Fang" and row["tier"] == "gold" and row["account_number"] == "ACC-c1"
    assert row["pin_hash"].startswith("$argon2id$")  # the record keeps it (never logged, never exported)
    assert json.loads(row["preferences"])["timezone"] == "Asia/Shanghai"
    assert json.loads(row["attributes"]) == {"city": "上海"}
    phones = await pool.fetch("SELECT phone FROM customer_phones WHERE customer_id = 'c1' ORDER BY phone")
    assert [r["phone"] for r in phones] == ["+8613800000002", "+8613800000003"]
    k = await pool.fetchrow("SELECT status, next_step, closed_at, opened_at FROM cases WHERE id = '7'")
    assert k["status"] == "closed" and k["next_step"] == "none"
    assert k["closed_at"].timestamp() == T0 + 60 and k["opened_at"].timestamp() == T0
    events = await pool.fetch("SELECT actor, kind, customer_id, detail FROM case_events WHERE case_id = '7' "
                              "ORDER BY at")
    assert [(e["actor"], e["kind"], e["customer_id"]) for e in events] == [
        ("agent1003", "opened", "c1"), ("backoffice:crm", "closed", "c1")]
    assert json.loads(events[0]["detail"]) == {"summary": "router dead"}
    cb = await pool.fetchrow("SELECT state, mode, number, record FROM callbacks_finished WHERE id = 'cb1'")
    assert (cb["state"], cb["mode"], cb["number"]) == ("done", "agent_first", "+8613800000001")
    assert json.loads(cb["record"])["final_reason"] == "completed"
    notice = await pool.fetchrow("SELECT state, kind, finished_at FROM notifications WHERE id = 'n1'")
    assert (notice["state"], notice["kind"]) == ("failed", "call")
    assert notice["finished_at"].timestamp() == T0 + 600
    assert await pool.fetchval("SELECT count(*) FROM callbacks_finished") == 1


async def test_a_redelivered_batch_writes_each_case_event_once(
        redis_client: aioredis.Redis, pool: asyncpg.Pool, sink: RecordSink) -> None:
    out = Outbox(redis_client, STREAM)
    for i in range(3):
        await out.case_event("7", "c1", at=T0 + i, actor="system", kind="updated", detail={"n": i})
    entries = await sink._read()
    from ivrserver.record.sink import decode
    await sink._write(decode(entries))  # committed; the process dies before XACK
    assert await sink.step() == 3  # delivered again
    assert await pool.fetchval("SELECT count(*) FROM case_events") == 3


async def test_a_delete_then_recreate_in_one_batch_ends_recreated(
        redis_client: aioredis.Redis, pool: asyncpg.Pool, sink: RecordSink) -> None:
    """Applied in stream order; the revisions would make any order end the same way."""
    out = Outbox(redis_client, STREAM)
    async with redis_client.pipeline(transaction=True) as pipe:  # producers may queue in their own MULTI
        out.queue(pipe, customer_entry(customer(name="Old")))
        out.queue(pipe, case_entry(case(), T0))
        out.queue(pipe, customer_deleted_entry("c1"))
        out.queue(pipe, customer_entry(customer(name="New", phones=("+8613900000009",))))
        out.queue(pipe, case_entry(case("8", summary="after"), T0 + 5))
        await pipe.execute()
    assert await sink.step() == 5
    assert await pool.fetchval("SELECT name FROM customers WHERE id = 'c1'") == "New"
    assert await pool.fetchval("SELECT array_agg(phone) FROM customer_phones WHERE customer_id = 'c1'") == [
        "+8613900000009"]
    assert [r["id"] for r in await pool.fetch("SELECT id FROM cases ORDER BY id")] == ["8"]


async def test_deleting_a_customer_deletes_its_phones_cases_and_events_and_a_late_version_stays_deleted(
        redis_client: aioredis.Redis, pool: asyncpg.Pool, sink: RecordSink) -> None:
    out = Outbox(redis_client, STREAM)
    old_customer = await out.customer(customer())
    old_case = await out.case(case(), T0)
    await out.case_event("7", "c1", at=T0, actor="agent1003", kind="opened")
    await out.customer(customer("c2", phones=("+8613800000099",)))
    await out.case(case("9", cid="c2"), T0)
    await out.customer_deleted("c1")
    assert await sink.step() == 6
    assert await pool.fetchval("SELECT count(*) FROM customers WHERE id = 'c1'") == 0
    assert await pool.fetchval("SELECT count(*) FROM customer_phones WHERE customer_id = 'c1'") == 0
    assert await pool.fetchval("SELECT count(*) FROM cases WHERE customer_id = 'c1'") == 0
    assert await pool.fetchval("SELECT count(*) FROM case_events WHERE case_id = '7'") == 0
    assert await pool.fetchval("SELECT count(*) FROM cases WHERE customer_id = 'c2'") == 1  # others untouched
    # Versions from before the deletion delivered late (another sink held them): they stay deleted.
    async with pool.acquire() as conn:
        await upsert_customers(conn, [(customer(), revision(old_customer))])
        await upsert_cases(conn, [(case(), T0, revision(old_case))])
        await delete_customers(conn, [("c1", revision(old_customer))])  # an old deletion: no effect on c2
    assert await pool.fetchval("SELECT count(*) FROM customers WHERE id = 'c1'") == 0
    assert await pool.fetchval("SELECT count(*) FROM cases WHERE id = '7'") == 0
    # Created again later: a newer revision than the deletion.
    await out.customer(customer(name="Back"))
    assert await sink.step() == 1
    assert await pool.fetchval("SELECT name FROM customers WHERE id = 'c1'") == "Back"


async def test_an_older_customer_or_case_version_never_overwrites_a_newer_one(
        redis_client: aioredis.Redis, pool: asyncpg.Pool, sink: RecordSink) -> None:
    out = Outbox(redis_client, STREAM)
    first_c = await out.customer(customer(name="First"))
    first_k = await out.case(case(summary="first"), T0)
    await out.customer(customer(name="Second", phones=("+8613800000005",)))
    await out.case(case(summary="second", severity=1), T0 + 1)
    assert await sink.step() == 4
    async with pool.acquire() as conn:
        await upsert_customers(conn, [(customer(name="First"), revision(first_c))])
        await upsert_cases(conn, [(case(summary="first"), T0, revision(first_k))])
    assert await pool.fetchval("SELECT name FROM customers WHERE id = 'c1'") == "Second"
    assert await pool.fetchval("SELECT array_agg(phone) FROM customer_phones") == ["+8613800000005"]
    assert await pool.fetchval("SELECT summary FROM cases WHERE id = '7'") == "second"


async def test_two_customers_may_hold_one_account_number_and_cases_may_arrive_before_their_customer(
        redis_client: aioredis.Redis, pool: asyncpg.Pool, sink: RecordSink) -> None:
    """Redis-era data out of order must not poison the outbox: no UNIQUE, no FOREIGN KEY to fail on."""
    out = Outbox(redis_client, STREAM)
    await out.case(case("5", cid="later"), T0)
    await out.case_event("5", "later", at=T0, actor="import", kind="opened")
    await out.customer(dataclasses.replace(customer("a"), account_number="SHARED"))
    await out.customer(dataclasses.replace(customer("b"), account_number="SHARED"))
    await out.customer(customer("later"))
    assert await sink.step() == 5
    assert await pool.fetchval("SELECT count(*) FROM customers WHERE account_number = 'SHARED'") == 2
    assert await pool.fetchval("SELECT customer_id FROM cases WHERE id = '5'") == "later"
    assert await redis_client.xlen(DEAD) == 0


async def test_poison_records_are_dead_lettered_one_by_one_and_the_rest_of_the_batch_is_written(
        redis_client: aioredis.Redis, pool: asyncpg.Pool, sink: RecordSink,
        caplog: pytest.LogCaptureFixture) -> None:
    out = Outbox(redis_client, STREAM)
    await out.customer(customer("good1"))
    # NUL is valid JSON and a valid Python str, but PostgreSQL text cannot hold it (SQLSTATE 22021)
    bad_customer = await out.customer(customer("bad", name="Nul\x00Name"))
    await out.contact(contact("k1", Outcome.ANSWERED))
    bad_case = await out.case(case("6", severity=9), T0)  # the CHECK on severity (SQLSTATE 23514)
    await out.case(case("7"), T0)
    await out.callback(callback("cb1", CallbackMode.AGENT_FIRST, CallbackState.CANCELLED))
    await out.customer(customer("good2"))
    assert await sink.step() == 7
    assert await sink.pending() == 0
    ids = {r["id"] for r in await pool.fetch("SELECT id FROM customers")}
    assert ids == {"good1", "good2"}
    assert await pool.fetchval("SELECT count(*) FROM contacts") == 1
    assert [r["id"] for r in await pool.fetch("SELECT id FROM cases")] == ["7"]
    assert await pool.fetchval("SELECT count(*) FROM callbacks_finished") == 1
    dead = await redis_client.xrange(DEAD)
    assert [(f["entry"], f["kind"]) for _, f in dead] == [(bad_customer, "customer"), (bad_case, "case")]
    assert "CheckViolationError (SQLSTATE 23514)" in dead[1][1]["error"]
    assert "severity" in dead[1][1]["error"]  # the constraint's message, for a person to read
    # A customer's error names the error only: PostgreSQL's message could quote its values.
    assert dead[0][1]["error"] == "CharacterNotInRepertoireError (SQLSTATE 22021)"
    assert all("argon2" not in r.getMessage() for r in caplog.records)
    # Once dead-lettered they are out of the way: the next batch is written at once.
    await out.customer(customer("good3"))
    assert await sink.step() == 1
    assert await pool.fetchval("SELECT count(*) FROM customers") == 3


async def test_an_availability_error_is_retried_never_dead_lettered(
        redis_client: aioredis.Redis, pool: asyncpg.Pool, sink: RecordSink) -> None:
    """A schema problem (a table missing) is the database's, not the records': the batch waits."""
    out = Outbox(redis_client, STREAM)
    await out.customer(customer())
    await out.customer(customer("c2"))
    await pool.execute("ALTER TABLE deleted_customers RENAME TO deleted_customers_away")
    with pytest.raises(asyncpg.UndefinedTableError):
        await sink.step()
    assert await sink.pending() == 2 and await redis_client.xlen(DEAD) == 0
    await pool.execute("ALTER TABLE deleted_customers_away RENAME TO deleted_customers")
    assert await sink.step() == 2
    assert await pool.fetchval("SELECT count(*) FROM customers") == 2


async def test_undecodable_entries_of_the_new_kinds_go_to_the_dead_letter_stream(
        redis_client: aioredis.Redis, pool: asyncpg.Pool, sink: RecordSink) -> None:
    await redis_client.xadd(STREAM, {"kind": "customer", "data": '{"name": "no id"}'})
    await redis_client.xadd(STREAM, {"kind": "case_event", "data": '{"case_id": "1", "detail": [1]}'})
    await redis_client.xadd(STREAM, {"kind": "customer_deleted", "data": '{"id": 5}'})
    live = dataclasses.asdict(callback("cb9", CallbackMode.AGENT_FIRST, CallbackState.SCHEDULED))
    await redis_client.xadd(STREAM, {"kind": "callback", "data": json.dumps({**live, "mode": "agent_first",
                                                                              "state": "scheduled"})})
    with pytest.raises(ValueError, match="not finished"):
        callback_entry(callback("cb9", CallbackMode.AGENT_FIRST, CallbackState.DIALING))
    assert await sink.step() == 4
    assert await redis_client.xlen(DEAD) == 4
    assert await pool.fetchval("SELECT count(*) FROM callbacks_finished") == 0


def test_a_batch_is_written_one_statement_batch_per_kind_each_in_stream_order() -> None:
    from ivrserver.record.sink import Record, runs

    kinds = ["customer", "customer", "case", "customer_deleted", "customer", "case_event", "case_event", "case",
             "contact", "path", "audit", "contact", "path", "audit"]  # a call's records interleave kinds
    records = [Record(f"1-{i}", {}, k, i) for i, k in enumerate(kinds)]
    assert [(k, [r.value for r in rs]) for k, rs in runs(records)] == [
        ("customer", [0, 1, 4]), ("case", [2, 7]), ("customer_deleted", [3]), ("case_event", [5, 6]),
        ("contact", [8, 11]), ("path", [9, 12]), ("audit", [10, 13])]
    assert runs([]) == []
