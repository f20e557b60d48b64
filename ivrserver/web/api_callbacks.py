"""REST for callbacks under /api/v1/callbacks.

POST   /api/v1/callbacks         request one (JSON body; preferred_agent defaults to the asking agent;
                                 tier to the customer's)
GET    /api/v1/callbacks         list: ?state=&agent=&customer=&limit= (an agent gets only theirs)
GET    /api/v1/callbacks/{id}    one
PATCH  /api/v1/callbacks/{id}    reschedule: {"at": …} or {"earliest": …, "latest": …}
DELETE /api/v1/callbacks/{id}    cancel (?reason=…)

Who: a logged-in agent or supervisor (session), or a back-office token (web/backoffice.py). Agents
see and change only their own callbacks and request only agent-first calls to a number on the
customer's record (domain/callback_access.py); every read is audited.

Errors: 400 {"errors": {field: message}}, 401 {"error": "login required"}, 403 {"error": …} (not
theirs, or a call only a supervisor or back office may place), 404 {"error": …}, 409 {"error": …}
(invalid transition, or the callback is being placed right now).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ivrserver.domain.callback_access import Actor, Role
from ivrserver.domain.callbacks import Callback, InvalidTransition, RequestInvalid, to_dict
from ivrserver.services.callbacks import CallbackBusy, CallbackForbidden, CallbackNotFound, CallbackService
from ivrserver.web import bodies
from ivrserver.web.auth import AGENT
from ivrserver.web.backoffice import BACKOFFICE

ActorOf = Callable[[web.Request], Actor | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_actor(request: web.Request) -> Actor | None:
    """Who sends this request: the session's agent (auth_middleware) or a back-office token."""
    source = request.remote or ""
    agent = request.get(AGENT)
    if agent is not None:
        return Actor(agent.id, Role.SUPERVISOR if agent.supervisor else Role.AGENT, source)
    name = request.get(BACKOFFICE)
    if name is not None:
        return Actor(name, Role.BACKOFFICE, source)
    return None


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
        except CallbackForbidden as exc:
            return web.json_response({"error": str(exc)}, status=403)
        except (InvalidTransition, CallbackBusy) as exc:
            return web.json_response({"error": str(exc)}, status=409)

    return wrapped


def routes(service: CallbackService, actor_of: ActorOf = request_actor) -> list[web.RouteDef]:
    def who(request: web.Request) -> Actor:
        actor = actor_of(request)
        if actor is None:
            raise web.HTTPUnauthorized(text='{"error": "login required"}', content_type="application/json")
        return actor

    @_errors
    async def create(request: web.Request) -> web.StreamResponse:
        actor = who(request)
        body = await _body(request)
        if body.get("preferred_agent") is None and actor.role in (Role.AGENT, Role.SUPERVISOR):
            body["preferred_agent"] = actor.id
        cb = await service.request(body, actor=actor)
        return _one(cb, status=201)

    @_errors
    async def list_(request: web.Request) -> web.StreamResponse:
        actor = who(request)
        q = request.query
        unknown = sorted(set(q) - {"state", "agent", "customer", "limit"})
        if unknown:
            return _bad({"query": f"unknown parameter(s): {', '.join(unknown)}"})
        limit_raw = q.get("limit", "100")
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= MAX_LIMIT:
            return _bad({"limit": f"expected 1..{MAX_LIMIT}, got {limit_raw!r}"})
        items = await service.list(state=q.get("state") or None, agent=q.get("agent") or None,
                                   customer=q.get("customer") or None, limit=int(limit_raw), actor=actor)
        return web.json_response({"callbacks": [to_dict(cb) for cb in items]})

    @_errors
    async def get(request: web.Request) -> web.StreamResponse:
        return _one(await service.get(request.match_info["id"], actor=who(request)))

    @_errors
    async def patch(request: web.Request) -> web.StreamResponse:
        actor = who(request)
        body = await _body(request)
        return _one(await service.reschedule(request.match_info["id"], body, actor=actor))

    @_errors
    async def delete(request: web.Request) -> web.StreamResponse:
        actor = who(request)
        reason = request.query.get("reason", "cancelled")
        if len(reason) > 200 or any(ord(c) < 32 for c in reason):
            return _bad({"reason": "at most 200 characters, no control characters"})
        return _one(await service.cancel(request.match_info["id"], reason=reason, actor=actor))

    return [
        web.post("/api/v1/callbacks", create),
        web.get("/api/v1/callbacks", list_),
        web.get("/api/v1/callbacks/{id}", get),
        web.patch("/api/v1/callbacks/{id}", patch),
        web.delete("/api/v1/callbacks/{id}", delete),
    ]
