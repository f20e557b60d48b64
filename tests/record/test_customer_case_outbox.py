"""Customers and cases reach PostgreSQL (issue 16): with a system of record (`Keys.records`) every
write of a customer (save, import, PIN hash upgrade) queues a `customer` outbox entry, a deletion a
`customer_deleted` entry, and every change of a case a `case` entry and a `case_event` entry (who,
when, what) — in the SAME MULTI as the Redis write: MONITOR of a real redis-server shows each XADD
between that write's MULTI and EXEC, never on its own. Then the real sink writes them to a real
PostgreSQL. Without a system of record nothing is queued. The CLI import (a real `ivrserver`
process) queues them too when postgres.dsn is set (it only writes Redis: no PostgreSQL needed)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from ivrserver.domain.model import CaseStatus
from ivrserver.record.sink import RecordSink, decode
from ivrserver.record.sink import case_entry as sink_case_entry
from ivrserver.record.sink import customer_entry as sink_customer_entry
from ivrserver.store import cases as case_store
from ivrserver.store import customers as customer_store
from ivrserver.store.keys import Keys
from tests.cli_harness import ivrserver, user_env
from tests.record.test_sink_records import customer

NOW = float(int(time.time()))


async def transactions(redis: aioredis.Redis, op: Callable[[], Awaitable[Any]]) -> tuple[list[list[str]], list[str]]:
    """Run `op` under MONITOR: the commands of each MULTI…EXEC, and the commands sent outside one."""
    mark = uuid.uuid4().hex
    inside: list[list[str]] = []
    outside: list[str] = []
    async with redis.monitor() as monitor:
        await redis.echo(f"start-{mark}")
        await op()
        await redis.echo(f"end-{mark}")
        started = False
        current: list[str] | None = None
        while True:
            command = (await asyncio.wait_for(monitor.next_command(), 5))["command"]
            if command.startswith("ECHO"):
                if f"end-{mark}" in command:
                    break
                started = started or f"start-{mark}" in command
                continue
            if not started:
                continue
            if command == "MULTI":
                current = []
            elif command == "EXEC":
                assert current is not None
                inside.append(current)
                current = None
            elif current is not None:
                current.append(command)
            else:
                outside.append(command)
    return inside, outside


def xadds(commands: list[str]) -> list[str]:
    return [c for c in commands if c.startswith("XADD")]


async def entries(redis: aioredis.Redis, keys: Keys) -> list[tuple[str, dict[str, str]]]:
    return [(i, f) for i, f in await redis.xrange(keys.outbox())]


async def test_every_customer_and_case_write_queues_its_record_in_the_same_multi(
        redis_client: aioredis.Redis) -> None:
    keys = Keys("m", records=True)
    c = customer("c1")
    inside, outside = await transactions(redis_client, lambda: customer_store.save_customer(redis_client, keys, c))
    assert not xadds(outside) and [len(xadds(t)) for t in inside] == [1]
    assert any(cmd.startswith("SET") for cmd in inside[0])  # the profile itself, same MULTI

    opened: list[Any] = []

    async def open_it() -> None:
        opened.append(await case_store.open_case(redis_client, keys, customer_id="c1", summary="no line", now=NOW,
                                                 actor="agent1001"))
    inside, outside = await transactions(redis_client, open_it)
    # the case and its event on the outbox, the change on the case-changes stream (the follow-up)
    assert not xadds(outside) and [len(xadds(t)) for t in inside] == [3]
    case_id = opened[0].id

    inside, outside = await transactions(redis_client, lambda: case_store.update_case(
        redis_client, keys, case_id, {"status": CaseStatus.CLOSED}, now=NOW + 1, actor="agent1001"))
    assert not xadds(outside) and [len(xadds(t)) for t in inside] == [3]

    stored = await customer_store.get_customer(redis_client, keys, "c1")
    assert stored is not None and stored.pin_hash
    inside, outside = await transactions(redis_client, lambda: customer_store.replace_pin_hash(
        redis_client, keys, "c1", stored.pin_hash or "", "$argon2id$new"))
    assert not xadds(outside) and [len(xadds(t)) for t in inside] == [1]

    inside, outside = await transactions(redis_client, lambda: customer_store.delete_customer(redis_client, keys, "c1"))
    assert not xadds(outside) and sum(len(xadds(t)) for t in inside) == 1
    [deletion] = [t for t in inside if xadds(t)]
    assert any(cmd.startswith("DEL") for cmd in deletion)

    kinds = [f["kind"] for _, f in await entries(redis_client, keys)]
    assert kinds == ["customer", "case", "case_event", "case", "case_event", "customer", "customer_deleted"]


async def test_case_events_carry_actor_kind_and_changed_fields_and_reach_postgres(
        redis_client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    keys = Keys("e", records=True)
    c = customer("c7")
    await customer_store.save_customer(redis_client, keys, c)
    case = await case_store.open_case(redis_client, keys, customer_id="c7", summary="router dead", now=NOW,
                                      severity=2, actor="import")
    await case_store.update_case(redis_client, keys, case.id, {"next_step": "send a technician"}, now=NOW + 10,
                                 actor="backoffice:crm")
    await case_store.update_case(redis_client, keys, case.id, {"next_step": "send a technician"}, now=NOW + 15,
                                 actor="agent1002")  # changes nothing: not recorded
    await case_store.update_case(redis_client, keys, case.id, {"status": CaseStatus.CLOSED, "next_step": ""},
                                 now=NOW + 20, actor="agent1002")
    await case_store.update_case(redis_client, keys, case.id, {"status": CaseStatus.OPEN}, now=NOW + 30,
                                 actor="system")
    queued = await entries(redis_client, keys)
    batch = decode(queued)
    assert not batch.dead
    events = [r.value[0] for r in batch.records if r.kind == "case_event"]
    assert [(e.actor, e.kind, dict(e.detail), e.at) for e in events] == [
        ("import", "opened", {"summary": "router dead", "still_needed": "", "next_step": "", "owner_agent": None,
                              "severity": 2, "status": "open"}, NOW),
        ("backoffice:crm", "updated", {"next_step": "send a technician"}, NOW + 10),
        ("agent1002", "closed", {"next_step": "", "status": "closed"}, NOW + 20),
        ("system", "reopened", {"status": "open"}, NOW + 30),
    ]
    # the entries are the sink's own (one builder, in the store)
    assert queued[0][1] == sink_customer_entry(c)
    assert queued[1][1] == sink_case_entry(case, NOW)

    sink = RecordSink(redis_client, pool, stream=keys.outbox(), dead_stream=keys.outbox_dead(), consumer="a",
                      block_ms=50)
    await sink.ensure_group()
    await sink.drain(10)
    rows = await pool.fetch("SELECT actor, kind, detail FROM case_events WHERE case_id = $1 ORDER BY at", case.id)
    assert [(r["actor"], r["kind"]) for r in rows] == [("import", "opened"), ("backoffice:crm", "updated"),
                                                      ("agent1002", "closed"), ("system", "reopened")]
    assert json.loads(rows[1]["detail"]) == {"next_step": "send a technician"}
    row = await pool.fetchrow("SELECT status, closed_at, next_step FROM cases WHERE id = $1", case.id)
    assert (row["status"], row["closed_at"], row["next_step"]) == ("open", None, "")
    assert await pool.fetchval("SELECT name FROM customers WHERE id = 'c7'") == c.name

    await customer_store.delete_customer(redis_client, keys, "c7")
    await sink.drain(10)
    assert await pool.fetchval("SELECT count(*) FROM customers WHERE id = 'c7'") == 0
    assert await pool.fetchval("SELECT count(*) FROM cases WHERE customer_id = 'c7'") == 0


async def test_without_a_system_of_record_nothing_is_queued(redis_client: aioredis.Redis) -> None:
    keys = Keys("n")
    await customer_store.save_customer(redis_client, keys, customer("c1"))
    case = await case_store.open_case(redis_client, keys, customer_id="c1", summary="x", now=NOW, actor="agent1001")
    await case_store.update_case(redis_client, keys, case.id, {"status": CaseStatus.CLOSED}, actor="agent1001")
    await customer_store.replace_pin_hash(redis_client, keys, "c1", customer("c1").pin_hash or "", "$new")
    await customer_store.delete_customer(redis_client, keys, "c1")
    assert await redis_client.exists(keys.outbox()) == 0


IMPORT = """
customers:
  - {id: cli-1, name: Zhao Min, phones: ["+8613800001001"], account_number: "70010001"}
  - {id: cli-2, name: Qian Hui, phones: ["+8613800001002"]}
cases:
  - {customer_id: cli-1, summary: "bill too high", severity: 2}
"""


async def test_the_cli_import_queues_customers_and_cases_when_postgres_is_configured(
        redis_url: str, redis_client: aioredis.Redis, tmp_path: Path) -> None:
    source = tmp_path / "customers.yaml"
    source.write_text(IMPORT)
    # the CLI writes Redis only (the server's sink moves the entries): no PostgreSQL needs to listen
    env = user_env(redis_url, IVRSERVER_REDIS__PREFIX="cli", IVRSERVER_POSTGRES__DSN="postgresql://u@127.0.0.1:9/db")
    result = await asyncio.to_thread(ivrserver, "customers", "import", str(source), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    batch = decode(await entries(redis_client, Keys("cli")))
    assert not batch.dead
    assert sorted(r.value[0].id for r in batch.records if r.kind == "customer") == ["cli-1", "cli-2"]
    [case] = [r.value[0] for r in batch.records if r.kind == "case"]
    [event] = [r.value[0] for r in batch.records if r.kind == "case_event"]
    assert (case.customer_id, case.summary) == ("cli-1", "bill too high")
    assert (event.case_id, event.actor, event.kind) == (case.id, "import", "opened")

    env = user_env(redis_url, IVRSERVER_REDIS__PREFIX="cli-plain")
    result = await asyncio.to_thread(ivrserver, "customers", "import", str(source), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert await redis_client.exists(Keys("cli-plain").customer("cli-1")) == 1
    assert await redis_client.exists(Keys("cli-plain").outbox()) == 0
