"""Who may see, change and place callbacks: REST on the real web app (IvrServer.web_app) and a real
Redis, the agent's grants as screen-pops write them (PopStore), the audit stream read back through
GET /api/v1/audit; the IVR and CLI paths of the customer's tier; back-office tokens."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from ivrserver.app import IvrServer
from ivrserver.commands import callbacks as cli
from ivrserver.domain.callback_access import Actor, Role, number_on_record, placement_refusal, visible_because
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.grants import Grant
from ivrserver.store.keys import Keys
from ivrserver.web.backoffice import BackofficeTokens, BackofficeTokensError, digest
from tests import test_callbacks_api
from tests.test_callbacks_api import BACKOFFICE_TOKEN, OPEN, login

# test_callbacks_api.py's fixtures: the web app on a real Redis holding the test customers, and a
# client of it without a session
server, anonymous = test_callbacks_api.server, test_callbacks_api.anonymous

Headers = dict[str, str]


@pytest.fixture
async def desks(anonymous: TestClient) -> dict[str, Headers]:
    """Sessions of agent1003, agent1004 (plain agents) and agent1010 (a supervisor)."""
    return {a: await login(anonymous, a) for a in ("agent1003", "agent1004", "agent1010")}


BACKOFFICE = {"Authorization": f"Bearer {BACKOFFICE_TOKEN}"}


async def post(client: TestClient, headers: Headers, status: int = 201, **body: Any) -> dict[str, Any]:
    payload = {"customer_id": "c1", "number": "555-1234", "at": "+1h", **OPEN, **body}
    resp = await client.post("/api/v1/callbacks", json=payload, headers=headers)
    assert resp.status == status, await resp.text()
    return dict(await resp.json())


async def listed(client: TestClient, headers: Headers, query: str = "") -> list[str]:
    resp = await client.get(f"/api/v1/callbacks{query}", headers=headers)
    assert resp.status == 200, await resp.text()
    return [c["id"] for c in (await resp.json())["callbacks"]]


async def audit(client: TestClient, supervisor: Headers) -> list[dict[str, Any]]:
    resp = await client.get("/api/v1/audit?count=500", headers=supervisor)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return list(body["entries"] if isinstance(body, dict) else body)


# ----------------------------------------------------------------------------- REST

async def test_an_agent_cannot_read_move_or_cancel_another_agents_callback(
        anonymous: TestClient, desks: dict[str, Headers], redis_client: aioredis.Redis, keys: Keys) -> None:
    mine = await post(anonymous, desks["agent1003"], reason="premium SMS")
    theirs = await post(anonymous, desks["agent1004"], customer_id="c2", number="5550002")
    path = f"/api/v1/callbacks/{mine['id']}"

    # agent1004 neither requested it, nor is preferred, nor handles customer c1.
    assert await listed(anonymous, desks["agent1004"]) == [theirs["id"]]
    assert await listed(anonymous, desks["agent1004"], "?agent=agent1003") == []
    resp = await anonymous.get(path, headers=desks["agent1004"])
    assert resp.status == 403 and "not yours" in (await resp.json())["error"]
    resp = await anonymous.patch(path, json={"at": "+3h"}, headers=desks["agent1004"])
    assert resp.status == 403
    resp = await anonymous.delete(path, headers=desks["agent1004"])
    assert resp.status == 403
    stored = await CallbackStore(redis_client, keys).get(mine["id"])
    assert stored is not None and stored.state.value == "scheduled" and stored.due_at == mine["due_at"]

    # Its owner and a supervisor may.
    assert await listed(anonymous, desks["agent1003"]) == [mine["id"]]
    assert (await anonymous.get(path, headers=desks["agent1003"])).status == 200
    assert await listed(anonymous, desks["agent1010"]) == [theirs["id"], mine["id"]]
    assert (await anonymous.patch(path, json={"at": "+3h"}, headers=desks["agent1010"])).status == 200

    # Every read is in the audit stream, the refusals too.
    entries = await audit(anonymous, desks["agent1010"])
    reads = [(e["who"], e["what"], e["target"], str(e["allowed"])) for e in entries
             if str(e["what"]).startswith("callback.")]
    assert ("agent1004", "callback.read", "c1", "False") in reads or ("agent1004", "callback.read", "c1", "0") in reads
    denied = {(w, what) for w, what, _, allowed in reads if allowed in ("False", "0", "false")}
    assert {("agent1004", "callback.read"), ("agent1004", "callback.reschedule"),
            ("agent1004", "callback.cancel")} <= denied
    allowed = {(w, what) for w, what, _, ok in reads if ok not in ("False", "0", "false")}
    assert {("agent1003", "callback.read"), ("agent1010", "callback.list"), ("agent1004", "callback.list"),
            ("agent1010", "callback.reschedule")} <= allowed


async def test_an_agent_handling_the_customer_sees_the_customers_callbacks(
        anonymous: TestClient, desks: dict[str, Headers], server: IvrServer) -> None:
    cb = await post(anonymous, desks["agent1003"])
    path = f"/api/v1/callbacks/{cb['id']}"
    assert (await anonymous.get(path, headers=desks["agent1004"])).status == 403
    # agent1004's phone rings with c1's call: the pop opens a grant (5 minutes from ringing).
    await server.pops.grant("agent1004", Grant(until=time.time() + 300, customer_id="c1"))
    assert (await anonymous.get(path, headers=desks["agent1004"])).status == 200
    assert await listed(anonymous, desks["agent1004"]) == [cb["id"]]
    # An expired grant opens nothing.
    await server.pops.grant("agent1004", Grant(until=time.time() - 1, customer_id="c1"))
    await server.redis.hset(server.keys.agent_access("agent1004"), "c1", repr(time.time() - 1))
    assert (await anonymous.get(path, headers=desks["agent1004"])).status == 403
    assert await listed(anonymous, desks["agent1004"]) == []


async def test_the_preferred_agent_sees_a_callback_someone_else_requested(
        anonymous: TestClient, desks: dict[str, Headers]) -> None:
    cb = await post(anonymous, desks["agent1003"], preferred_agent="agent1004")
    assert await listed(anonymous, desks["agent1004"]) == [cb["id"]]
    assert (await anonymous.delete(f"/api/v1/callbacks/{cb['id']}", headers=desks["agent1004"])).status == 200


async def test_customer_first_and_off_record_numbers_need_a_supervisor_or_the_back_office(
        anonymous: TestClient, desks: dict[str, Headers]) -> None:
    agent, supervisor = desks["agent1004"], desks["agent1010"]
    refused = await post(anonymous, agent, 403, mode="customer_first", prompt="your-case-is-solved")
    assert "customer-first" in refused["error"] and "supervisor or a back-office token" in refused["error"]
    refused = await post(anonymous, agent, 403, number="+86 138 0013 8000")
    assert "not on the customer's record" in refused["error"]
    refused = await post(anonymous, agent, 403, customer_id="c-nobody", number="5551234")
    assert "no such customer" in refused["error"]
    assert await listed(anonymous, supervisor) == []  # nothing was created

    on_record = await post(anonymous, agent, number="555 0002", customer_id="c2")  # another of c2's numbers
    assert on_record["requested_by"] == "agent1004"
    by_supervisor = await post(anonymous, supervisor, number="+86 138 0013 8000")
    assert by_supervisor["requested_by"] == "agent1010"
    notice = await post(anonymous, BACKOFFICE, mode="customer_first", prompt="your-case-is-solved")
    assert (notice["requested_by"], notice["preferred_agent"]) == ("backoffice:crm", None)
    assert BACKOFFICE_TOKEN not in str(notice)

    # The back office may list and change every callback; an unknown token is no one.
    assert set(await listed(anonymous, BACKOFFICE)) == {on_record["id"], by_supervisor["id"], notice["id"]}
    resp = await anonymous.delete(f"/api/v1/callbacks/{on_record['id']}", headers=BACKOFFICE)
    assert resp.status == 200
    wrong = {"Authorization": "Bearer bo-" + "0" * 48}
    assert (await anonymous.get("/api/v1/callbacks", headers=wrong)).status == 401
    # The token opens the callbacks routes only.
    assert (await anonymous.get("/api/v1/customers/c1", headers=BACKOFFICE)).status == 401
    entries = await audit(anonymous, supervisor)
    assert any(e["who"] == "crm" and e["role"] == "backoffice" for e in entries)
    assert all(BACKOFFICE_TOKEN not in str(e) for e in entries)


async def test_no_session_no_callbacks(anonymous: TestClient) -> None:
    assert (await anonymous.get("/api/v1/callbacks")).status == 401
    assert (await anonymous.post("/api/v1/callbacks", json={"customer_id": "c1"})).status == 401


# ----------------------------------------------------------------------------- the customer's tier

async def test_a_vip_callback_gets_the_vip_tier_unless_the_body_names_one(
        anonymous: TestClient, desks: dict[str, Headers]) -> None:
    vip = await post(anonymous, desks["agent1003"], customer_id="c-vip", number="5550009")
    assert vip["tier"] == "vip"
    named = await post(anonymous, desks["agent1003"], customer_id="c-vip", number="5550009", tier="gold")
    assert named["tier"] == "gold"
    standard = await post(anonymous, desks["agent1003"])
    assert standard["tier"] == "standard"


async def test_the_ivr_path_takes_the_customers_tier(server: IvrServer) -> None:
    # What HotlineService does for "press 2 to be called back" (no actor: the system itself).
    cb = await server.callbacks.request({"customer_id": "c-vip", "number": "5550009", "queue": "vip",
                                         "joined_at": time.time(), **OPEN}, requested_by="ivr")
    assert cb.tier == "vip" and cb.requested_by == "ivr"


def cli_args(redis_url: str, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ivrserver")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["callbacks", "--redis-url", redis_url, "--prefix", "t", *argv])


async def test_the_cli_takes_the_customers_tier(server: IvrServer, redis_url: str, redis_client: aioredis.Redis,
                                                keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    # Tomorrow 10:00 UTC: inside the company's default calling hours whenever the test runs.
    day = datetime.now(UTC).date() + timedelta(days=1)
    at = datetime(day.year, day.month, day.day, 10, tzinfo=UTC).isoformat()
    args = cli_args(redis_url, "add", "--customer", "c-vip", "--number", "5550009", "--at", at,
                    "--timezone", "UTC")
    run = getattr(args, "func", None) or args.handler
    assert await asyncio.get_running_loop().run_in_executor(None, run, args) == 0
    cb_id = capsys.readouterr().out.split()[0]
    cb = await CallbackStore(redis_client, keys).get(cb_id)
    assert cb is not None and cb.tier == "vip"


# ----------------------------------------------------------------------------- rules and files

AGENT = Actor("agent1004", Role.AGENT)


@pytest.mark.parametrize(("actor", "requested_by", "preferred", "granted", "basis"), [
    (AGENT, "agent1004", None, (), "requested it"),
    (AGENT, "agent1003", "agent1004", (), "preferred agent"),
    (AGENT, "agent1003", "agent1003", ("c1",), "handling this customer"),
    (AGENT, "agent1003", "agent1003", ("c2",), None),
    (AGENT, None, None, (), None),
    (AGENT, "backoffice:agent1004", None, (), None),  # a token named like an agent is not that agent
    (Actor("agent1010", Role.SUPERVISOR), "agent1003", None, (), "supervisor"),
    (Actor("crm", Role.BACKOFFICE), "agent1003", None, (), "backoffice"),
    (Actor("ivr", Role.SYSTEM), None, None, (), "system"),
])
def test_visibility(actor: Actor, requested_by: str | None, preferred: str | None, granted: tuple[str, ...],
                    basis: str | None) -> None:
    assert visible_because(actor, customer_id="c1", requested_by=requested_by, preferred_agent=preferred,
                           granted=granted) == basis


@pytest.mark.parametrize(("number", "phones", "expected"), [
    ("8613800000001", ("+8613800000001",), True),
    ("+8613800000001", ("+8613800000001", "5551234"), True),
    ("5551234", ("+8613800000001",), False),
    ("", ("",), False),
    ("5551234", (), False),
])
def test_number_on_record(number: str, phones: tuple[str, ...], expected: bool) -> None:
    assert number_on_record(number, phones) is expected


@pytest.mark.parametrize(("actor", "customer_first", "number", "phones", "refused"), [
    (AGENT, False, "5551234", ("5551234",), None),
    (AGENT, True, "5551234", ("5551234",), "customer-first"),
    (AGENT, False, "5559999", ("5551234",), "not on the customer's record"),
    (AGENT, False, "5551234", None, "no such customer"),
    (Actor("agent1010", Role.SUPERVISOR), True, "5559999", None, None),
    (Actor("crm", Role.BACKOFFICE), True, "5559999", ("5551234",), None),
])
def test_placement(actor: Actor, customer_first: bool, number: str, phones: tuple[str, ...] | None,
                   refused: str | None) -> None:
    why = placement_refusal(actor, customer_first=customer_first, number=number, customer_phones=phones)
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_backoffice_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(f'crm: "{digest(BACKOFFICE_TOKEN)}"\nbatch-1: "{digest("b" * 40)}"\n')
    tokens = BackofficeTokens.load(str(path))
    assert len(tokens) == 2
    assert tokens.resolve(BACKOFFICE_TOKEN) == "crm" and tokens.resolve("b" * 40) == "batch-1"
    assert tokens.resolve("b" * 39) is None and tokens.resolve(None) is None and tokens.resolve("c" * 40) is None
    assert len(BackofficeTokens.load("")) == 0


@pytest.mark.parametrize(("text", "message"), [
    (f'crm: "{BACKOFFICE_TOKEN}"\n', "never the token itself"),  # a raw token instead of its digest
    ('"bad name!": "sha256:' + "0" * 64 + '"\n', "name"),
    ("- a\n- b\n", "expected a mapping"),
    ("crm: [\n", "not valid YAML"),
])
def test_backoffice_tokens_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    with pytest.raises(BackofficeTokensError) as err:
        BackofficeTokens.load(str(path))
    assert message in str(err.value)
    assert BACKOFFICE_TOKEN not in str(err.value)
