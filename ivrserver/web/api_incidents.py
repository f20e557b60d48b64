"""REST over mass-fault incidents (services/incidents.py).

GET   /api/v1/incidents?state=&limit=          the latest incidents, newest first
POST  /api/v1/incidents                        open one by hand (a planned outage):
                                               {"service", "area", "cause"?, "expected_fix_at"?, "planned"?}
GET   /api/v1/incidents/{id}                   one incident, with its subscribers count
PATCH /api/v1/incidents/{id}                   {"cause"?, "expected_fix_at"? (epoch seconds or null)}
POST  /api/v1/incidents/{id}/acknowledge       the network team has it
POST  /api/v1/incidents/{id}/resolve           {"cause"?}: fixed — notices go out, figures archived;
                                               200 with the notices' counts, or 202 when they take
                                               longer than RESOLVE_WAIT_SECONDS (they go on: GET the
                                               incident until figures.notices_scheduled is there)

Who: supervisors (session) and back-office tokens (web/backoffice.py, the network team's system);
agents get 403. Errors: 400 {"errors": {field: message}}, 401, 403, 404 {"error"}, 409 {"error"}
(a resolved incident, or an active incident for the same service and area: "existing" names it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ivrserver.domain import incidents as inc
from ivrserver.services.incidents import IncidentConflict, IncidentError, IncidentNotFound, IncidentService
from ivrserver.web import bodies
from ivrserver.web.auth import AGENT
from ivrserver.web.backoffice import BACKOFFICE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_LIMIT = 1000
MAX_CAUSE = 500
RESOLVE_WAIT_SECONDS = 5.0  # a resolve answers within this; thousands of notices go on behind it
_ID = re.compile(r"^inc-[0-9]{1,12}-[a-z][a-z0-9_]{0,31}-[\w-]{1,64}$")
_STATES = tuple(s.value for s in inc.IncidentState)
# a fix time: within ten years of the epoch's present range (seconds, not milliseconds)
_MIN_EPOCH, _MAX_EPOCH = 946_684_800, 4_102_444_800


class _Invalid(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("invalid request")
        self.errors = errors


def actor_of(request: web.Request) -> str:
    """'supervisor:<id>' or 'backoffice:<token name>'; 401/403 for anyone else."""
    agent = request.get(AGENT)
    if agent is not None:
        if not agent.supervisor:
            raise web.HTTPForbidden(text='{"error": "supervisors and back-office tokens only"}',
                                    content_type="application/json")
        return f"supervisor:{agent.id}"
    name = request.get(BACKOFFICE)
    if name is not None:
        return f"backoffice:{name}"
    raise web.HTTPUnauthorized(text='{"error": "login required"}', content_type="application/json")


async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    try:
        body = await bodies.read_json(request)
    except bodies.BodyError as exc:
        raise _Invalid({"body": str(exc)}) from None
    if not isinstance(body, dict):
        raise _Invalid({"body": "expected a JSON object"})
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise _Invalid({"body": f"unknown field(s): {', '.join(str(u)[:40] for u in unknown)[:200]}"})
    return body


def _text(body: dict[str, Any], key: str, errors: dict[str, str], limit: int = MAX_CAUSE) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or not all(c.isprintable() for c in value):
        errors[key] = f"expected text of at most {limit} printable characters"
        return None
    return value.strip()


def _epoch(body: dict[str, Any], key: str, errors: dict[str, str]) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not _MIN_EPOCH <= value <= _MAX_EPOCH:
        errors[key] = "expected a time as epoch seconds (or null)"
        return None
    return float(value)


def _incident_id(request: web.Request) -> str:
    ident = request.match_info["id"]
    if not _ID.fullmatch(ident):
        raise IncidentNotFound(ident[:40])
    return ident


def _errors(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Invalid as exc:
            return web.json_response({"errors": exc.errors}, status=400)
        except IncidentNotFound as exc:
            return web.json_response({"error": f"no incident {exc.args[0]}"}, status=404)
        except IncidentConflict as exc:
            return web.json_response({"error": str(exc), "existing": exc.existing or None}, status=409)
        except IncidentError as exc:
            return web.json_response({"error": str(exc)}, status=409)

    return wrapped


def routes(service: IncidentService) -> list[web.RouteDef]:
    @_errors
    async def list_(request: web.Request) -> web.StreamResponse:
        actor_of(request)
        errors: dict[str, str] = {}
        unknown = sorted(set(request.query) - {"state", "limit"})
        if unknown:
            errors["query"] = f"unknown parameter(s): {', '.join(u[:40] for u in unknown)[:200]}"
        state = request.query.get("state")
        if state is not None and state not in _STATES:
            errors["state"] = f"expected one of {', '.join(_STATES)}"
        raw = request.query.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            errors["limit"] = f"expected 1..{MAX_LIMIT}"
        if errors:
            raise _Invalid(errors)
        found = await service.list(state=state, limit=int(raw))
        return web.json_response({"incidents": [inc.to_dict(i) for i in found]})

    @_errors
    async def create(request: web.Request) -> web.StreamResponse:
        actor = actor_of(request)
        body = await _body(request, {"service", "area", "cause", "expected_fix_at", "planned"})
        errors: dict[str, str] = {}
        service_name = body.get("service")
        if not isinstance(service_name, str) or not inc.SERVICE_RE.match(service_name):
            errors["service"] = "expected a service name such as mobile_data"
        area = _text(body, "area", errors, 64)
        if not area:
            errors.setdefault("area", "expected an area (a key such as chaoyang-liaoning or a name)")
        cause = _text(body, "cause", errors) or ""
        fix = _epoch(body, "expected_fix_at", errors)
        planned = body.get("planned", True)
        if not isinstance(planned, bool):
            errors["planned"] = "expected true or false"
        if errors:
            raise _Invalid(errors)
        try:
            incident = await service.open(str(service_name), str(area), actor=actor, planned=bool(planned),
                                          cause=cause, expected_fix_at=fix)
        except IncidentError as exc:
            raise _Invalid({"service" if "service" in str(exc) else "area": str(exc)}) from None
        return web.json_response(inc.to_dict(incident), status=201)

    @_errors
    async def get(request: web.Request) -> web.StreamResponse:
        actor_of(request)
        incident = await service.get(_incident_id(request))
        subscribers = await service.subscriber_count(incident.id)
        return web.json_response({**inc.to_dict(incident), "subscribers": subscribers})

    @_errors
    async def patch(request: web.Request) -> web.StreamResponse:
        actor = actor_of(request)
        ident = _incident_id(request)
        body = await _body(request, {"cause", "expected_fix_at"})
        errors: dict[str, str] = {}
        cause = _text(body, "cause", errors)
        fix = _epoch(body, "expected_fix_at", errors)
        if errors:
            raise _Invalid(errors)
        kwargs: dict[str, Any] = {"cause": cause}
        if "expected_fix_at" in body:
            kwargs["expected_fix_at"] = fix
        return web.json_response(inc.to_dict(await service.update(ident, actor=actor, **kwargs)))

    @_errors
    async def acknowledge(request: web.Request) -> web.StreamResponse:
        actor = actor_of(request)
        return web.json_response(inc.to_dict(await service.acknowledge(_incident_id(request), actor=actor)))

    @_errors
    async def resolve(request: web.Request) -> web.StreamResponse:
        actor = actor_of(request)
        ident = _incident_id(request)
        body = await _body(request, {"cause"}) if request.can_read_body else {}
        errors: dict[str, str] = {}
        cause = _text(body, "cause", errors)
        if errors:
            raise _Invalid(errors)
        report = await service.resolve(ident, actor=actor, cause=cause, wait=RESOLVE_WAIT_SECONDS)
        return web.json_response({**inc.to_dict(report.incident), "notices_scheduled": report.notices_scheduled,
                                  "notices_refused": report.notices_refused, "notices_pending": report.pending},
                                 status=202 if report.pending else 200)

    return [
        web.get("/api/v1/incidents", list_),
        web.post("/api/v1/incidents", create),
        web.get("/api/v1/incidents/{id}", get),
        web.patch("/api/v1/incidents/{id}", patch),
        web.post("/api/v1/incidents/{id}/acknowledge", acknowledge),
        web.post("/api/v1/incidents/{id}/resolve", resolve),
    ]
