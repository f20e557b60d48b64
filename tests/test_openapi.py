"""The OpenAPI document (ivrserver/web/openapi.yaml) against the real app's routes.

A route the app serves that the document lacks, or a documented path + method the app does not
serve, fails `test_every_route_is_documented_and_every_documented_route_exists`: whoever adds
a route documents it in the same change.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.web import api_docs

REPO = Path(__file__).resolve().parent.parent
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def server_settings(redis_url: str, prefix: str) -> config.Settings:
    """The settings of a real IvrServer on the test Redis, with the demo agents (who can log in)."""
    return config.from_mapping({
        "redis": {"url": redis_url, "prefix": prefix},
        "menus": {"dir": str(REPO / "menus"), "watch": False},
        "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml")},
        "callbacks": {"enabled": False},
    })


def app_operations(app: web.Application) -> set[tuple[str, str]]:
    """(path template, method) of every route of `app`: static file trees and the HEAD routes
    aiohttp adds beside each GET are left out."""
    out: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        if isinstance(resource, web.StaticResource):
            continue
        for route in resource:
            if route.method == "HEAD":
                continue
            out.add((resource.canonical, route.method.lower()))
    return out


def document_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item
            if method in HTTP_METHODS}


def mismatch(app: web.Application, document: dict[str, Any]) -> str:
    """'' when the app's routes and the document's operations are the same, else what differs."""
    served, documented = app_operations(app), document_operations(document)
    lines = [f"  {m.upper()} {p}: served by the app, missing from ivrserver/web/openapi.yaml"
             for p, m in sorted(served - documented)]
    lines += [f"  {m.upper()} {p}: in ivrserver/web/openapi.yaml, but the app has no such route"
              for p, m in sorted(documented - served)]
    return "\n".join(lines)


@pytest.fixture
def document() -> dict[str, Any]:
    return api_docs.load_document()


@pytest.fixture
def real_app(redis_url: str) -> Iterator[web.Application]:
    """The app exactly as `ivrserver run` builds it (IvrServer.web_app), not started."""
    server = IvrServer(server_settings(redis_url, "oapi"))
    yield server.web_app()


@pytest.fixture
async def client(real_app: web.Application) -> AsyncIterator[TestClient]:
    c = TestClient(TestServer(real_app))
    await c.start_server()
    yield c
    await c.close()


def test_every_route_is_documented_and_every_documented_route_exists(real_app: web.Application,
                                                                     document: dict[str, Any]) -> None:
    problems = mismatch(real_app, document)
    assert not problems, "the REST routes and the OpenAPI document differ:\n" + problems


def test_the_comparison_sees_an_undocumented_route_and_a_stale_path(real_app: web.Application,
                                                                    document: dict[str, Any]) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    for resource in real_app.router.resources():
        if isinstance(resource, web.StaticResource):
            continue
        for route in resource:
            if route.method != "HEAD" and resource.canonical != "/api/v1/audit":
                app.router.add_route(route.method, resource.canonical, handler)
    app.router.add_get("/api/v1/brand-new", handler)
    problems = mismatch(app, document)
    assert "GET /api/v1/brand-new: served by the app, missing" in problems
    assert "GET /api/v1/audit: in ivrserver/web/openapi.yaml, but the app has no such route" in problems


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_document_is_consistent(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    for ref in _refs(document):
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
            node = node[part]
    ids = [op["operationId"] for _, item in document["paths"].items()
           for method, op in item.items() if method in HTTP_METHODS]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            public = op.get("security") == []
            # /api/ routes need a session except login and this document (auth_middleware's `public`)
            if path.startswith("/api/"):
                assert public == (path in ("/api/v1/login", api_docs.PATH)), f"{method} {path}: security"
            if path.startswith("/api/") and not public:
                assert "401" in op["responses"], f"{method.upper()} {path}: document the 401"
            if "supervisors only" in op.get("summary", "") + op.get("description", ""):
                assert "403" in op["responses"], f"{method.upper()} {path}: document the 403"


async def test_document_is_served_without_login(client: TestClient) -> None:
    resp = await client.get(api_docs.PATH)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    assert await resp.json() == api_docs.load_document()
    assert (await client.get("/api/v1/me")).status == 401  # the rest of /api/ still needs a session


async def test_a_supervisor_route_refuses_an_agent_as_documented(client: TestClient,
                                                                 document: dict[str, Any]) -> None:
    resp = await client.post("/api/v1/login", json={"agent": "agent1004", "password": "agent1004"})
    assert resp.status == 200, await resp.text()
    token = (await resp.json())["token"]
    documented = document["paths"]["/api/v1/audit"]["get"]
    assert "supervisors only" in documented["summary"]
    resp = await client.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 403 and "403" in documented["responses"]
    assert json.loads(await resp.text())["error"]


async def test_an_undocumented_method_is_405_with_allow(client: TestClient, document: dict[str, Any]) -> None:
    """RFC 9110: a 405 names the methods the resource has (the JSON error mapping kept dropping it)."""
    resp = await client.request("TRACE", api_docs.PATH)  # public: no login needed to reach the router
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) >= {m.upper() for m in document["paths"][api_docs.PATH]}
    assert (await resp.json())["error"]


async def supervisor_headers(client: TestClient) -> dict[str, str]:
    resp = await client.post("/api/v1/login", json={"agent": "agent1010", "password": "agent1010"})
    assert resp.status == 200, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def test_edges_the_contract_test_found_answer_4xx_not_500(client: TestClient) -> None:
    """schemathesis (tests/test_contract.py) found these 500s; each is now a documented answer."""
    headers = await supervisor_headers(client)
    # a TTL past Redis' expiry range
    resp = await client.put("/api/v1/menus/hotline/announcement", headers=headers,
                            json={"sounds": ["ss-noservice"], "ttl": 80203013281075184})
    assert resp.status == 400 and "ttl" in (await resp.json())["errors"]
    resp = await client.put("/api/v1/menus/hotline/announcement", headers=headers,
                            json={"sounds": ["ss-noservice"], "ttl": 60})
    assert resp.status == 200, await resp.text()
    # audit paging from the smallest and beyond the largest stream id
    resp = await client.get("/api/v1/audit?before=0-0", headers=headers)
    assert resp.status == 200 and (await resp.json())["entries"] == []
    resp = await client.get("/api/v1/audit?before=99999999999999999999-0", headers=headers)
    assert resp.status == 200 and (await resp.json())["entries"]
