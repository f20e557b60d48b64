"""The field notes' VIP story end to end on real calls (issue 18, "Done when"): Asterisk 22 + SIPp
phones + Redis + PostgreSQL + a real webhook receiver + the in-process IvrServer `ivrserver run`
builds, with a webhooks.yaml and a back-office tokens file. Nothing of ours is replaced.

1. The VIP calls the hotline from his phone (identified by caller ID) and goes straight to his
   account manager, agent1001, whose phone rings with the pop. Over the agent's REST session,
   during the call: the complaint is recorded with what is still needed, the partner is asked from
   the desk (cancel_partner_charge → waiting_backoffice), compensation within the agent's authority
   is granted, one above it is requested, refused to the agent and approved by a supervisor. The
   receiver (signature checked, raw hits counted, de-duplicated by Idempotency-Key) gets each of
   these changes once.
2. The partner's back office (a scoped token) posts its result and resolves the case → the VIP's
   phone rings once, inside his allowed hours, Asterisk plays the synthesized result, he presses 1
   → agent1001's phone rings with the case on the pop; the case's events say heard and pressed_1;
   PostgreSQL has the events with their actors and the compensation rows; the contact history has
   the notification.
3. Nobody is called who did not want it: outside the customer's hours the notice waits for the
   window; do-not-call never rings; a case reopened before its notice is due cancels it; a
   customer who refused case-result notices gets nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.domain.callbacks import CallbackState
from ivrserver.domain.model import ContactPreferences, Customer, Tier
from ivrserver.domain.notices import NoticeState, notice_id
from ivrserver.store import customers
from ivrserver.web.backoffice import digest
from tests.conftest import free_port
from tests.inprocess import migrated
from tests.integration import test_callback_calls as cbc
from tests.integration.test_ivrserver_calls import running, wait_until
from tests.integration.test_notice_calls import _read_from
from tests.integration.test_screen_pop_calls import AgentSocket
from tests.test_webhooks_delivery import SECRET, Receiver, status

pytestmark = pytest.mark.integration

# the callback tests' fixtures: a fresh Asterisk, SIPp phones, an AMI witness, settings on free ports
stack = cbc.stack
watch = cbc.watch
cb_phones = cbc.cb_phones

PARTNER = "pb-" + "5e1f0c" * 8  # the partner's back office: cases:read + cases:write
VIP_NUMBER = "15550041"
OWNER = "agent1001"  # the VIP's account manager, who takes his call and owns his case
SUPERVISOR = "agent1010"
RESULT = "Charge cancelled"  # short: the phone presses 1 1.5 s after answering, when "press 1" plays


# ----------------------------------------------------------------------------- the stack

def story_settings(stack: cbc.Stack, dsn: str, receiver: Receiver) -> config.Settings:
    """The callback tests' settings (FastAGI on the port the dialplan calls, calling hours all day,
    agents with 1 s wrap-up) plus PostgreSQL, the partner's scoped token and the webhooks file."""
    tmp = stack.tmp
    (tmp / "crm.secret").write_bytes(SECRET)
    (tmp / "crm.secret").chmod(0o600)
    (tmp / "webhooks.yaml").write_text(
        f"endpoints:\n  - name: crm\n    url: {receiver.url}\n    events: [\"case.*\"]\n"
        f"    secret_file: {tmp / 'crm.secret'}\n")
    (tmp / "tokens.yaml").write_text(
        f'partner-billing: {{digest: "{digest(PARTNER)}", scopes: [cases:read, cases:write]}}\n')
    mapping = stack.settings("it-vip", agi_port=stack.asterisk.ports.agi_port)
    mapping["web"] = {"port": free_port(), "backoffice_tokens_file": str(tmp / "tokens.yaml")}
    mapping["postgres"] = {"dsn": dsn, "write_interval": 0.1}
    mapping["webhooks"] = {"endpoints_file": str(tmp / "webhooks.yaml"), "poll_interval": 0.1,
                           "backoff_base_seconds": 0.2, "backoff_max_seconds": 1.0, "timeout_seconds": 2.0}
    # the spoken case result: the back office's result itself
    mapping["notices"] = {"case_result_en": "{result}."}
    return config.from_mapping(mapping)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(answers=[status(500)])  # the first delivery fails: the deliverer sends it again
    await r.start()
    yield r
    await r.stop()


@contextlib.asynccontextmanager
async def story_server(stack: cbc.Stack, empty_db: str, receiver: Receiver) -> AsyncIterator[IvrServer]:
    await migrated(empty_db)
    async with running(story_settings(stack, empty_db, receiver)) as server:
        assert server.records is not None, "postgres.dsn set: the system of record runs"
        yield server


async def add(server: IvrServer, customer: Customer) -> Customer:
    """A customer saved with the server's keys (which append to the outbox: PostgreSQL gets it too)."""
    await customers.save_customer(server.redis, server.keys, customer)
    return customer


class Rest:
    """One REST identity on the running server: an agent's session or a back office's token."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base, self.headers = http, base, {"Authorization": f"Bearer {token}"}
        self.token = token

    async def __call__(self, method: str, path: str, expect: int, body: Any = None) -> Any:
        async with self.http.request(method, self.base + path, headers=self.headers, json=body) as resp:
            text = await resp.text()
            assert resp.status == expect, f"{method} {path}: {resp.status} {text}"
            return json.loads(text) if text and resp.content_type == "application/json" else None


async def session(http: aiohttp.ClientSession, server: IvrServer, agent_id: str) -> Rest:
    base = f"http://127.0.0.1:{server.settings.web.port}"
    async with http.post(f"{base}/api/v1/login", json={"agent": agent_id, "password": agent_id}) as r:
        assert r.status == 200, await r.text()
        return Rest(http, base, str((await r.json())["token"]))


def partner(http: aiohttp.ClientSession, server: IvrServer) -> Rest:
    return Rest(http, f"http://127.0.0.1:{server.settings.web.port}", PARTNER)


async def desk(http: aiohttp.ClientSession, agent: Rest) -> AgentSocket:
    """agent's desk: its websocket, every frame kept."""
    ws = await http.ws_connect(agent.base.replace("http", "ws") + "/ws/agent")
    await ws.send_json({"type": "auth", "token": agent.token, "last_seq": 0})
    sock = AgentSocket(ws)
    sock.reader = asyncio.create_task(sock._read(), name="desk-reader")
    await sock.wait_for(lambda: any(f.get("type") == "replay" for f in sock.frames), "replay header")
    return sock


def pops(sock: AgentSocket) -> list[dict[str, Any]]:
    return [f["data"] for f in sock.events() if f["data"].get("type") == "pop"]


def delivered(receiver: Receiver, event: str) -> list[dict[str, Any]]:
    """The accepted (de-duplicated by Idempotency-Key) deliveries of one event."""
    return [b for b in receiver.accepted.values() if b["event"] == event]


def raw_keys(receiver: Receiver, event: str) -> list[str]:
    return [h["headers"]["Idempotency-Key"] for h in receiver.hits if h["body"]["event"] == event]


def zone_and_hours(now: float, start: int, end: int) -> tuple[str, ContactPreferences]:
    """A zone where it is now 12:xx, and allowed hours start:00-end:00 there."""
    tz = cbc._zone_where_it_is_noon(now)
    return tz.key, ContactPreferences(timezone=tz.key, allowed_from=f"{start:02d}:00", allowed_until=f"{end:02d}:00")


# ----------------------------------------------------------------------------- 1 + 2: the story

async def test_the_vip_story_closes_end_to_end(stack: cbc.Stack, cb_phones: cbc.CallbackPhones, watch: cbc.AmiWatch,
                                               receiver: Receiver, empty_db: str) -> None:
    started = time.monotonic()
    zone, office_hours = zone_and_hours(time.time(), 9, 18)  # it is about noon where he lives
    async with story_server(stack, empty_db, receiver) as server, aiohttp.ClientSession() as http:
        vip = await add(server, Customer(id="c-vip-story", name="Zhao Lei", phones=(VIP_NUMBER,), tier=Tier.VIP,
                                         account_manager=OWNER, preferences=office_hours))
        agent = await session(http, server, OWNER)
        supervisor = await session(http, server, SUPERVISOR)
        back_office = partner(http, server)
        screen = await desk(http, agent)

        # -- the VIP calls; his account manager's phone rings with the pop and she answers
        phone = await cb_phones.agent(1001, ring_ms=500, hold_ms=6000)
        await stack.agent_ready(OWNER)
        caller = await cb_phones.caller("", number=VIP_NUMBER)
        [ringing] = await screen.wait_for(lambda: [p for p in pops(screen) if p.get("phase") == "ringing"],
                                          "the ringing pop")
        assert ringing["customer"]["id"] == vip.id and ringing["number"] == VIP_NUMBER
        await screen.wait_for(lambda: screen.phases(ringing["call_id"], "answered"), "the call answered")

        # -- during the call, from the desk: the complaint with what is still needed ...
        case = await agent("POST", "/api/v1/cases", 201, {
            "customer_id": vip.id, "summary": "premium SMS charged without consent", "severity": 2,
            "owner_agent": OWNER, "still_needed": "the December bill",
            "checklist": [{"text": "December bill showing the charge", "from": "customer"}]})
        cid = case["id"]
        await agent("POST", f"/api/v1/cases/{cid}/status", 200, {"status": "in_progress"})
        # ... the partner asked to cancel its charge ...
        handed = await agent("POST", f"/api/v1/cases/{cid}/actions", 200, {
            "action": "cancel_partner_charge", "params": {"service": "SP-1860", "amount": 30},
            "why": "subscribed by a premium-SMS trick"})
        assert handed["status"] == "waiting_backoffice" and handed["handed_to"] == ["partner-billing"]
        [partner_item] = [i for i in handed["checklist"] if i["from"] == "backoffice"]
        # ... compensation within her authority (severity 2: 50.00 per case) granted at once ...
        granted = await agent("POST", f"/api/v1/cases/{cid}/compensations", 201, {
            "amount_cents": 3000, "currency": "CNY", "reason": "three calls for one problem", "key": "k1"})
        assert granted["state"] == "granted"
        # ... more than that is a request, which the agent cannot approve; her supervisor does
        above = await agent("POST", f"/api/v1/cases/{cid}/compensations", 202, {
            "amount_cents": 3000, "currency": "CNY", "reason": "charged twice", "key": "k2"})
        assert above["state"] == "requested"
        await agent("POST", f"/api/v1/compensations/{above['id']}/approve", 403, {"why": "mine"})
        waiting = await supervisor("GET", "/api/v1/compensations?state=requested", 200)
        assert [c["id"] for c in waiting["items"]] == [above["id"]]
        approved = await supervisor("POST", f"/api/v1/compensations/{above['id']}/approve", 200,
                                    {"why": "VIP, three weeks"})
        assert approved["state"] == "approved" and approved["approved_by"] == f"supervisor:{SUPERVISOR}"

        assert (r := await phone.wait()).ok, r.describe()
        assert (r := await caller.wait()).ok, r.describe()

        # -- the receiver: every change once, the approval exactly once
        wanted = ("case.opened", "case.moved", "case.action_requested", "case.compensation_granted",
                  "case.compensation_requested", "case.compensation_approved")

        async def all_delivered() -> bool:
            return all(delivered(receiver, e) for e in wanted)
        await wait_until(all_delivered, timeout=20, what="the desk's changes at the receiver")
        assert receiver.bad_signatures == 0
        for event in wanted:
            assert len(delivered(receiver, event)) == 1, event
        [asked] = delivered(receiver, "case.action_requested")
        assert asked["data"]["detail"]["to"] == "partner-billing" and asked["data"]["actor"] == f"agent:{OWNER}"
        [decision] = delivered(receiver, "case.compensation_approved")
        assert decision["data"]["actor"] == f"supervisor:{SUPERVISOR}"

        # -- the partner's back office posts its result: charge cancelled, case resolved
        notice_phone = await cb_phones.customer(ring_ms=300, press="1", hold_ms=4000, timeout=40)
        owner_phone = await cb_phones.agent(1001, ring_ms=300, hold_ms=1500, timeout=40)
        await stack.agent_ready(OWNER)
        listed = await back_office("GET", "/api/v1/cases?filter=handed", 200)
        assert [c["id"] for c in listed["items"]] == [cid]
        offset = stack.asterisk.full_log.stat().st_size
        resolved = await back_office("POST", f"/api/v1/cases/{cid}/results", 200,
                                     {"result": RESULT, "resolve": True, "checklist": [partner_item["id"]]})
        assert resolved["status"] == "resolved"
        assert [(i["from"], i["done"]) for i in resolved["checklist"]] == [("customer", False), ("backoffice", True)]

        # his phone rings once, the result plays, he presses 1, his account manager's phone rings
        async def notice_keys() -> list[str]:
            return await server.notices.store.case_notice_keys(cid)
        [key] = await wait_until(notice_keys, what="the case_result notice")
        nid = notice_id(key)
        assert (r := await notice_phone.wait()).ok, r.describe()
        assert "answered" in r.logs
        assert (r := await owner_phone.wait()).ok, r.describe()

        async def pressed() -> Any:
            n = await server.notices.store.get(nid)
            return n if n is not None and n.state is NoticeState.PRESSED_1 else None
        notice = await wait_until(pressed, what="pressed_1 on the notice")
        assert [o for o, _ in notice.outcomes] == ["heard", "pressed_1"]
        assert notice.call_id is not None and notice.text == f"{RESULT}."
        placed = await stack.settled(notice.call_id, ("done",))
        [attempt] = placed.history  # rung once, at once, inside his hours (09:00-18:00 where he lives)
        assert attempt.outcome is not None and attempt.outcome.value == "answered"
        local = datetime.fromtimestamp(attempt.started_at, ZoneInfo(zone))
        assert 9 <= local.hour < 18, local

        # the pop on her desk: a notice call-back about his case, and the case itself
        def callback_pops() -> list[dict[str, Any]]:
            return [p for p in pops(screen) if p.get("kind") == "notification"]
        [back] = await screen.wait_for(callback_pops, "the notice call-back's pop")
        assert back["customer"]["id"] == vip.id
        assert back["callback"]["case_id"] == cid and RESULT in back["callback"]["context"]
        [on_pop] = [c for c in back["open_cases"] if c["id"] == cid]
        assert on_pop["status"] == "resolved"

        # the case's events: every step with its actor, then heard and pressed 1
        async def told() -> list[str]:
            events = (await agent("GET", f"/api/v1/cases/{cid}/events", 200))["events"]
            outcomes = [e["detail"]["outcome"] for e in events if e["kind"] == "notice"]
            return outcomes if "pressed_1" in outcomes else []
        assert await wait_until(told, what="heard and pressed_1 on the case") == ["heard", "pressed_1"]

        # the contact history on her desk has the notification, next to his call in
        async def history() -> list[dict[str, Any]]:
            found = (await agent("GET", f"/api/v1/customers/{vip.id}/history", 200))["contacts"]
            return found if "notification" in {c["kind"] for c in found} else []
        assert sorted(c["kind"] for c in await wait_until(history, what="the notification in his history")) == [
            "inbound", "notification"]

        # the receiver got the resolution once; nothing arrived twice
        async def resolution() -> list[dict[str, Any]]:
            return delivered(receiver, "case.resolved")
        [done] = await wait_until(resolution, what="case.resolved at the receiver")
        assert done["data"]["actor"] == "backoffice:partner-billing" and done["data"]["why"] == RESULT
        for event in (*wanted, "case.resolved"):
            assert len(set(raw_keys(receiver, event))) == 1, event
        assert len(receiver.hits) == len(receiver.accepted) + 1  # only the first (refused) delivery repeated

        # the supervisors' view of the deliveries: none dead; the refused first one delivered on its retry
        assert (await supervisor("GET", "/api/v1/webhooks/dead", 200))["deliveries"] == []
        assert await server.redis.xlen(server.keys.case_changes_dead()) == 0
        assert await server.redis.xlen(server.keys.outbox_dead()) == 0

        # PostgreSQL: the case's events with their actors, the compensations, the case row
        pool = server.records.pool if server.records is not None else None
        assert pool is not None

        async def recorded() -> list[asyncpg.Record]:
            rows = await pool.fetch("SELECT actor, kind, why, detail FROM case_events WHERE case_id = $1 "
                                    "ORDER BY at, entry_id", cid)
            return rows if sum(r["kind"] == "notice" for r in rows) >= 2 else []
        rows = await wait_until(recorded, what="the case's events in PostgreSQL")
        steps = [(r["actor"], r["kind"]) for r in rows]
        assert steps[:7] == [
            (f"agent:{OWNER}", "opened"), (f"agent:{OWNER}", "moved"), (f"agent:{OWNER}", "action_requested"),
            (f"agent:{OWNER}", "compensation_granted"), (f"agent:{OWNER}", "compensation_requested"),
            (f"supervisor:{SUPERVISOR}", "compensation_approved"), ("backoffice:partner-billing", "resolved")]
        notices = [json.loads(r["detail"])["outcome"] for r in rows if r["kind"] == "notice"]
        assert notices == ["heard", "pressed_1"] and {r["actor"] for r in rows if r["kind"] == "notice"} == {"system"}

        async def compensated() -> list[asyncpg.Record]:
            found = await pool.fetch("SELECT amount_cents, state, granted_by, approved_by FROM case_compensations "
                                     "WHERE case_id = $1 ORDER BY requested_at, id", cid)
            return found if [r["state"] for r in found] == ["granted", "approved"] else []
        comps = await wait_until(compensated, what="the compensations in PostgreSQL")
        assert [(r["amount_cents"], r["granted_by"], r["approved_by"]) for r in comps] == [
            (3000, f"agent:{OWNER}", None), (3000, f"agent:{OWNER}", f"supervisor:{SUPERVISOR}")]
        row = await pool.fetchrow("SELECT status, compensated_cents, handed_to FROM cases WHERE id = $1", cid)
        assert (row["status"], row["compensated_cents"], list(row["handed_to"])) == (
            "resolved", 6000, ["partner-billing"])
        # ... the delivery log: the approval delivered on its first attempt, the refused one on its second

        async def logged() -> list[asyncpg.Record]:
            found = await pool.fetch("SELECT event, state, attempts, log FROM webhook_deliveries "
                                     "WHERE endpoint = 'crm' AND event LIKE 'case.%'")
            return found if len(found) >= len(wanted) + 1 and all(r["state"] == "delivered" for r in found) else []
        deliveries = await wait_until(logged, what="the webhook delivery log in PostgreSQL")
        assert [r["attempts"] for r in deliveries if r["event"] == "case.compensation_approved"] == [1]
        retried = [[a.get("status") for a in json.loads(r["log"])] for r in deliveries if r["attempts"] > 1]
        assert retried == [[500, 200]], retried
        # ... and his history there: the call in, the notice call (its whole record in notifications)

        async def history_recorded() -> list[asyncpg.Record]:
            found = await pool.fetch("SELECT kind, outcome FROM contacts WHERE customer_id = $1", vip.id)
            return found if "notification" in {r["kind"] for r in found} else []
        kinds = sorted(r["kind"] for r in await wait_until(history_recorded, what="the notification in PostgreSQL"))
        assert kinds == ["inbound", "notification"], kinds

        async def notice_recorded() -> list[asyncpg.Record]:
            return await pool.fetch("SELECT id, state FROM notifications WHERE customer_id = $1", vip.id)
        [told_row] = await wait_until(notice_recorded, what="the notice call in notifications")
        assert (told_row["id"], told_row["state"]) == (notice.call_id, "done")
        await screen.close()
    # once: one leg to his phone (ChannelId = the notice call's first attempt), one to the owner's
    assert [leg.uniqueid for leg in watch.customer_legs()] == [f"{notice.call_id}-1"]
    assert len(watch.agent_legs(OWNER)) == 2  # his call in, the notice's press 1
    text = await asyncio.to_thread(_read_from, stack.asterisk.full_log, offset)
    assert f"Playing '{notice.sound}." in text, f"no Playback of {notice.sound} in {stack.asterisk.full_log}"
    assert "notify?id=" in text
    print(f"\nVIP story: {time.monotonic() - started:.1f} s")


# ----------------------------------------------------------------------------- 3: nobody unwanted

async def resolved_by_the_partner(supervisor: Rest, back_office: Rest, customer: Customer) -> str:
    """A case of `customer` opened from the desk, handed to the partner, resolved by its back office."""
    case = await supervisor("POST", "/api/v1/cases", 201, {"customer_id": customer.id, "summary": "premium SMS",
                                                            "owner_agent": OWNER, "severity": 3})
    cid = str(case["id"])
    await supervisor("POST", f"/api/v1/cases/{cid}/actions", 200, {"action": "cancel_partner_charge"})
    await back_office("POST", f"/api/v1/cases/{cid}/results", 200, {"result": "charge cancelled", "resolve": True})
    return cid


async def test_nobody_is_called_who_did_not_want_it(stack: cbc.Stack, cb_phones: cbc.CallbackPhones,
                                                    watch: cbc.AmiWatch, receiver: Receiver, empty_db: str) -> None:
    started = time.monotonic()
    now = time.time()
    tz, evening = zone_and_hours(now, 20, 21)  # it is about noon there: the window opens at 20:00
    opening = datetime.fromtimestamp(now, ZoneInfo(tz)).replace(hour=20, minute=0, second=0, microsecond=0)
    office = cbc.ALL_DAY
    async with story_server(stack, empty_db, receiver) as server, aiohttp.ClientSession() as http:
        late = await add(server, Customer(id="c-late", name="Sun Li", phones=("15550042",), preferences=evening))
        never = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00", do_not_call=True)
        dnc = await add(server, Customer(id="c-dnc", name="Qin Hao", phones=("15550043",), preferences=never))
        moot = await add(server, Customer(id="c-moot", name="Ma Li", phones=("15550044",), preferences=evening))
        silent = await add(server, Customer(id="c-silent", name="Lu Xun", phones=("15550045",), preferences=office,
                                            attributes={"notices": "-case_result"}))
        ringing = await cb_phones.customer(ring_ms=300, hold_ms=500, timeout=60)  # any customer's phone
        supervisor = await session(http, server, SUPERVISOR)
        back_office = partner(http, server)
        cases = {c.id: await resolved_by_the_partner(supervisor, back_office, c) for c in (late, dnc, moot, silent)}

        async def notice_of(customer_id: str) -> Any:
            keys = await server.notices.store.case_notice_keys(cases[customer_id])
            return await server.notices.store.get(notice_id(keys[0])) if keys else None

        async def all_decided() -> bool:
            return all([await notice_of(c) for c in cases])
        await wait_until(all_decided, what="a decision for every resolved case's notice")

        # outside his hours: scheduled at his window's opening, not dialed
        waits = await notice_of(late.id)
        assert waits.state is NoticeState.SCHEDULED and waits.due_at == pytest.approx(opening.timestamp())
        # do-not-call and no consent: refused, with the reason noted on the case
        refused = await notice_of(dnc.id)
        assert (refused.state, refused.reason) == (NoticeState.REFUSED, "do_not_call")
        unwanted = await notice_of(silent.id)
        assert (unwanted.state, unwanted.reason) == (NoticeState.REFUSED, "no_consent")
        for customer_id, reason in ((dnc.id, "do_not_call"), (silent.id, "no_consent")):
            events = (await supervisor("GET", f"/api/v1/cases/{cases[customer_id]}/events", 200))["events"]
            assert [e["detail"].get("reason") for e in events if e["kind"] == "notice"] == [reason]
        # reopened before the notice is due: the pending notice and its call are cancelled
        pending = await notice_of(moot.id)
        assert pending.state is NoticeState.SCHEDULED and pending.call_id is not None
        await supervisor("POST", f"/api/v1/cases/{cases[moot.id]}/status", 200,
                         {"status": "in_progress", "why": "the charge is back on the next bill"})

        async def cancelled() -> Any:
            n = await notice_of(moot.id)
            return n if n.state is NoticeState.CANCELLED else None
        gone = await wait_until(cancelled, what="the reopened case's notice cancelled")
        assert "reopened" in gone.reason
        call = await stack.store.get(pending.call_id)
        assert call is not None and call.state is CallbackState.CANCELLED and call.attempts == 0
        assert await stack.redis.zscore(server.keys.callbacks_due(), pending.call_id) is None
        assert waits.call_id is not None
        still = await stack.store.get(waits.call_id)
        assert still is not None and still.state is CallbackState.SCHEDULED and still.attempts == 0
        assert still.due_at == pytest.approx(opening.timestamp())
        assert opening.timestamp() - time.time() > timedelta(hours=6).total_seconds()

        await asyncio.sleep(3.0)  # many scheduler rounds (poll 0.1 s): a wrong dial would show up here
        assert watch.customer_legs() == []
        assert ringing.process.returncode is None  # no customer's phone rang
    print(f"\nnobody unwanted: {time.monotonic() - started:.1f} s")
