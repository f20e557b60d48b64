"""Reports from REAL calls (issue 20 §5): SIPp callers → Asterisk 22 → ivrserver (FastAGI menu, AMI
contact tracking, callback scheduler) → Redis outbox → the record sink → PostgreSQL → hourly rollups
→ GET /api/v1/reports/<name> as a supervisor. Nothing of ours is replaced by a double.

A known mix of calls to the hotline (the shipped menu without business hours), one after another:

| call | digits | what happens | funnel exit (node) | contact outcome / queue |
|---|---|---|---|---|
| self-served 1 | 1 | known number hears its balance, hangs up | self_served (after_balance)* | self_served |
| self-served 2 | 3 3 | faults → outage info → the IVR says goodbye | self_served (outage_info) | self_served |
| queued 1 | 3 1 | faults queue, agent1006's phone answers | queue (faults) | answered, faults |
| queued 2 | 0 | general queue, agent1007's phone answers | queue (main) | answered, general |
| abandoned 1, 2 | 0 | general queue, nobody free, caller hangs up | queue (main) | abandoned, general |
| menu hang-up 1 | - | hangs up during the welcome | caller_hangup (main) | abandoned, no queue |
| menu hang-up 2 | 4 | plans, hangs up there | caller_hangup (plans) | abandoned, no queue |
| callback | 3 2 | faults → call me back: agent1006, the customer | callback (faults) | callback_requested** |

*recorded as the caller hanging up at after_balance; counted as self-served since a lookup had
answered them (menu_engine.counted_exit), as the contact record says.
**the callback placed for it is a contact of its own (kind callback, answered).

Queues carry the name the menus and the wallboard use (`general`, not Asterisk's `ivr-general`) in the
contact records, the queues report and its filter; the inbound call that asked for the callback is
`callback_requested`, counted by the callbacks report (requested 1) and abandoned nowhere.

Then the sink is drained, the hours are rolled with the same `record.reports.roll` the runtime's
upkeep calls, and every figure of the ivr, selfservice, queues and callbacks reports (today, UTC) is
asserted exactly, plus one CSV download.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
import yaml

from ivrserver import config
from ivrserver.devstack.asterisk import LocalAsterisk
from ivrserver.domain.model import ContactPreferences, Customer
from ivrserver.record import reports as report_rollups
from ivrserver.store import customers
from tests.conftest import free_port
from tests.inprocess import migrated
from tests.integration.conftest import Phones
from tests.integration.test_ivrserver_calls import REPO, Ivr, running, wait_until, write_menus, write_routing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SUPERVISOR = "agent1010"  # scripts/demo-agents.yaml: supervisor, password = its id
ALL_DAY = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")
BALANCE = Customer(id="c-rep-bal", name="Li Lei", phones=("15550101",), attributes={"balance": "42"})
CALL_ME = Customer(id="c-rep-cb", name="Huang Zhong", phones=("15550102",), preferences=ALL_DAY)


def settings_for(asterisk: LocalAsterisk, redis_url: str, tmp: Path, dsn: str) -> config.Settings:
    write_menus(tmp / "menus")
    write_routing(tmp / "routing.yaml")
    agents = yaml.safe_load((REPO / "scripts" / "demo-agents.yaml").read_text())
    agents["wrap_up_seconds"] = 1  # agent1006 answers a queue call, then the callback
    (tmp / "agents.yaml").write_text(yaml.safe_dump(agents, sort_keys=False))
    ports = asterisk.ports
    return config.from_mapping({
        "redis": {"url": redis_url, "prefix": f"rf{free_port()}"},
        "ami": {"host": "127.0.0.1", "port": ports.ami_port, "secret": asterisk.ami_secret,
                "ping_interval": 1.0, "silence_timeout": 6.0, "reconnect_max_delay": 1.0},
        "agi": {"host": ports.agi_host, "port": ports.agi_port, "drain_timeout": 2.0},
        "web": {"port": free_port()},
        "asterisk": {"config_dir": str(asterisk.etc_dir), "sounds_dir": str(asterisk.sounds_dir)},
        "menus": {"dir": str(tmp / "menus"), "watch": False},
        "routing": {"agents_file": str(tmp / "agents.yaml"), "policy_file": str(tmp / "routing.yaml")},
        "callbacks": {"poll_interval": 0.1, "calling_from": "00:00", "calling_until": "24:00",
                      "agent_ring_seconds": 10, "grace_seconds": 1},
        "postgres": {"dsn": dsn, "write_interval": 0.1},
        "reports": {"timezone": "UTC"},
        "instance": "rf-a",
    })


@pytest.fixture
async def ivr(fresh_asterisk: LocalAsterisk, redis_url: str, redis_client: aioredis.Redis, empty_db: str,
              tmp_path: Path) -> AsyncIterator[Ivr]:
    await migrated(empty_db)
    async with running(settings_for(fresh_asterisk, redis_url, tmp_path, empty_db)) as server:
        yield Ivr(server, redis_client, tmp_path / "menus")


async def counted(pool: asyncpg.Pool, sql: str, n: int) -> bool:
    return int(await pool.fetchval(sql)) == n


async def reports(base: str, day: str, *names: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post("/api/v1/login", json={"agent": SUPERVISOR, "password": SUPERVISOR}) as r:
            assert r.status == 200, await r.text()
        out: dict[str, Any] = {}
        for name in names:
            report, _, queue = name.partition("?queue=")
            params = {"from": day, "to": day, **({"queue": queue} if queue else {})}
            async with http.get(f"/api/v1/reports/{report}", params=params) as r:
                assert r.status == 200, await r.text()
                out[name] = await r.json()
        async with http.get("/api/v1/reports/ivr", params={"from": day, "to": day, "format": "csv",
                                                           "table": "nodes"}) as r:
            assert r.status == 200 and r.content_type == "text/csv", await r.text()
            out["csv"] = await r.text()
        return out


async def test_a_known_mix_of_real_calls_gives_exactly_the_expected_figures(
        ivr: Ivr, phones: Phones, empty_db: str) -> None:
    for c in (BALANCE, CALL_ME):
        await customers.save_customer(ivr.redis, ivr.keys, c)
    day = datetime.now(UTC).date().isoformat()

    # -- self-served ------------------------------------------------------------------------------
    r = await phones.call("1", number="15550101", hold_ms=5000)  # hears the balance, hangs up
    assert r.ok, r.describe()
    r = await phones.call("33", number="15559101")  # outage info, the IVR says goodbye
    assert r.ok, r.describe()
    # -- queued and answered ----------------------------------------------------------------------
    agent = await phones.agent(1006, ring_ms=300, hold_ms=1000)  # faults
    await ivr.agent_ready("agent1006")
    r = await phones.call("31", number="15559102")
    assert r.ok, r.describe()
    assert (await agent.wait()).ok
    # A member whose phone is gone must not be rung (a stale INVITE would reach its next phone).
    await phones.asterisk.set_paused(1006, True)
    agent = await phones.agent(1007, ring_ms=300, hold_ms=1000)  # general
    await ivr.agent_ready("agent1007")
    r = await phones.call("0", number="15559103")
    assert r.ok, r.describe()
    assert (await agent.wait()).ok
    # -- abandoned in the queue (every member paused again: nobody answers) ------------------------
    await phones.asterisk.set_paused(1007, True)
    for n in (104, 105):
        r = await phones.call("0", number=f"15559{n}", hold_ms=3000)
        assert r.ok, r.describe()
    # -- hung up inside the menu --------------------------------------------------------------------
    r = await phones.call("", number="15559106", hold_ms=1000)
    assert r.ok, r.describe()
    r = await phones.call("4", number="15559107", hold_ms=1500)
    assert r.ok, r.describe()
    # -- a callback requested in the IVR, placed agent-first and answered -------------------------
    agent = await phones.agent(1006, ring_ms=300, hold_ms=2000)
    answering = await phones.customer(ring_ms=300, hold_ms=1000)
    await ivr.agent_ready("agent1006")
    r = await phones.call("32", number="15550102")
    assert r.ok, r.describe()
    assert (await agent.wait()).ok
    assert (await answering.wait()).ok

    # -- drain the sink, roll the hours -------------------------------------------------------------
    pool = await asyncpg.create_pool(empty_db, min_size=1, max_size=2)
    try:
        await drained(ivr, pool)
        async with pool.acquire() as conn:
            assert await report_rollups.roll(conn) >= 3  # paths, contacts and callbacks of this hour
            assert await conn.fetchval("SELECT count(*) FROM report_dirty") == 0
        contacts = [(r["number"], r["kind"], r["outcome"], r["queue"]) for r in await pool.fetch(
            "SELECT number, kind, outcome, queue FROM contacts ORDER BY started_at")]
    finally:
        await pool.close()
    assert contacts == [
        ("15550101", "inbound", "self_served", None), ("15559101", "inbound", "self_served", None),
        ("15559102", "inbound", "answered", "faults"), ("15559103", "inbound", "answered", "general"),
        ("15559104", "inbound", "abandoned", "general"), ("15559105", "inbound", "abandoned", "general"),
        ("15559106", "inbound", "abandoned", None), ("15559107", "inbound", "abandoned", None),
        ("15550102", "inbound", "callback_requested", None), ("15550102", "callback", "answered", None)]

    got = await reports(ivr.base, day, "ivr", "selfservice", "queues", "callbacks", "agents",
                        "queues?queue=general", "queues?queue=ivr-general")
    for name in ("ivr", "selfservice", "queues", "callbacks", "agents"):
        assert got[name]["pending_since"] is None, name  # every hour rolled
    assert_ivr(got["ivr"], got["csv"])
    assert_selfservice(got["selfservice"], day)
    assert_queues(got["queues"])
    for asked in ("general", "ivr-general"):  # the wallboard's name, and Asterisk's for the same queue
        assert [(r["queue"], r["offered"], r["abandoned"]) for r in got[f"queues?queue={asked}"]["tables"][
            "queues"]["rows"]] == [("general", 3, 2), ("*", 3, 2)], asked
    assert_callbacks(got["callbacks"])
    agents = {r["agent"]: r["calls"] for r in got["agents"]["tables"]["agents"]["rows"]}
    assert agents == {"agent1006": 2, "agent1007": 1}  # the faults call and the callback; the general call


async def drained(ivr: Ivr, pool: asyncpg.Pool) -> None:
    """Every record of the mix is in PostgreSQL in its final form and the outbox is empty."""
    for sql, n, what in (
            ("SELECT count(*) FROM ivr_paths", 9, "9 IVR paths"),
            ("SELECT count(*) FROM contacts WHERE ended_at IS NOT NULL", 10, "10 ended contacts"),
            ("SELECT count(*) FROM callbacks_finished WHERE state = 'done'", 1, "the callback done")):
        await wait_until(lambda sql=sql, n=n: counted(pool, sql, n), timeout=30, what=what)

    async def empty() -> bool:
        return int(await ivr.redis.xlen(ivr.keys.outbox())) == 0
    await wait_until(empty, timeout=30, what="the outbox drained")


NODES = {  # node: (entries, self_served, queue, callback, caller_hangup); agent/timed_out/ended/unfinished 0
    "main": (9, 0, 3, 0, 1),
    "faults": (3, 0, 1, 1, 0),
    "after_balance": (1, 1, 0, 0, 0),  # heard the balance, hung up: served
    "balance": (1, 0, 0, 0, 0),
    "outage_info": (1, 1, 0, 0, 0),
    "plans": (1, 0, 0, 0, 1),
}


def assert_ivr(body: dict[str, Any], nodes_csv: str) -> None:
    tables = body["tables"]
    nodes = {r["node"]: r for r in tables["nodes"]["rows"]}
    assert set(nodes) == set(NODES)
    for name, (entries, served, queue, callback, hangup) in NODES.items():
        r = nodes[name]
        assert (r["entries"], r["exit_self_served"], r["exit_queue"], r["exit_callback"], r["exit_caller_hangup"],
                r["exit_agent"], r["exit_timed_out"], r["exit_ended"], r["exit_unfinished"]) == (
            entries, served, queue, callback, hangup, 0, 0, 0, 0), name
    [exits] = tables["exits"]["rows"]
    assert {k: v for k, v in exits.items() if k != "average_seconds"} == {
        "menu": "hotline", "calls": 9, "self_served": 2, "queue": 4, "agent": 0, "callback": 1,
        "caller_hangup": 2, "timed_out": 0, "ended": 0, "unfinished": 0, "self_service_share": round(2 / 7, 4)}
    assert exits["average_seconds"] > 0
    assert [(r["depth"], r["reached"], r["hung_up"]) for r in tables["depth"]["rows"]] == [
        (1, 9, 1), (2, 5, 1), (3, 2, 0)]
    # The CSV download: the same rows, busiest node first.
    rows = list(csv.DictReader(io.StringIO(nodes_csv)))
    assert [(r["menu"], r["node"], r["entries"], r["exit_self_served"], r["exit_queue"], r["exit_callback"],
             r["exit_caller_hangup"]) for r in rows] == [
        ("hotline", name, *(str(v) for v in NODES[name]))
        for name in ("main", "faults", "after_balance", "balance", "outage_info", "plans")]
    assert all(r["exit_agent"] == r["exit_timed_out"] == r["exit_ended"] == r["exit_unfinished"] == "0" for r in rows)


def assert_selfservice(body: dict[str, Any], day: str) -> None:
    share = round(2 / 7, 4)  # self-served ÷ (self-served + queue + callback)
    expected = {"calls": 9, "self_served": 2, "human": 5, "share": share, "target": 0.78, "below_target": True}
    assert body["tables"]["days"]["rows"] == [{"day": day, "menu": "*", **expected},
                                              {"day": day, "menu": "hotline", **expected}]
    assert body["tables"]["menus"]["rows"] == [{"menu": "hotline", **expected}, {"menu": "*", **expected}]


def assert_queues(body: dict[str, Any]) -> None:
    queues = {r["queue"]: r for r in body["tables"]["queues"]["rows"]}
    figures = {name: (r["offered"], r["answered"], r["abandoned"], r["abandon_rate"], r["service_level"])
               for name, r in queues.items()}
    assert figures == {"faults": (1, 1, 0, 0.0, 1.0), "general": (3, 1, 2, 0.6667, 0.3333),
                       "*": (4, 2, 2, 0.5, 0.5)}  # the callback request is no abandoned call
    for name, r in queues.items():  # every wait under 5 s: the first bin, read at its middle
        assert r["wait_p50"] == 2.5 and r["service_level_seconds"] == 20, name
        assert 0.5 <= r["talk_average"] < 5, name  # the agents' phones hold 1 s
    assert queues["faults"]["abandoned_wait_p50"] is None
    assert queues["general"]["abandoned_wait_p50"] == 2.5
    assert sum(r["offered"] for r in body["tables"]["days"]["rows"]) == 4


def assert_callbacks(body: dict[str, Any]) -> None:
    [row] = body["tables"]["kinds"]["rows"]
    assert {k: row[k] for k in ("kind", "requested", "placed", "answered", "retried", "failed", "cancelled",
                                "answer_rate")} == {
        "kind": "callback", "requested": 1, "placed": 1, "answered": 1, "retried": 0, "failed": 0, "cancelled": 0,
        "answer_rate": 1.0}
    assert row["late_average"] is not None and row["late_average"] < 60  # placed at once (a free agent)
