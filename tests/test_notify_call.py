"""The `notify` FastAGI script (services/notify_call.py) through its handler, on a real Redis.

"Press 1" on a notice call runs `AGI(agi://…/notify?id=<call id>)`; what the handler sets decides
where [ivrserver-route] sends the customer. Its fallbacks are what a real call rarely shows:
- a malformed id or one that is no notice call (unknown, or an agent-first callback) sets nothing
  and reads nothing under it: the dialplan's fallback (AGISTATUS, empty IVR_ACTION) queues the caller;
- the case owner paused or logged out → the customer's tier queue (not the owner's phone);
- the owner ready → their phone first, then the tier queue (the contrast; the real-call version is
  tests/integration/test_notice_calls.py).
Each press marks the call's notices pressed_1 (on the notice and its case) and saves a call context
of kind notification for the agent's pop.

The handler runs in a real FastAgiServer on a TCP socket; the only scripted side is the
protocol's client (Asterisk's res_agi: the header block, then "200 result=1" to every command), as
in tests/test_agents_store.py. The notice, its call, the case, the customer and the agents' live
states are written by the real services and stores (test_notices' Env: real synthesis, real
CallbackStore, NoticeService, CaseService).
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from ivrserver.config import RoutingSettings
from ivrserver.domain import callbacks as cbm
from ivrserver.domain.agent_state import AgentLive, DeviceStatus
from ivrserver.domain.model import Customer, Tier
from ivrserver.domain.notices import NoticeState
from ivrserver.files.routing import load_routing
from ivrserver.pbx.fastagi import FastAgiServer
from ivrserver.services.notify_call import NotifyCall
from ivrserver.services.routing import RoutingService
from ivrserver.store import agents as agent_store
from ivrserver.store import call_context, customers
from ivrserver.store import cases as case_store
from tests.test_notices import OPEN, Env, env, notice

__all__ = ["env"]  # the fixture, re-used

POLICY, AGENTS_CONFIG = load_routing(RoutingSettings())
OWNER = "agent1004"


def notify_call(e: Env) -> NotifyCall:
    """As IvrServer builds it, on the test's Redis."""
    routing = RoutingService(e.redis, e.keys, POLICY, AGENTS_CONFIG.agents)
    return NotifyCall(e.redis, e.keys, e.calls, e.notices, routing,
                      customer=lambda cid: customers.get_customer(e.redis, e.keys, cid),
                      case=lambda cid: case_store.get_case(e.redis, e.keys, cid),
                      statuses=lambda ids, now: agent_store.statuses(e.redis, e.keys, ids, now))


async def press_1(handler: NotifyCall, script: str) -> dict[str, str]:
    """One FastAGI call of `script` (as [ivrserver-notify] sends it); the variables it set."""
    server = FastAgiServer("127.0.0.1", 0, command_timeout=5.0)
    server.route("notify", handler.handle)
    await server.start()
    received: list[str] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(f"agi_network: yes\nagi_network_script: {script}\nagi_uniqueid: 1765000000.7\n"
                     f"agi_channel: PJSIP/customers-00000001\n\n".encode())
        while line := await asyncio.wait_for(reader.readline(), 5):
            received.append(line.decode().rstrip("\n"))
            writer.write(b"200 result=1\n")
    finally:
        writer.close()
        await writer.wait_closed()
        await server.stop(drain_timeout=1.0)
    variables = {}
    for line in received:
        assert line.startswith("SET VARIABLE "), line
        name, value = line.removeprefix("SET VARIABLE ").split(" ", 1)
        variables[name.strip('"')] = value.strip('"')
    return variables


async def vip_with_a_notice(e: Env, owner_state: AgentLive | None) -> tuple[str, str, str]:
    """A VIP customer, their case owned by agent1004 (in `owner_state`), the case's notice call:
    (call id, notice id, case id)."""
    await customers.save_customer(e.redis, e.keys, Customer(id="c1", name="Wang Fang", phones=("15550001",),
                                                            tier=Tier.VIP, preferences=OPEN))
    if owner_state is not None:
        await agent_store.save(e.redis, e.keys, [owner_state])
    case = await e.cases.open({"customer_id": "c1", "summary": "premium SMS charge", "owner_agent": OWNER},
                              actor=f"agent:{OWNER}")
    result = await e.notices.schedule(notice(case_id=case.id))
    assert result.call_id is not None
    return result.call_id, result.notice_id, case.id


async def context_keys(e: Env) -> list[str]:
    return [k async for k in e.redis.scan_iter(e.keys.call_context("*"))]


@pytest.mark.parametrize("raw", ["", "..%2F..%2Fetc", "a%2Cb", "x" * 65, "%0aSET"])
async def test_a_malformed_id_sets_nothing_so_the_dialplan_queues_the_caller(
        env: Env, raw: str, caplog: pytest.LogCaptureFixture) -> None:
    _, nid, _ = await vip_with_a_notice(env, None)
    with caplog.at_level(logging.WARNING, "ivrserver.notify"):
        assert await press_1(notify_call(env), f"notify?id={raw}") == {}
    assert [r.getMessage() for r in caplog.records if r.name == "ivrserver.notify"] == [
        "notify: malformed id; the dialplan's fallback queues the caller"]  # refused before any read
    n = await env.store.get(nid)
    assert n is not None and n.state is NoticeState.SCHEDULED  # nothing marked
    assert await context_keys(env) == []


async def test_an_unknown_call_or_an_agent_first_callback_sets_nothing(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    _, nid, _ = await vip_with_a_notice(env, None)
    handler = notify_call(env)
    with caplog.at_level(logging.WARNING, "ivrserver.notify"):
        assert await press_1(handler, "notify?id=ntc-000000000000000000000000") == {}
    assert [r.getMessage() for r in caplog.records if r.name == "ivrserver.notify"] == [
        "notify: no notice call ntc-000000000000000000000000; the dialplan's fallback queues the caller"]
    # a well-formed id of a callback that is not a notice call (agent-first): not for this script
    now = time.time()
    other = cbm.new_callback(cbm.CallbackRequest(customer_id="c1", number="15550001", earliest=now,
                                                 latest=now + 3600), "cb-agentfirst1", now, OPEN)
    assert await env.calls.create(cbm.schedule(other, env.placer.policy, now))
    assert await press_1(handler, "notify?id=cb-agentfirst1") == {}
    assert await press_1(handler, "notify") == {}  # no id at all
    n = await env.store.get(nid)
    assert n is not None and n.state is NoticeState.SCHEDULED
    assert await context_keys(env) == []


@pytest.mark.parametrize(("owner_state", "why"), [
    (AgentLive(OWNER, logged_in=True, paused=True, device=DeviceStatus.NOT_INUSE, since=1.0), "unavailable"),
    (AgentLive(OWNER, logged_in=False, since=1.0), "unavailable"),  # logged out
    (None, "unavailable"),  # never seen: logged out
])
async def test_an_owner_paused_or_logged_out_sends_the_customer_to_their_tier_queue(
        env: Env, owner_state: AgentLive | None, why: str) -> None:
    call_id, nid, case_id = await vip_with_a_notice(env, owner_state)
    variables = await press_1(notify_call(env), f"notify?id={call_id}")
    assert (variables["IVR_ACTION"], variables["IVR_QUEUE"], variables["IVR_PRIORITY"]) == ("queue", "vip", "10")
    assert "IVR_AGENT" not in variables
    assert f"case owner {OWNER} {why}" in variables["IVR_REASON"] and case_id in variables["IVR_REASON"]
    await _pressed_and_popped(env, nid, case_id, variables)


async def test_a_ready_owner_is_rung_first_then_the_tier_queue(env: Env) -> None:
    ready = AgentLive(OWNER, logged_in=True, device=DeviceStatus.NOT_INUSE, since=1.0)
    call_id, nid, case_id = await vip_with_a_notice(env, ready)
    variables = await press_1(notify_call(env), f"notify?id={call_id}")
    assert (variables["IVR_ACTION"], variables["IVR_AGENT"], variables["IVR_QUEUE"]) == (
        "agent", AGENTS_CONFIG.agents[OWNER].endpoint, "vip")
    await _pressed_and_popped(env, nid, case_id, variables)


async def _pressed_and_popped(env: Env, nid: str, case_id: str, variables: dict[str, str]) -> None:
    n = await env.store.get(nid)
    assert n is not None and n.state is NoticeState.PRESSED_1 and [o for o, _ in n.outcomes] == ["heard", "pressed_1"]
    events = [e["detail"]["outcome"] for e in await env.cases.events(case_id) if e.get("kind") == "notice"]
    assert events == ["heard", "pressed_1"], events
    ctx = await call_context.load(env.redis, env.keys, variables["IVR_CONTEXT_ID"])
    assert ctx is not None and ctx.kind == "notification" and ctx.customer_id == "c1"
    assert ctx.callback is not None and ctx.callback["case_id"] == case_id
    assert "Your charge was cancelled." in str(ctx.callback["context"])


async def test_a_second_press_marks_nothing_twice(env: Env) -> None:
    """A second press (the customer called back by the queue and pressed again) marks nothing
    twice: the notice stays pressed_1 with one case event each."""
    call_id, nid, case_id = await vip_with_a_notice(env, None)
    handler = notify_call(env)
    first = await press_1(handler, f"notify?id={call_id}")
    second = await press_1(handler, f"notify?id={call_id}")
    assert first["IVR_ACTION"] == second["IVR_ACTION"] == "queue"
    assert first["IVR_CONTEXT_ID"] != second["IVR_CONTEXT_ID"]
    n = await env.store.get(nid)
    assert n is not None and [o for o, _ in n.outcomes] == ["heard", "pressed_1"]
    events = [e["detail"]["outcome"] for e in await env.cases.events(case_id) if e.get("kind") == "notice"]
    assert events == ["heard", "pressed_1"], events
