"""REST for supervisors over the case follow-up's dead letters (services/case_followup.py).

GET  /api/v1/case-followup/dead?limit=       the dead letters, most recently dead first: which
                                             change (event id, kind, case, customer), which handler,
                                             the last error, attempts, first/last attempt, when it died
POST /api/v1/case-followup/dead/{id}/retry   put that change back on the stream for that handler
                                             alone, once (a fresh attempt budget; audited)

A module of its own rather than more of api_webhooks.py: these are case changes a handler (webhooks
is one, notices another) gave up on, not webhook deliveries; the page shows both lists side by side.
Who: supervisors only (`guard`). Errors: 400 {"errors": {field: message}}, 401, 403, 404 {"error": …}
(not a dead letter: never was, expired, or retried already).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ivrserver.services.case_followup import LETTER_ID_RE, CaseFollowup, DeadLetterNotFound

Guard = Callable[[web.Request], Awaitable[Any]]
MAX_LIMIT = 1000


def routes(followup: CaseFollowup, *, guard: Guard) -> list[web.RouteDef]:
    async def dead(request: web.Request) -> web.StreamResponse:
        await guard(request)
        errors: dict[str, str] = {}
        unknown = sorted(set(request.query) - {"limit"})
        if unknown:
            errors["query"] = f"unknown parameter(s): {', '.join(u[:40] for u in unknown)[:200]}"
        raw = request.query.get("limit", "100")
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
            errors["limit"] = f"expected 1..{MAX_LIMIT}"
        if errors:
            return web.json_response({"errors": errors}, status=400)
        letters = await followup.dead_letters(limit=int(raw))
        return web.json_response({"items": [d.summary() for d in letters]})

    async def retry(request: web.Request) -> web.StreamResponse:
        supervisor = await guard(request)
        ident = request.match_info["id"]
        if not LETTER_ID_RE.fullmatch(ident):
            return web.json_response({"error": "no such dead letter"}, status=404)
        try:
            entry = await followup.retry(ident, by=str(getattr(supervisor, "id", "supervisor")),
                                         source=request.remote or "")
        except DeadLetterNotFound:
            return web.json_response({"error": "no such dead letter (or retried already)"}, status=404)
        return web.json_response({"id": ident, "requeued_as": entry})

    return [
        web.get("/api/v1/case-followup/dead", dead),
        web.post("/api/v1/case-followup/dead/{id}/retry", retry),
    ]
