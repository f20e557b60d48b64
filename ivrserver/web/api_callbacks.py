"""REST for callbacks under /api/v1/callbacks.

POST   /api/v1/callbacks         request one (JSON body; preferred_agent defaults to the asking agent)
GET    /api/v1/callbacks         list: ?state=&agent=&customer=&limit=
GET    /api/v1/callbacks/{id}    one
PATCH  /api/v1/callbacks/{id}    reschedule: {"at": …} or {"earliest": …, "latest": …}
DELETE /api/v1/callbacks/{id}    cancel (?reason=…)

Errors: 400 {"errors": {field: message}}, 404 {"error": …}, 409 {"error": …} (invalid transition,
or the callback is being placed right now).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ivrserver.domain.callbacks import Callback, InvalidTransition, RequestInvalid, to_dict
from ivrserver.services.callbacks import CallbackBusy, CallbackNotFound, CallbackService
from ivrserver.web import bodies

CurrentAgent = Callable[[web.Request], str | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_LIMIT = 1000


def _bad(errors: dict[str, str]) -> web.Response:
    return web.json_response({"errors": errors}, status=400)


def _one(cb: Callback, status: int = 200) -> web.Response:
    return web.json_response(to_dict(cb), status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await bodies.read_json(request)
    except bodies.BodyError as exc:
        raise RequestInvalid({"body": str(exc)}) from None
    if not isinstance(body, dict):
        raise RequestInvalid({"body": "expected a JSON object"})
    return body


def _errors(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestInvalid as exc:
            return _bad(exc.errors)
        except CallbackNotFound as exc:
            return web.json_response({"error": str(exc.args[0])}, status=404)
        except (InvalidTransition, CallbackBusy) as exc:
            return web.json_response({"error": str(exc)}, status=409)

    return wrapped


def routes(service: CallbackService, current_agent: CurrentAgent | None = None) -> list[web.RouteDef]:
    @_errors
    async def create(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        agent = current_agent(request) if current_agent else None
        if body.get("preferred_agent") is None and agent:
            body["preferred_agent"] = agent
        cb = await service.request(body, requested_by=agent)
        return _one(cb, status=201)

    @_errors
    async def list_(request: web.Request) -> web.StreamResponse:
        q = request.query
        unknown = sorted(set(q) - {"state", "agent", "customer", "limit"})
        if unknown:
            return _bad({"query": f"unknown parameter(s): {', '.join(unknown)}"})
        limit_raw = q.get("limit", "100")
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= MAX_LIMIT:
            return _bad({"limit": f"expected 1..{MAX_LIMIT}, got {limit_raw!r}"})
        items = await service.list(state=q.get("state") or None, agent=q.get("agent") or None,
                                   customer=q.get("customer") or None, limit=int(limit_raw))
        return web.json_response({"callbacks": [to_dict(cb) for cb in items]})

    @_errors
    async def get(request: web.Request) -> web.StreamResponse:
        return _one(await service.get(request.match_info["id"]))

    @_errors
    async def patch(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        return _one(await service.reschedule(request.match_info["id"], body))

    @_errors
    async def delete(request: web.Request) -> web.StreamResponse:
        reason = request.query.get("reason", "cancelled")
        if len(reason) > 200 or any(ord(c) < 32 for c in reason):
            return _bad({"reason": "at most 200 characters, no control characters"})
        return _one(await service.cancel(request.match_info["id"], reason=reason))

    return [
        web.post("/api/v1/callbacks", create),
        web.get("/api/v1/callbacks", list_),
        web.get("/api/v1/callbacks/{id}", get),
        web.patch("/api/v1/callbacks/{id}", patch),
        web.delete("/api/v1/callbacks/{id}", delete),
    ]
