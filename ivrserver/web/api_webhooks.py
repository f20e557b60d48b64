"""REST for supervisors over outgoing webhooks (services/webhooks.py).

GET  /api/v1/webhooks/endpoints                    the configured endpoints (name, url, events; no secrets)
GET  /api/v1/webhooks/deliveries?state=&event=&limit=  the delivery log, newest first
GET  /api/v1/webhooks/dead?limit=                  the dead letters, most recently dead first
POST /api/v1/webhooks/deliveries/{id}/retry        re-queue a dead delivery (a fresh attempt budget; audited)

Who: supervisors only (`guard`, e.g. web.auth.require_supervisor). Errors: 400 {"errors": {field:
message}}, 401, 403, 404 {"error": …}, 409 {"error": …} (the delivery is not dead).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ivrserver.domain.webhooks import EVENT_RE, DeliveryState
from ivrserver.services.webhooks import WebhookNotDead, WebhookNotFound, Webhooks

Guard = Callable[[web.Request], Awaitable[Any]]
MAX_LIMIT = 1000
_STATES = tuple(s.value for s in DeliveryState)
_ID = re.compile(r"^wh-[0-9a-f]{32}$")  # domain.webhooks.delivery_id


def _bad(errors: dict[str, str]) -> web.Response:
    return web.json_response({"errors": errors}, status=400)


def _limit(request: web.Request, errors: dict[str, str]) -> int:
    raw = request.query.get("limit", "100")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        errors["limit"] = f"expected 1..{MAX_LIMIT}"
        return 0
    return int(raw)


def _unknown(request: web.Request, allowed: set[str], errors: dict[str, str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        errors["query"] = f"unknown parameter(s): {', '.join(u[:40] for u in unknown)[:200]}"


def routes(webhooks: Webhooks, *, guard: Guard) -> list[web.RouteDef]:
    async def endpoints(request: web.Request) -> web.StreamResponse:
        await guard(request)
        return web.json_response({"endpoints": webhooks.endpoint_list()})

    async def deliveries(request: web.Request) -> web.StreamResponse:
        await guard(request)
        errors: dict[str, str] = {}
        _unknown(request, {"state", "event", "limit"}, errors)
        limit = _limit(request, errors)
        state = request.query.get("state")
        if state is not None and state not in _STATES:
            errors["state"] = f"expected one of {', '.join(_STATES)}"
        event = request.query.get("event")
        if event is not None and (len(event) > 100 or not EVENT_RE.fullmatch(event)):
            errors["event"] = "expected an event name like case.resolved"
        if errors:
            return _bad(errors)
        found = await webhooks.deliveries(state=state, event=event, limit=limit)
        return web.json_response({"deliveries": [d.summary() for d in found]})

    async def dead(request: web.Request) -> web.StreamResponse:
        await guard(request)
        errors: dict[str, str] = {}
        _unknown(request, {"limit"}, errors)
        limit = _limit(request, errors)
        if errors:
            return _bad(errors)
        return web.json_response({"deliveries": [d.summary() for d in await webhooks.dead(limit=limit)]})

    async def retry(request: web.Request) -> web.StreamResponse:
        supervisor = await guard(request)
        ident = request.match_info["id"]
        if not _ID.fullmatch(ident):
            return web.json_response({"error": "no such delivery"}, status=404)
        try:
            delivery = await webhooks.retry(ident, by=str(getattr(supervisor, "id", "supervisor")),
                                            source=request.remote or "")
        except WebhookNotFound:
            return web.json_response({"error": "no such delivery"}, status=404)
        except WebhookNotDead:
            return web.json_response({"error": "only a dead delivery can be re-queued"}, status=409)
        return web.json_response(delivery.summary())

    return [
        web.get("/api/v1/webhooks/endpoints", endpoints),
        web.get("/api/v1/webhooks/deliveries", deliveries),
        web.get("/api/v1/webhooks/dead", dead),
        web.post("/api/v1/webhooks/deliveries/{id}/retry", retry),
    ]
