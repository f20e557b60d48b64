"""GET/PUT /api/v1/me/preferences (the agent's page language) and the catalogues the pages load:
a real aiohttp server (make_desk, as the lead composes the desk) on real Redis."""

from __future__ import annotations

import json

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivrserver.metrics import Metrics
from ivrserver.services.agent_prefs import AgentPrefsService
from ivrserver.store.keys import Keys
from ivrserver.web.app import build_app
from tests.test_agent_ws import make_desk, token_for

PREFS = "/api/v1/me/preferences"


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def test_language_is_remembered_per_agent(redis_url: str, redis_client: aioredis.Redis, keys: Keys) -> None:
    async with make_desk(redis_url, keys) as desk, aiohttp.ClientSession() as http:
        alice, bob = await token_for(desk, "agent1001"), await token_for(desk, "agent1002")
        # Nothing chosen yet, setting "auto": the browser's Accept-Language, else English.
        browser_zh = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
        async with http.get(desk.url + PREFS, headers=auth(alice, **browser_zh)) as r:
            assert r.status == 200
            assert r.headers["Cache-Control"] == "no-store"
            assert await r.json() == {"language": "zh", "source": "browser", "chosen": None, "languages": ["en", "zh"]}
        async with http.get(desk.url + PREFS, headers=auth(alice)) as r:
            assert (await r.json())["language"] == "en"
        async with http.put(desk.url + PREFS, headers=auth(alice), json={"language": "zh"}) as r:
            assert r.status == 200
            assert await r.json() == {"language": "zh", "source": "agent", "chosen": "zh", "languages": ["en", "zh"]}
        # Remembered server-side: another session, an English browser — still Chinese.
        alice2 = await token_for(desk, "agent1001")
        async with http.get(desk.url + PREFS, headers=auth(alice2, **{"Accept-Language": "en-US"})) as r:
            assert (await r.json())["language"] == "zh"
        async with http.get(desk.url + PREFS, headers=auth(bob)) as r:
            assert (await r.json())["source"] == "fallback"
        assert await desk.redis.hgetall(keys.agent_prefs("agent1001")) == {"language": "zh"}
        async with http.put(desk.url + PREFS, headers=auth(alice), json={"language": "en"}) as r:
            assert (await r.json())["chosen"] == "en"


async def test_setting_default_language(redis_url: str, redis_client: aioredis.Redis, keys: Keys) -> None:
    async with make_desk(redis_url, keys, default_language="zh") as desk, aiohttp.ClientSession() as http:
        token = await token_for(desk, "agent1002")
        async with http.get(desk.url + PREFS, headers=auth(token, **{"Accept-Language": "en-US"})) as r:
            body = await r.json()
        assert (body["language"], body["source"]) == ("zh", "setting")
    with pytest.raises(ValueError, match="default_language must be one of auto, en, zh"):
        AgentPrefsService(None, keys, default_language="fr")  # type: ignore[arg-type]


@pytest.mark.parametrize(("body", "headers", "status", "error"), [
    (json.dumps({"language": "fr"}), {}, 400, "language must be one of en, zh, got 'fr'"),
    (json.dumps({"language": 1}), {}, 400, "language must be a string, one of en, zh"),
    (json.dumps({}), {}, 400, "language is required"),
    (json.dumps({"language": "zh", "theme": "dark"}), {}, 400, "unknown field: only language may be set"),
    (json.dumps(["zh"]), {}, 400, "body must be a JSON object"),
    ("{\"language\": ", {}, 400, "body is not valid JSON"),
    (json.dumps({"language": "zh"}), {"Content-Type": "text/plain"}, 415, "Content-Type must be application/json"),
    (json.dumps({"language": "x" * 2000}), {}, 413, "body must be at most 1024 bytes with a Content-Length"),
    (json.dumps({"language": "<img src=x onerror=alert(1)>"}), {}, 400,
     "language must be one of en, zh, got '<img src=x onerr'"),
])
async def test_hostile_bodies_are_refused(redis_url: str, redis_client: aioredis.Redis, keys: Keys, body: str,
                                          headers: dict[str, str],
                                          status: int, error: str) -> None:
    async with make_desk(redis_url, keys, seed=False) as desk, aiohttp.ClientSession() as http:
        token = await token_for(desk, "agent1001")
        async with http.put(desk.url + PREFS, data=body.encode(),
                            headers=auth(token, **{"Content-Type": "application/json", **headers})) as r:
            assert r.status == status
            assert (await r.json())["error"] == error
        assert await desk.redis.exists(keys.agent_prefs("agent1001")) == 0


async def test_login_required(redis_url: str, keys: Keys) -> None:
    async with make_desk(redis_url, keys, seed=False) as desk, aiohttp.ClientSession() as http:
        async with http.get(desk.url + PREFS) as r:
            assert r.status == 401
        async with http.put(desk.url + PREFS, json={"language": "zh"}) as r:
            assert r.status == 401


async def test_pages_get_the_catalogues(redis_url: str, keys: Keys) -> None:
    """Both ways the pages are served: the desk's own page routes and the app's /static/ route."""
    runner = aiohttp.web.AppRunner(build_app(Metrics(), {}))
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with make_desk(redis_url, keys, seed=False) as desk, aiohttp.ClientSession() as http:
            for base in (desk.url, f"http://{host}:{port}"):
                for lang, word in (("en", "Sign in"), ("zh", "登录")):
                    async with http.get(f"{base}/static/i18n/{lang}.json") as r:
                        assert r.status == 200
                        assert r.headers["Content-Type"].startswith("application/json")
                        data = json.loads(await r.text(encoding="utf-8"))
                    assert set(data) == {"common", "desk", "wallboard", "reports"}
                    assert data["desk"]["login.title"] == word
                async with http.get(f"{base}/static/i18n.js") as r:
                    assert r.status == 200
                    assert "window.I18n" in await r.text()
    finally:
        await runner.cleanup()
