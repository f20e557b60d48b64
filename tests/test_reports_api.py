"""GET /api/v1/reports/<name> on a whole in-process IvrServer (real Redis, real PostgreSQL with known
rows rolled up): supervisors get JSON and formula-safe CSV, agents 403, strangers 401, hostile
parameters 400."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from ivrserver.app import IvrServer
from tests.inprocess import hotline_menus, migrated, server_settings, serving
from tests.record import test_reports_sql as known


@pytest.fixture
async def reports_server(redis_url: str, empty_db: str, tmp_path: Path) -> AsyncIterator[IvrServer]:
    await migrated(empty_db)
    pool = await asyncpg.create_pool(empty_db, min_size=1, max_size=2)
    try:
        await known.fill(pool)  # the known rows, marked and rolled
    finally:
        await pool.close()
    settings = server_settings(redis_url, hotline_menus(tmp_path / "menus"), postgres={"dsn": empty_db},
                               reports={"timezone": "Asia/Shanghai"}, wallboard={"timezone": "Asia/Shanghai"})
    async with serving(settings) as srv:
        yield srv


async def session(srv: IvrServer, agent: str) -> aiohttp.ClientSession:
    s = aiohttp.ClientSession(f"http://127.0.0.1:{srv.web_port}", cookie_jar=aiohttp.CookieJar(unsafe=True))
    r = await s.post("/api/v1/login", json={"agent": agent, "password": agent})
    assert r.status == 200, await r.text()
    return s


async def test_supervisor_json_and_csv_agent_403(reports_server: IvrServer) -> None:
    sup = await session(reports_server, "agent1010")
    agent = await session(reports_server, "agent1001")
    try:
        r = await sup.get("/api/v1/reports/queues", params={"from": "2026-11-03", "to": "2026-11-09"})
        assert r.status == 200
        body = await r.json()
        assert body["timezone"] == "Asia/Shanghai"
        general = next(x for x in body["tables"]["queues"]["rows"] if x["queue"] == "general")
        assert (general["offered"], general["service_level"], general["wait_p90"]) == (3, 0.3333, 28.0)

        r = await sup.get("/api/v1/reports/ivr", params={"from": "2026-11-03", "to": "2026-11-09", "format": "csv",
                                                         "table": "depth"})
        assert r.status == 200 and r.content_type == "text/csv"
        assert r.headers["Content-Disposition"] == \
            'attachment; filename="ivrserver-ivr-depth-2026-11-03-2026-11-09.csv"'
        rows = list(csv.DictReader(io.StringIO(await r.text())))
        assert [(x["depth"], x["reached"], x["hung_up"]) for x in rows] == [("1", "6", "1"), ("2", "3", "1")]

        for name in ("ivr", "selfservice", "queues", "repeats", "callbacks", "agents"):
            r = await agent.get(f"/api/v1/reports/{name}", params={"from": "2026-11-03", "to": "2026-11-09"})
            assert r.status == 403, name
            r = await sup.get(f"/api/v1/reports/{name}", params={"from": "2026-11-03", "to": "2026-11-09",
                                                                 "format": "csv"})
            assert r.status == 200, name
        async with aiohttp.ClientSession(f"http://127.0.0.1:{reports_server.web_port}") as stranger:
            r = await stranger.get("/api/v1/reports/ivr", params={"from": "2026-11-03", "to": "2026-11-09"})
            assert r.status == 401
    finally:
        await sup.close()
        await agent.close()


@pytest.mark.parametrize(("path", "params", "status"), [
    ("/api/v1/reports/nope", {"from": "2026-11-03", "to": "2026-11-09"}, 404),
    ("/api/v1/reports/ivr", {"from": "2026-11-09", "to": "2026-11-03"}, 400),
    ("/api/v1/reports/ivr", {"from": "2026-11-03"}, 400),
    ("/api/v1/reports/ivr", {"from": "2026-11-03", "to": "2026-11-09", "menu": "<script>alert(1)</script>"}, 400),
    ("/api/v1/reports/ivr", {"from": "2026-11-03", "to": "2026-11-09", "sql": "1;drop"}, 400),
    ("/api/v1/reports/ivr", {"from": "1900-01-01", "to": "2026-11-09"}, 400),
])
async def test_hostile_requests(reports_server: IvrServer, path: str, params: dict[str, str], status: int) -> None:
    sup = await session(reports_server, "agent1010")
    try:
        r = await sup.get(path, params=params)
        assert r.status == status
        text = await r.text()
        assert "<script>" not in text
    finally:
        await sup.close()
