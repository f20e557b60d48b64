"""Every route of the real app that takes a body answers a 100,000-deep JSON body with 400 (401/403
when the caller may not use the route at all, decided before the body is read), never 500; the
one JSON reader (web/bodies.py) measures nesting without recursion."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ivrserver.app import IvrServer
from ivrserver.web import bodies
from tests.test_supervision import BACKOFFICE_TOKEN, started  # noqa: F401 - the running app fixture

BODY_METHODS = {"POST", "PUT", "PATCH"}
DEEP_BODIES = {
    "array": "[" * 100_000,
    "object": '{"a":' * 40_000 + "1" + "}" * 40_000,
    "closed-array": "[" * 60_000 + "]" * 60_000,
    "small": "[" * 10_000,  # under the 16 KB limit of login and notes: must be parsed and refused
}
NO_BODY = {"/api/v1/menus/reload", "/api/v1/logout",  # read no body; logout runs last (ends the session)
           "/api/v1/policies/reload", "/api/v1/incidents/inc-1764900000-mobile_data-chaoyang/acknowledge",
           "/api/v1/webhooks/deliveries/c-1/retry", "/api/v1/case-followup/dead/c-1/retry"}
# concrete values for the path variables: existing ones where the route looks the resource up
PATH_VALUES = {"menu": "hotline", "agent": "agent1003", "id": "c-1"}
TINY_LIMIT = {"/api/v1/me/preferences"}  # 1 KiB: even the 10 KB "small" body is 413 there
# incident and compensation ids are checked for their shape before the body is read (a malformed
# one is 404 at once): a well-formed id that does not exist lets the body be read and refused
ROUTE_VALUES = {"/api/v1/incidents/": {"id": "inc-1764900000-mobile_data-chaoyang"},
                "/api/v1/compensations/": {"cid": "cp-" + "0" * 24}}


@pytest.mark.parametrize(("text", "depth"), [
    ("{}", 1), ("[[], {}]", 2), ('{"a": "[[[[[[", "b": [1, [2]]}', 3), ('"[\\"[["', 0),
    ("[" * 100_000, 100_000), ('{"x": "\\\\"}', 1),
])
def test_nesting_depth_without_recursion(text: str, depth: int) -> None:
    assert bodies.nesting_depth(text) == depth


@pytest.mark.parametrize("text", ["[" * 33 + "]" * 33, "[" * 100_000, "NaN", "[Infinity]", "", "{", b"\xff"])
def test_the_reader_refuses_with_a_clear_error(text: str | bytes) -> None:
    with pytest.raises(bodies.BodyError):
        bodies.parse_json(text)


def test_the_reader_accepts_ordinary_bodies() -> None:
    assert bodies.parse_json(b'{"sounds": ["ss-noservice"], "ttl": 60}') == {"sounds": ["ss-noservice"], "ttl": 60}
    assert bodies.parse_json("[" * 32 + "]" * 32) is not None


def body_routes(server: IvrServer) -> list[tuple[str, str]]:
    assert server._runner is not None
    out = []
    for route in server._runner.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method in BODY_METHODS and path:
            values = next((v for prefix, v in ROUTE_VALUES.items() if path.startswith(prefix)), {})
            out.append((route.method, re.sub(r"\{(\w+)[^}]*\}",
                                             lambda m, v=values: {**PATH_VALUES, **v}.get(m.group(1), "x1"), path)))
    return sorted(set(out), key=lambda r: (r[1] in NO_BODY, r))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_every_body_route_answers_a_deep_body_with_400(started: tuple[IvrServer, Path],  # noqa: F811
                                                             http: aiohttp.ClientSession) -> None:
    server, _ = started
    base = f"http://127.0.0.1:{server.web_port}"
    async with http.post(base + "/api/v1/login", json={"agent": "agent1010", "password": "agent1010"}) as r:
        assert r.status == 200, await r.text()
        token = (await r.json())["token"]
    routes = body_routes(server)
    assert ("POST", "/api/v1/callbacks") in routes and ("PUT", "/api/v1/menus/hotline/announcement") in routes
    assert len(routes) >= 8
    seen: dict[tuple[str, str, str], int] = {}
    for method, path in routes:
        for name, text in DEEP_BODIES.items():
            for who, auth in (("supervisor", {"Authorization": f"Bearer {token}"}),
                              ("back office", {"Authorization": f"Bearer {BACKOFFICE_TOKEN}"}), ("no login", {})):
                headers = {"Content-Type": "application/json", **auth}
                async with http.request(method, base + path, data=text, headers=headers) as r:
                    seen[(method, path, f"{name}, {who}")] = r.status
    server_errors = {k: v for k, v in seen.items() if v >= 500}
    assert not server_errors, server_errors

    def refused_as_body(method: str, path: str, name: str, who: str) -> bool:
        v = seen[(method, path, f"{name}, {who}")]
        return v == 400 or (v == 413 and (name != "small" or path in TINY_LIMIT))

    # as a supervisor, or as a back office for the routes only back offices use (403 to agents and
    # supervisors): refused as bad JSON; 413 only where a route's own smaller size limit refuses
    # the body before reading it (login, notes: 16 KB; preferences: 1 KiB)
    wrong = {(method, path, name): (seen[(method, path, f"{name}, supervisor")],
                                    seen[(method, path, f"{name}, back office")])
             for method, path in routes if path not in NO_BODY for name in DEEP_BODIES
             if not any(refused_as_body(method, path, name, who) for who in ("supervisor", "back office"))}
    assert not wrong, wrong
    backoffice_only = {path for (_, path, who), v in seen.items() if who.endswith("supervisor") and v == 403}
    assert backoffice_only == {"/api/v1/cases/c-1/results"}, backoffice_only
    # a back office sees only what it was given (anything else is 404, as if it did not exist); a
    # route that reads no body answers for the resource (no such incident or delivery: 404)
    may_404 = {k for k in seen if k[2].endswith("back office") or k[1] in NO_BODY}
    assert {v for k, v in seen.items() if k not in may_404} <= {200, 400, 401, 403, 413}, seen
    assert {v for k, v in seen.items() if k in may_404} <= {200, 400, 401, 403, 404, 413}, seen
