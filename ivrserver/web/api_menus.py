"""REST for IVR menus under /api/v1/menus.

POST   /api/v1/menus/reload                   the one reload path (same as SIGHUP and the file watch):
                                              200 {"ok": true, "version", "changed", "warnings"} or
                                              422 {"ok": false, "version" (still live), "errors": [...]}
GET    /api/v1/menus                          live version, its menus and lint warnings
GET    /api/v1/menus/{menu}/announcement      {"sounds": [...]} (empty: switched off)
PUT    /api/v1/menus/{menu}/announcement      {"sounds": ["ss-noservice"], "ttl": 3600} switches it on
DELETE /api/v1/menus/{menu}/announcement      switches it off

`guard(request)` (e.g. web.auth.require_supervisor) runs first on every route when given.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ivrserver.domain.menu import NAME_RE
from ivrserver.services.announcements import Announcements
from ivrserver.services.menus import MenuRegistry
from ivrserver.web import bodies

Guard = Callable[[web.Request], Awaitable[object]]
MAX_ANNOUNCEMENT_FILES = 10
MAX_TTL = 366 * 86400  # a year; Redis refuses expiries past its range (500 before)


def routes(registry: MenuRegistry, *, announcements: Announcements | None = None,
           guard: Guard | None = None) -> list[web.RouteDef]:
    async def check(request: web.Request) -> None:
        if guard is not None:
            await guard(request)

    async def reload(request: web.Request) -> web.Response:
        await check(request)
        result = await asyncio.to_thread(registry.reload)
        return web.json_response(result.as_dict(), status=200 if result.ok else 422)

    async def show(request: web.Request) -> web.Response:
        await check(request)
        live = registry.current
        menus: list[dict[str, Any]] = [
            {"name": m.name, "file": m.file, "language": m.language, "nodes": len(m.nodes),
             "entry": {"open": m.entry_open, "closed": m.entry_closed, "holiday": m.entry_holiday},
             "hours_timezone": m.hours.timezone if m.hours else None}
            for m in live.menus.values()
        ]
        return web.json_response({"version": live.version, "loaded_at": live.loaded_at, "menus": menus,
                                  "warnings": [w.as_dict() for w in live.warnings]})

    def menu_name(request: web.Request) -> str:
        name = request.match_info["menu"]
        if not NAME_RE.match(name) or name not in registry.current.menus:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no menu {name!r}"}), content_type="application/json")
        return name

    async def get_announcement(request: web.Request) -> web.Response:
        await check(request)
        assert announcements is not None
        sounds = await announcements.read(menu_name(request))
        return web.json_response({"sounds": list(sounds)})

    async def put_announcement(request: web.Request) -> web.Response:
        await check(request)
        assert announcements is not None
        name = menu_name(request)
        try:
            body = await bodies.read_json(request)
        except bodies.BodyError as exc:
            return web.json_response({"errors": {"body": str(exc)}}, status=400)
        sounds = body.get("sounds") if isinstance(body, dict) else None
        ttl = body.get("ttl") if isinstance(body, dict) else None
        if not isinstance(sounds, list) or not all(isinstance(s, str) for s in sounds) \
                or not 1 <= len(sounds) <= MAX_ANNOUNCEMENT_FILES:
            return web.json_response({"errors": {"sounds": f"expected 1..{MAX_ANNOUNCEMENT_FILES} sound names"}},
                                     status=400)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_TTL):
            return web.json_response({"errors": {"ttl": f"expected a whole number of seconds, 1-{MAX_TTL}"}},
                                     status=400)
        try:
            await announcements.set(name, sounds, ttl)
        except ValueError as exc:
            return web.json_response({"errors": {"sounds": str(exc)}}, status=400)
        return web.json_response({"sounds": sounds, "ttl": ttl})

    async def delete_announcement(request: web.Request) -> web.Response:
        await check(request)
        assert announcements is not None
        await announcements.clear(menu_name(request))
        return web.json_response({"sounds": []})

    out = [web.post("/api/v1/menus/reload", reload), web.get("/api/v1/menus", show)]
    if announcements is not None:
        out += [web.get("/api/v1/menus/{menu}/announcement", get_announcement),
                web.put("/api/v1/menus/{menu}/announcement", put_announcement),
                web.delete("/api/v1/menus/{menu}/announcement", delete_announcement)]
    return out
