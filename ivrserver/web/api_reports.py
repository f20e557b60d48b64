"""REST over the supervisors' reports (services/reports.py).

GET /api/v1/reports/{name}?from=YYYY-MM-DD&to=YYYY-MM-DD[&menu=|&queue=|&agent=][&format=csv][&table=]

name: ivr, selfservice, queues, repeats, callbacks, agents. JSON by default; `format=csv` gives one
of the report's tables (`table`, default its first) as a formula-safe CSV download.
Who: supervisors (session); agents get 403. Errors: 400 {"error"} (a parameter, with what is
wrong), 404 (no such report), 503 (no system of record).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ivrserver.domain import reports as rp
from ivrserver.services.reports import ReportService, ReportsUnavailable

Guard = Callable[[web.Request], Awaitable[object]]


def routes(service: ReportService, *, guard: Guard) -> list[web.RouteDef]:
    async def report(request: web.Request) -> web.StreamResponse:
        await guard(request)
        name = request.match_info["name"]
        if name not in rp.REPORTS:
            return web.json_response({"error": "no such report", "reports": list(rp.REPORTS)}, status=404)
        params = {k: v for k, v in request.query.items()}
        if len(params) != len(request.query):
            return web.json_response({"error": "a parameter is given twice"}, status=400)
        try:
            q = service.parse(name, params)
        except rp.RangeError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        try:
            body = await service.run(q)
        except ReportsUnavailable as exc:
            return web.json_response({"error": str(exc)}, status=503)
        if not q.csv:
            return web.json_response(body, headers={"Cache-Control": "no-store"})
        filename = f"ivrserver-{q.report}-{q.table}-{body['from']}-{body['to']}.csv"
        return web.Response(text=service.csv(q, body), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                     "Cache-Control": "no-store"})

    return [web.get("/api/v1/reports/{name}", report)]
