"""Contract test: schemathesis generates requests from the served OpenAPI document and sends
them to the REAL app (IvrServer.web_app on a real socket, the test Redis), logged in as a
supervisor. It fails on any 500, on an answer whose status, content type, headers or body the
document does not describe, on schema-invalid input the app accepts, and on an /api/ route that
answers without a session.

Left out: POST /api/v1/logout (it would end the session the run uses; tests/test_auth.py covers
it) and GET /ws/agent (a websocket upgrade, tests/test_agent_ws.py). Without Asterisk the AMI is
down, so /healthz answers 503 and POST /api/v1/me/state 503, and without PostgreSQL GET
/api/v1/reports/{name} 503: all documented answers.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ivrserver.app import IvrServer
from ivrserver.web import api_docs
from tests.conftest import free_port
from tests.test_openapi import server_settings

SUPERVISOR = ("agent1010", "agent1010")  # scripts/demo-agents.yaml: supervisor: true
EXCLUDED = ("logout", "agentSocket")  # operationIds, see the module docstring
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
          "ignored_auth", "unsupported_method")
# Without Asterisk these two answer 503 by design (documented), and without postgres.dsn the
# reports (tests/test_reports_api.py runs them on a real PostgreSQL); a 500 there still fails
# status_code_conformance, which only allows the documented codes.
NO_AMI = ("healthz", "setMyState", "getReport")
MAX_EXAMPLES = int(os.environ.get("IVRSERVER_CONTRACT_EXAMPLES", "15"))
RUN_TIMEOUT = 150


def schemathesis_config(seeded: dict[str, str]) -> str:
    """schemathesis.toml: the checks, and ids of records that exist so that the operations on
    one record get past 404 (`seeded`: operationId -> value of its `id`/`menu` path parameter)."""
    lines = ["[checks]", "enabled = false", *(f"{c}.enabled = true" for c in CHECKS), ""]
    for op in NO_AMI:
        lines += ["[[operations]]", f'include-operation-id = "{op}"', "checks.not_a_server_error.enabled = false", ""]
    for op, (name, value) in seeded.items():
        lines += ["[[operations]]", f'include-operation-id = "{op}"', f'parameters = {{ "path.{name}" = "{value}" }}',
                  ""]
    return "\n".join(lines)


@pytest.fixture
async def live_url(redis_url: str) -> AsyncIterator[str]:
    """The real app on a free port of 127.0.0.1 in this event loop."""
    server = IvrServer(server_settings(redis_url, f"ct{free_port()}"))
    runner = web.AppRunner(server.web_app(), access_log=None, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await server.redis.aclose()
        await server.pubsub_redis.aclose()


async def login(url: str, agent: str, password: str) -> str:
    async with aiohttp.ClientSession() as session, \
            session.post(f"{url}/api/v1/login", json={"agent": agent, "password": password}) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["token"])


async def seed(url: str, token: str) -> dict[str, tuple[str, str]]:
    """A customer, one of their cases and a callback for them, made through the API itself."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(f"{url}/api/v1/customers", json={"id": "ct-1", "name": "Contract Test",
                                                           "phones": ["15550199"], "tier": "gold"}) as r:
            assert r.status == 201, await r.text()
        async with s.post(f"{url}/api/v1/cases", json={"customer_id": "ct-1", "summary": "seed"}) as r:
            assert r.status == 201, await r.text()
            case_id = (await r.json())["id"]
        async with s.post(f"{url}/api/v1/callbacks", json={"customer_id": "ct-1", "number": "15550199",
                                                           "earliest": "+1m", "latest": "+6d"}) as r:
            assert r.status == 201, await r.text()
            callback_id = (await r.json())["id"]
    customer, case, callback = ("id", "ct-1"), ("id", case_id), ("id", callback_id)
    return {"getCustomer": customer, "replaceCustomer": customer, "customerHistory": customer,
            "getCase": case, "updateCase": case, "getCaseEvents": case, "moveCase": case,
            "changeCaseChecklist": case, "requestCaseAction": case, "postCaseResult": case,
            "listCaseCompensations": case, "grantCompensation": case,
            "getCallback": callback, "rescheduleCallback": callback,
            "cancelCallback": callback, "getAnnouncement": ("menu", "hotline"),
            "setAnnouncement": ("menu", "hotline"), "clearAnnouncement": ("menu", "hotline")}


@pytest.mark.timeout(RUN_TIMEOUT + 30)
async def test_real_app_honours_its_openapi_document(live_url: str, tmp_path: Path) -> None:
    token = await login(live_url, *SUPERVISOR)
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(schemathesis_config(await seed(live_url, token)))
    args = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config_file),
        "run", f"{live_url}{api_docs.PATH}",
        "--phases", "examples,coverage,fuzzing", "--mode", "all",
        "--max-examples", str(MAX_EXAMPLES), "--seed", "1", "--workers", "1", "--no-shrink",
        "--header", f"Authorization: Bearer {token}", "--request-timeout", "10",
        "--suppress-health-check", "all",
        *[a for op in EXCLUDED for a in ("--exclude-operation-id", op)],
        "--report", "junit", "--report-dir", str(tmp_path),
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"schemathesis did not finish within {RUN_TIMEOUT}s")
    text = out.decode(errors="replace").replace(token, "<token>")
    assert proc.returncode == 0, f"schemathesis found problems (exit {proc.returncode}):\n{text[-20000:]}"
    # The run really exercised the API (and not just failed to load the document).
    assert "operations" in text.lower() or "passed" in text.lower(), text[-5000:]
