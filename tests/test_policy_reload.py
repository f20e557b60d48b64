"""Policy files hot-reloaded (services/policy_reload.py): the whole app running in-process on a real
Redis, its files in a temporary directory. cases.yaml raises an agent's authority → a grant that was
a request becomes granted after `POST /api/v1/policies/reload` (audited); a broken incidents.yaml is
refused with its line (400) and the running policy stays; webhooks.yaml gains its first endpoint on
SIGHUP's path → the deliverer starts and a case change reaches a real receiver; an endpoint removed
while its delivery waits for a retry ends that delivery dead with the reason. The reload's own
rules (a loader's crash, a swap's crash, unchanged files) without I/O."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.domain.model import Customer, Tier
from ivrserver.domain.webhooks import DeliveryState
from ivrserver.files import case_policy
from ivrserver.metrics import Metrics
from ivrserver.services.policy_reload import PolicyFile, PolicyFiles
from ivrserver.store import customers
from ivrserver.store.grants import Grant
from ivrserver.web.auth import token_digest
from tests.conftest import free_port
from tests.inprocess import eventually
from tests.test_webhooks_delivery import SECRET, Receiver, status

REPO = Path(__file__).resolve().parent.parent
DEFAULTS = REPO / "ivrserver" / "defaults"


class Files:
    """The app's policy files, in a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cases = root / "cases.yaml"
        self.incidents = root / "incidents.yaml"
        self.webhooks = root / "webhooks.yaml"
        self.secret = root / "crm.secret"
        shutil.copy(DEFAULTS / "cases.yaml", self.cases)
        shutil.copy(DEFAULTS / "incidents.yaml", self.incidents)
        self.webhooks.write_text("endpoints: []\n")
        self.secret.write_bytes(SECRET)
        self.secret.chmod(0o600)

    def endpoint(self, url: str) -> None:
        self.webhooks.write_text("endpoints:\n"
                                 f"  - {{name: crm, url: \"{url}\", events: [\"case.*\"], secret_file: {self.secret},\n"
                                 "     timeout: 2, max_attempts: 50}\n")


@pytest.fixture
async def running(redis_url: str, redis_client: aioredis.Redis, tmp_path: Path) -> AsyncIterator[tuple[IvrServer,
                                                                                                          Files]]:
    menus = tmp_path / "menus"
    menus.mkdir()
    shutil.copy(REPO / "menus" / "hotline.yaml", menus / "hotline.yaml")
    files = Files(tmp_path)
    prefix = f"pr{free_port()}"
    settings = config.from_mapping({
        "redis": {"url": redis_url, "prefix": prefix},
        "ami": {"port": free_port(), "reconnect_max_delay": 1.0},  # nothing listens: AMI retries
        "agi": {"port": free_port()},
        "web": {"port": free_port()},
        "asterisk": {"config_dir": "/nonexistent", "sounds_dir": "/nonexistent"},
        "menus": {"dir": str(menus), "watch": False},
        "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml")},
        "cases": {"policy_file": str(files.cases)},
        "incidents": {"policy_file": str(files.incidents)},
        "webhooks": {"endpoints_file": str(files.webhooks), "backoff_base_seconds": 1.0,
                     "backoff_max_seconds": 2.0, "poll_interval": 0.1},
        "instance": "pr",
        "event_loop": "asyncio",
    })
    server = IvrServer(settings)
    await customers.save_customer(redis_client, server.keys,
                                  Customer(id="c-vip", name="Sun Quan", phones=("5550009",), tier=Tier.VIP))
    ready = asyncio.Event()
    task = asyncio.create_task(server.run(ready))
    await asyncio.wait_for(ready.wait(), 15)
    yield server, files
    server.stopping.set()
    await asyncio.wait_for(task, 20)


async def login(server: IvrServer, agent: str) -> dict[str, str]:
    token = secrets.token_urlsafe(32)
    await server.redis.set(server.keys.session(token_digest(token)), agent, ex=600)
    return {"Authorization": f"Bearer {token}"}


async def call(server: IvrServer, method: str, path: str, headers: dict[str, str], expect: int,
               body: Any = None) -> Any:
    async with aiohttp.ClientSession() as http, http.request(
            method, f"http://127.0.0.1:{server.web_port}{path}", headers=headers, json=body) as resp:
        text = await resp.text()
        assert resp.status == expect, f"{method} {path}: {resp.status} {text}"
        return await resp.json() if resp.content_type == "application/json" else text


def by_name(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in answer["files"]}


def reloads(server: IvrServer, file: str, result: str) -> float:
    return float(server.metrics.policy_reloads.labels(file, result)._value.get())


async def test_a_grant_above_authority_is_allowed_after_the_case_policy_reload(
        running: tuple[IvrServer, Files]) -> None:
    server, files = running
    await server.pops.grant("agent1001", Grant(until=time.time() + 300, customer_id="c-vip"))
    agent, supervisor = await login(server, "agent1001"), await login(server, "agent1010")
    case = await call(server, "POST", "/api/v1/cases", agent, 201,
                      {"customer_id": "c-vip", "summary": "premium SMS charged without consent", "severity": 2})
    grant = {"amount_cents": 6000, "currency": "CNY", "reason": "charged twice"}
    # severity 2: an agent may grant 5000 per case → 6000 is a request for a supervisor
    before = await call(server, "POST", f"/api/v1/cases/{case['id']}/compensations", agent, 202, grant)
    assert before["state"] == "requested"
    await call(server, "POST", "/api/v1/policies/reload", agent, 403)
    await call(server, "POST", "/api/v1/policies/reload", {}, 401)
    running_policy = server.cases.policy

    files.cases.write_text(files.cases.read_text().replace("per_case: {1: 10000, 2: 5000,",
                                                           "per_case: {1: 10000, 2: 8000,"))
    answer = await call(server, "POST", "/api/v1/policies/reload", supervisor, 200)
    assert answer["ok"] is True
    files_seen = by_name(answer)
    assert set(files_seen) == {"cases", "routing", "webhooks", "incidents", "reminders"}
    assert files_seen["cases"] == {"name": "cases", "file": str(files.cases), "ok": True, "changed": True,
                                   "error": None, "problems": []}
    assert [n for n, f in files_seen.items() if f["changed"]] == ["cases"]
    assert server.cases.policy is not running_policy and server.cases.policy == case_policy.load(files.cases)
    assert server.customers.case_policy is server.cases.policy  # cases it opens on import: the same due times
    assert (await call(server, "GET", "/api/v1/case-policy", agent, 200))["compensation"]["per_case"]["2"] == 8000

    after = await call(server, "POST", f"/api/v1/cases/{case['id']}/compensations", agent, 201,
                       {**grant, "key": "after-reload"})
    assert after["state"] == "granted"
    entries = await call(server, "GET", "/api/v1/audit?count=50", supervisor, 200)
    [entry] = [e for e in entries["entries"] if e["what"] == "policies.reload"]
    assert (entry["who"], entry["role"], entry["target"], entry["allowed"]) == ("agent1010", "supervisor", "cases",
                                                                               True)
    assert "cases: changed" in entry["why"] and "incidents: same" in entry["why"]
    assert reloads(server, "cases", "ok") == 1 and reloads(server, "cases", "rejected") == 0

    again = await call(server, "POST", "/api/v1/policies/reload", supervisor, 200)  # nothing changed
    assert not any(f["changed"] for f in again["files"])


async def test_a_broken_incident_policy_is_refused_with_its_line_and_the_old_one_stays(
        running: tuple[IvrServer, Files], caplog: pytest.LogCaptureFixture) -> None:
    server, files = running
    assert server.incidents is not None
    live = server.incidents.policy
    lines = files.incidents.read_text().splitlines()
    [at] = [n for n, line in enumerate(lines) if line.startswith("window:")]
    lines[at] = "window: 7"  # below 60 s
    files.incidents.write_text("\n".join(lines) + "\n")
    files.cases.write_text(files.cases.read_text().replace("2: 24,", "2: 12,"))  # a valid change beside it
    supervisor = await login(server, "agent1010")

    answer = await call(server, "POST", "/api/v1/policies/reload", supervisor, 400)
    assert answer["ok"] is False
    incidents = by_name(answer)["incidents"]
    assert incidents["ok"] is False and incidents["changed"] is False
    assert incidents["error"].startswith(f"{files.incidents}:{at + 1}:") and "window" in incidents["error"]
    assert incidents["problems"] == incidents["error"].splitlines()
    assert server.incidents.policy is live  # the running policy stays
    assert by_name(answer)["cases"]["changed"] is True  # the other files are still reloaded
    assert reloads(server, "incidents", "rejected") == 1
    assert any("policy reload refused" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    entries = await call(server, "GET", "/api/v1/audit?count=50", supervisor, 200)
    [entry] = [e for e in entries["entries"] if e["what"] == "policies.reload"]
    assert entry["allowed"] is False and "incidents: refused" in entry["why"]

    lines[at] = "window: 1200"  # fixed: the new policy is live
    files.incidents.write_text("\n".join(lines) + "\n")
    answer = await call(server, "POST", "/api/v1/policies/reload", supervisor, 200)
    assert by_name(answer)["incidents"]["changed"] is True
    assert server.incidents.policy.window_seconds == 1200 and server.incidents.policy is not live


async def test_the_first_webhook_endpoint_on_sighup_starts_delivering_and_a_removed_one_ends_dead(
        running: tuple[IvrServer, Files]) -> None:
    server, files = running
    assert server.webhooks.endpoints == () and "webhook-deliverer" not in server.supervisor.tasks
    receiver = Receiver()
    await receiver.start()
    try:
        files.endpoint(receiver.url)
        server.request_reload()  # what SIGHUP calls (app.serve)

        async def endpoints() -> bool:
            return bool(server.webhooks.endpoints)
        await eventually(endpoints, 10, "the endpoint loaded")
        assert "webhook-deliverer" in server.supervisor.tasks
        assert reloads(server, "webhooks", "ok") == 1

        case = await server.cases.open({"customer_id": "c-vip", "summary": "no signal", "severity": 3},
                                       actor="agent:agent1001")

        async def delivered() -> list[dict[str, Any]]:
            return [h for h in receiver.hits if case.id in str(h["body"]["data"])]
        [hit] = await eventually(delivered, 20, "the case change delivered")
        assert hit["headers"]["X-Ivrserver-Event"] == "case.opened" and receiver.bad_signatures == 0

        # the receiver fails the next change; the endpoint is removed while that delivery waits
        receiver.answers = [status(200)] * len(receiver.hits) + [status(503)] * 100
        second = await server.cases.open({"customer_id": "c-vip", "summary": "no signal again", "severity": 3},
                                         actor="agent:agent1001")
        hits = len(receiver.hits)

        async def failed_once() -> bool:
            return len(receiver.hits) > hits
        await eventually(failed_once, 20, "the second change attempted")
        files.webhooks.write_text("endpoints: []\n")
        outcomes = await server.reload_all()  # the same reload SIGHUP's loop runs
        assert {o.name: o.changed for o in outcomes}["webhooks"] is True and server.webhooks.endpoints == ()

        async def dead() -> Any:
            return await server.webhooks.dead()
        [letter] = await eventually(dead, 20, "the delivery to the removed endpoint dead")
        full = await server.webhooks.store.get(letter.id)
        assert full is not None and second.id in full.body and letter.attempts >= 2
        assert letter.state is DeliveryState.DEAD and letter.dead_reason == "endpoint 'crm' removed from webhooks.yaml"
        assert "webhook-deliverer" in server.supervisor.tasks  # stays, idle
    finally:
        await receiver.stop()


# ---- the reload's own rules, without I/O ---------------------------------------------------------------------

class Holder:
    def __init__(self, value: object) -> None:
        self.value = value
        self.applied: list[object] = []

    def apply(self, value: object) -> None:
        self.value = value
        self.applied.append(value)


class Refused(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def test_refused_crashed_unchanged_and_changed_files() -> None:
    metrics = Metrics()
    same, new, refused, crash, bad_swap = (Holder("a"), Holder("a"), Holder("a"), Holder("a"), Holder("a"))

    def refuse() -> str:
        raise Refused(["x.yaml:3:1: error: x: wrong"])

    def boom() -> str:
        raise RecursionError("deep")

    def swap_fails(value: object) -> None:
        raise RuntimeError("bug")

    files = PolicyFiles([
        PolicyFile("same", "same.yaml", lambda: "a", lambda: same.value, same.apply),
        PolicyFile("new", "new.yaml", lambda: "b", lambda: new.value, new.apply),
        PolicyFile("refused", "x.yaml", refuse, lambda: refused.value, refused.apply),
        PolicyFile("crash", "c.yaml", boom, lambda: crash.value, crash.apply),
        PolicyFile("swap", "s.yaml", lambda: "b", lambda: bad_swap.value, swap_fails),
    ], metrics=metrics)
    out = {o.name: o for o in files.apply(files.load())}
    assert (out["same"].ok, out["same"].changed, same.applied) == (True, False, [])
    assert (out["new"].ok, out["new"].changed, new.value) == (True, True, "b")
    assert (out["refused"].ok, out["refused"].problems) == (False, ("x.yaml:3:1: error: x: wrong",))
    assert refused.applied == [] and crash.applied == []
    assert out["crash"].ok is False and out["crash"].problems == (
        "c.yaml: error: cannot load: RecursionError (the error is logged)",)
    assert out["swap"].ok is False and out["swap"].changed is False and "cannot apply: RuntimeError" in \
        out["swap"].problems[0]
    assert out["refused"].as_dict()["error"] == "x.yaml:3:1: error: x: wrong" and out["new"].as_dict()["error"] is None
    assert [metrics.policy_reloads.labels(n, r)._value.get() for n, r in
            (("same", "ok"), ("new", "ok"), ("refused", "rejected"), ("crash", "rejected"), ("swap", "rejected"))] == \
        [1, 1, 1, 1, 1]
