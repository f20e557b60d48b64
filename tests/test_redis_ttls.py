"""Redis keeps only what is hot (issue 16): after a realistic run, every key either expires or is
state on the named list below, with the reason it may not expire.

The run is an in-process IvrServer on a real Redis (and, for the "postgres" case, a real
PostgreSQL behind `postgres.dsn`): a customer import through the real CLI, an agent's failed and
successful login, agent state from a queue event, FastAGI calls from known and unknown callers (the
peer scripted the way res_agi.c talks; the calls' AMI events fed to the server's own AMI client, as
tests/record/test_app_records.py does: no Asterisk here), a screen-pop ringing an agent, a case, a
note, a callback requested and one cancelled, a wrong PIN, an audited read. Then every key is
walked (SCAN): one without a TTL that is not on `STATE_KEYS` fails the test.

With PostgreSQL, contacts, timelines, IVR paths and finished callbacks expire after `redis.hot_days`
(PostgreSQL keeps them for its own retention) and the audit stream is trimmed by age; Redis-only,
they keep `redis.retention_days` (callbacks: forever) and the audit stream is never trimmed (Redis
is their only store).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.store.audit import AuditLog
from ivrserver.store.keys import Keys
from tests.cli_harness import ivrserver, user_env
from tests.conftest import TEST_PEPPER_TEXT
from tests.inprocess import (
    REPO,
    ScriptedCaller,
    agi_headers,
    eventually,
    hotline_menus,
    migrated,
    running,
    server_settings,
    stop,
)

DAY = 86400
HOT_DAYS = 7        # redis.hot_days of the run (not the default, so that the test sees it is used)
RETENTION_DAYS = 90  # redis.retention_days of the run

# Keys that may live without a TTL (pattern after the prefix, matched whole) and why. Nothing else.
STATE_KEYS: dict[str, str] = {
    r"customer:[^:]+": "a customer's profile lives in Redis until deleted: the caller snapshot reads it",
    r"customers": "the index of every customer (listing, export)",
    r"phone:.+": "caller ID -> customer, lives and dies with the customer (snapshot, routing)",
    r"account:.+": "account number -> customer, lives and dies with the customer (PIN identification)",
    r"case:[^:]+": "a case lives in Redis with its customer: open cases are on the snapshot and pop",
    r"opencases:.+": "a customer's open cases (snapshot, routing to the case owner)",
    r"cases:.+": "every case of a customer: the index of the case records",
    r"seq:case": "the case id counter: must never restart (ids would repeat)",
    r"caseevents:[^:]+": "a case's latest events (at most 200): live and die with the case",
    r"casesdue": "active cases by due time (supervisors' overdue list): state of the cases",
    r"caseshanded:.+": "cases handed to a back office, until closed (its listing)",
    r"casechanges": "case changes on their way to webhooks and notices: the follow-up deletes what every "
                    "handler took",
    r"casechanges:dead": "case changes the follow-up could not read: kept for a person to look at",
    r"compensation:[^:]+": "a compensation lives with its case (PostgreSQL keeps it too)",
    r"compensations:(case:.+|requested)": "a case's compensations; those waiting for a supervisor",
    r"seq:agentevent:.+": "an agent's pop numbering: clients resume from the last number they saw",
    r"epoch:agentevent:.+": "the id of that numbering, replaced only when the counter restarts",
    r"agentstate:.+": "an agent's live state (ready, ringing, on a call, wrap-up, paused)",
    r"agentstates": "the index of live agent states (routing reads every agent's state at once)",
    r"unacked": "the screen-pop backlog: pops not yet acknowledged (an entry leaves on ack)",
    r"callback:[^:]+": "a callback job of the scheduler until it finishes (Redis-only a finished one stays: "
                       "the only copy; with a dsn it goes to PostgreSQL and expires after hot_days)",
    r"callbacks:(due|leased|leaseinfo|all)": "the callback scheduler's queues, leases and index",
    r"notices:sms:(due|leased)": "held notice SMS waiting for the customer's hours, and those being sent: an "
                                 "entry leaves when its SMS is sent or cancelled",
    r"outbox": "records on their way to PostgreSQL: the sink deletes what it wrote",
    r"outbox:dead": "outbox entries the sink could not write: kept for a person to look at",
    r"record:restored": "marker that Redis holds the system of record's data (missing: warm-up)",
    r"audit": "one stream: Redis-only the only copy (kept); with PostgreSQL trimmed to hot_days by age",
    r"announcement:[^:]+": "an entry announcement a supervisor switched on, until switched off",
    r"wb:waiting": "callers waiting in a queue now (wallboard): an entry leaves with its caller, and the "
                   "list is reconciled with Asterisk's at every AMI login",
}

# Key families the run must have produced (else the walk proves little), and which of them are
# the hot copies of the system of record's data: TTL at most hot_days with PostgreSQL.
PRODUCED = ("customer", "phone", "account", "case", "opencases", "seq:case", "contact", "timeline", "linkedid",
            "callowner", "callctx", "ivrpath", "ivrcalls", "agentstate", "agentevents", "unacked", "popclaim",
            "access", "grantees", "session", "loginfail-addr", "loginfail-agent", "loginok", "pinfail",
            "callback", "callbacks:all", "audit")
HOT = ("contact", "timeline", "ivrpath", "ivrcalls")

def settings_for(redis_url: str, tmp_path: Path, dsn: str) -> config.Settings:
    return server_settings(
        redis_url, hotline_menus(tmp_path / "menus"),
        redis={"history_write_delay": 0.05, "hot_days": HOT_DAYS, "retention_days": RETENTION_DAYS},
        callbacks={"calling_from": "00:00", "calling_until": "24:00"},
        postgres={"dsn": dsn}, security={"pepper": TEST_PEPPER_TEXT}, instance="ttl-test")


# --- the run --------------------------------------------------------------------------------------

def channel_of(n: int, number: str) -> dict[str, str]:
    uid = f"{time.time():.0f}.{n}"
    return {"Channel": f"PJSIP/callers-{n:08d}", "CallerIDNum": number, "Uniqueid": uid, "Linkedid": uid}


async def call(srv: IvrServer, n: int, number: str, key: bytes) -> dict[str, str]:
    """One caller: presses `key` at the greeting and stays until the call leaves the menu (then the
    dialplan would take it to a queue) or hangs up at the fourth prompt. Hangs up the channel's
    AMI side only later (`hang_up`), so that a pop can ring an agent first."""
    channel = channel_of(n, number)
    srv.ami.feed({"Event": "Newchannel", **channel})
    await ScriptedCaller(srv.fastagi.port, agi_headers(channel["Uniqueid"], n, number, name="Caller"),
                         key=key.decode(), answered=4).run()
    return channel


def hang_up(srv: IvrServer, channel: dict[str, str]) -> None:
    srv.ami.feed({"Event": "Hangup", "Cause": "16", "Cause-txt": "Normal Clearing", **channel})


async def ring_agent(srv: IvrServer, channel: dict[str, str], context_id: str, agent: str) -> None:
    """The queue rings `agent` for the call (AgentCalled with the call's context id), who answers
    and hangs up: a screen-pop, its grant and its phase updates."""
    leg = {"DestChannel": f"PJSIP/{agent}-00000001", "DestUniqueid": channel["Uniqueid"] + "1",
           "Queue": "ivr-general", "Interface": f"PJSIP/{agent}", "MemberName": agent,
           "ChanVariable": f"IVR_CONTEXT_ID={context_id}"}
    srv.ami.feed({"Event": "AgentCalled", **channel, **leg})
    srv.ami.feed({"Event": "AgentConnect", "HoldTime": "3", "RingTime": "2", **channel, **leg})
    srv.ami.feed({"Event": "Hangup", "Cause": "16", "Cause-txt": "Normal Clearing",
                  "Channel": leg["DestChannel"], "Uniqueid": leg["DestUniqueid"], "Linkedid": channel["Linkedid"]})


async def import_customers(redis_url: str, dsn: str) -> None:
    """`ivrserver customers import scripts/demo-customers.yaml`, as an operator runs it."""
    env = user_env(redis_url, IVRSERVER_SECURITY__PEPPER=TEST_PEPPER_TEXT, IVRSERVER_POSTGRES__DSN=dsn)
    result = await asyncio.to_thread(ivrserver, "customers", "import", str(REPO / "scripts" / "demo-customers.yaml"),
                                     env=env)
    assert result.returncode == 0, result.stdout + result.stderr


async def realistic_run(srv: IvrServer, redis: aioredis.Redis, redis_url: str, dsn: str) -> None:
    await import_customers(redis_url, dsn)
    base = f"http://127.0.0.1:{srv.web_port}"
    async with aiohttp.ClientSession() as http:
        # logins: a wrong password (the lockout counters), then the right one (a session)
        async with http.post(f"{base}/api/v1/login", json={"agent": "agent1001", "password": "wrong"}) as r:
            assert r.status == 401, await r.text()
        async with http.post(f"{base}/api/v1/login", json={"agent": "agent1001", "password": "agent1001"}) as r:
            assert r.status == 200, await r.text()
            auth = {"Authorization": f"Bearer {(await r.json())['token']}"}
        # agent state from the queue
        srv.ami.feed({"Event": "QueueMemberStatus", "Queue": "ivr-general", "MemberName": "agent1001",
                      "Interface": "PJSIP/agent1001", "Status": "1", "Paused": "0", "InCall": "0"})
        await eventually(lambda: redis.exists(srv.keys.agent_state("agent1001")), what="agent state")
        # calls: a VIP and a repeat caller (known: timelines), unknown callers; '0' asks for an agent
        vip = await call(srv, 1, "15550001", b"0")
        known = await call(srv, 2, "15550002", b"1")
        unknown = await asyncio.gather(*(call(srv, n, f"1555{n:04d}", b"0" if n % 2 else b"1")
                                         for n in range(3, 9)))
        contexts = await eventually(lambda: _contexts(redis, srv.keys), what="a call context")
        vip_ctx = next((c for c in contexts if c.get("customer_id") == "c-vip-1"), contexts[0])
        await ring_agent(srv, vip, vip_ctx["id"], "agent1001")
        for channel in (vip, known, *unknown):
            hang_up(srv, channel)
        await eventually(lambda: redis.exists(srv.keys.unacked_pops()), what="a screen-pop")
        contact_id = await eventually(lambda: redis.get(srv.keys.call_by_linkedid(vip["Linkedid"])),
                                      what="the VIP call's contact")
        await eventually(lambda: redis.exists(srv.keys.timeline("c-vip-1")), what="the VIP's timeline")
        # the agent works the call: a note, a case, the customer read (audited), callbacks
        async with http.post(f"{base}/api/v1/contacts/{contact_id}/notes", headers=auth,
                             json={"notes": "line checked", "disposition": "resolved"}) as r:
            assert r.status == 200, await r.text()
        async with http.post(f"{base}/api/v1/cases", headers=auth,
                             json={"customer_id": "c-vip-1", "summary": "slow line"}) as r:
            assert r.status == 201, await r.text()
        async with http.get(f"{base}/api/v1/customers/c-vip-1/history", headers=auth) as r:
            assert r.status == 200, await r.text()
        ids = []
        for _ in range(2):
            async with http.post(f"{base}/api/v1/callbacks", headers=auth, json={
                    "customer_id": "c-vip-1", "number": "15550001", "at": "+1h", "timezone": "UTC",
                    "allowed_from": "00:00", "allowed_until": "24:00"}) as r:
                assert r.status == 201, await r.text()
                ids.append((await r.json())["id"])
        async with http.delete(f"{base}/api/v1/callbacks/{ids[1]}", headers=auth) as r:
            assert r.status == 200, await r.text()
    # a caller's wrong PIN (the PIN lockout counter)
    assert await srv.customers.identify("80010001", "0000") is None


async def _contexts(redis: aioredis.Redis, keys: Keys) -> list[dict[str, Any]]:
    found = [k async for k in redis.scan_iter(match=keys.call_context("*"))]
    return [json.loads(raw) for raw in await redis.mget(found) if raw] if found else []


# --- the walk -------------------------------------------------------------------------------------

def family(name: str, prefix: str) -> str:
    rest = name.removeprefix(prefix + ":")
    for two in ("seq:case", "callbacks:all", "callback:placed", "outbox:dead", "record:restored"):
        if rest == two or rest.startswith(two + ":"):
            return two
    return rest.split(":", 1)[0]


def state_reason(name: str, prefix: str) -> str | None:
    rest = name.removeprefix(prefix + ":")
    return next((why for pattern, why in STATE_KEYS.items() if re.fullmatch(pattern, rest)), None)


async def walk(redis: aioredis.Redis, prefix: str) -> dict[str, int]:
    """Every key of the database with its TTL in seconds (-1: none)."""
    names = [k async for k in redis.scan_iter(match="*", count=1000)]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.ttl(name)
        ttls = await pipe.execute()
    return dict(zip(names, (int(t) for t in ttls), strict=True))


def without_ttl_and_unlisted(ttls: dict[str, int], prefix: str) -> list[str]:
    return sorted(k for k, ttl in ttls.items() if ttl == -1 and state_reason(k, prefix) is None)


async def run_and_walk(srv: IvrServer, redis: aioredis.Redis, redis_url: str, dsn: str) -> dict[str, int]:
    await realistic_run(srv, redis, redis_url, dsn)
    if dsn:
        await eventually(lambda: _outbox_drained(redis, srv.keys), what="outbox drained")
    await srv.tracker.close()  # contact writes still waiting for their deferred write
    return await walk(redis, srv.keys.prefix)


async def _outbox_drained(redis: aioredis.Redis, keys: Keys) -> bool:
    return int(await redis.xlen(keys.outbox())) == 0


def check(ttls: dict[str, int], prefix: str, *, hot_limit: int | None, hot_floor: int | None) -> None:
    unlisted = without_ttl_and_unlisted(ttls, prefix)
    assert not unlisted, f"keys without a TTL that are not named state keys: {unlisted}"
    seen = {family(k, prefix) for k in ttls}
    missing = [f for f in PRODUCED if f not in seen]
    assert not missing, f"the run did not produce {missing} (seen: {sorted(seen)})"
    for name, ttl in ttls.items():
        if family(name, prefix) in HOT:
            assert ttl > 0, name
            if hot_limit is not None:
                # a contact expires at the whole second after started_at + hot_days (EXAT ceil), and
                # TTL rounds to the nearest second: walked within 0.5 s of a call's start, 1 s more
                assert ttl <= hot_limit + 1, f"{name}: TTL {ttl} s, more than redis.hot_days"
            if hot_floor is not None:
                assert ttl > hot_floor, f"{name}: TTL {ttl} s, Redis-only keeps redis.retention_days"


async def callback_ttls(redis: aioredis.Redis, keys: Keys, ttls: dict[str, int]) -> dict[str, int]:
    """state → TTL of the run's callback records (one cancelled, one waiting)."""
    names = [k for k in ttls if re.fullmatch(re.escape(keys.callback("")) + r"[^:]+", k)]
    records = [json.loads(raw) for raw in await redis.mget(names)] if names else []
    return {r["state"]: ttls[name] for name, r in zip(names, records, strict=True)}


async def test_with_postgres_every_key_expires_or_is_named_state_and_hot_copies_keep_hot_days(
        redis_url: str, redis_client: aioredis.Redis, empty_db: str, tmp_path: Path) -> None:
    await migrated(empty_db)
    srv, task = await running(settings_for(redis_url, tmp_path, empty_db))
    try:
        assert srv.keys.records
        ttls = await run_and_walk(srv, redis_client, redis_url, empty_db)
        check(ttls, srv.keys.prefix, hot_limit=HOT_DAYS * DAY, hot_floor=None)
        callbacks = await callback_ttls(redis_client, srv.keys, ttls)
        assert 0 < callbacks.pop("cancelled") <= HOT_DAYS * DAY  # finished: PostgreSQL has it
        assert set(callbacks.values()) == {-1}  # waiting: scheduler state
    finally:
        await stop(srv, task)


async def test_redis_only_every_key_expires_or_is_named_state_and_keeps_retention_days(
        redis_url: str, redis_client: aioredis.Redis, tmp_path: Path) -> None:
    srv, task = await running(settings_for(redis_url, tmp_path, ""))
    try:
        assert not srv.keys.records
        ttls = await run_and_walk(srv, redis_client, redis_url, "")
        check(ttls, srv.keys.prefix, hot_limit=RETENTION_DAYS * DAY, hot_floor=HOT_DAYS * DAY)
        assert set((await callback_ttls(redis_client, srv.keys, ttls)).values()) == {-1}  # the only copy
        assert srv.keys.outbox() not in ttls
    finally:
        await stop(srv, task)


def test_the_named_state_keys_do_not_cover_what_must_expire() -> None:
    """The list names state, not families: a contact, a timeline, a path, a call context, a session,
    a pop's stream or grant, a lockout counter, a placed marker would all have to expire."""
    for name in ("contact:k1", "timeline:c1", "ivrpath:1.2", "ivrcalls:hotline", "callctx:abc", "linkedid:1.2",
                 "callowner:1.2", "session:ab12", "agentevents:agent1001", "access:agent1001", "grantees:c1",
                 "popclaim:agent1001:1.2", "loginfail:agent1001:127.0.0.1", "loginfail-addr:127.0.0.1",
                 "loginok:agent1001:127.0.0.1", "pinfail:80010001", "callback:placed:cb1:1"):
        assert state_reason(f"ivr:{name}", "ivr") is None, name
    assert state_reason("ivr:customer:c1", "ivr") and state_reason("ivr:callback:cb1", "ivr")


# --- the audit stream ----------------------------------------------------------------------------

async def _old_entry(redis: aioredis.Redis, keys: Keys, days: float) -> str:
    server_ms = int(float((await redis.time())[0]) * 1000)
    return str(await redis.xadd(keys.audit(), {"who": "old"}, id=f"{server_ms - int(days * DAY * 1000)}-0"))


async def test_with_postgres_the_audit_stream_keeps_hot_days_of_entries(redis_client: aioredis.Redis) -> None:
    keys = Keys("a", records=True)
    old = await _old_entry(redis_client, keys, 8)
    young = await _old_entry(redis_client, keys, 6)
    new = await AuditLog(redis_client, keys, hot_days=7).append(
        who="agent1001", role="agent", what="customer.read", target="c1", why="pop", allowed=True, at=time.time())
    ids = [i for i, _ in await redis_client.xrange(keys.audit())]
    assert ids == [young, new] and old not in ids
    assert await redis_client.ttl(keys.audit()) == -1  # trimmed, not expired: the rest stays readable
    assert await redis_client.xlen(keys.outbox()) == 1  # PostgreSQL gets the new entry


async def test_redis_only_the_audit_stream_is_never_trimmed(redis_client: aioredis.Redis) -> None:
    keys = Keys("b")
    old = await _old_entry(redis_client, keys, 4000)
    await AuditLog(redis_client, keys, hot_days=1).append(
        who="agent1001", role="agent", what="customer.read", target="c1", why="pop", allowed=True, at=time.time())
    assert [i for i, _ in await redis_client.xrange(keys.audit())][:1] == [old]
    assert await redis_client.xlen(keys.audit()) == 2


# --- the setting ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "days"), [
    ({}, 365),
    ({"postgres": {"dsn": "postgresql://u@127.0.0.1/db"}}, 30),
    ({"redis": {"hot_days": 3, "retention_days": 40}}, 40),
    ({"redis": {"hot_days": 3, "retention_days": 40}, "postgres": {"dsn": "postgresql://u@127.0.0.1/db"}}, 3),
])
def test_redis_keeps_hot_days_only_when_records_go_to_postgres(data: dict[str, Any], days: int) -> None:
    assert config.from_mapping(data).redis_keep_days == days


@pytest.mark.parametrize("key", ["hot_days", "retention_days"])
def test_redis_days_must_be_at_least_one(key: str) -> None:
    with pytest.raises(config.ConfigError, match=rf"redis\.{key}: must be at least 1, got 0"):
        config.from_mapping({"redis": {key: 0}})
