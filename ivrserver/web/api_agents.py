"""Agent REST API and the agent desktop page.

    POST /api/v1/login                     {"agent", "password"} → {"token", "agent", "expires_at"} + cookie
    POST /api/v1/logout
    GET  /api/v1/me                        the agent, their state, customers they may read now
    POST /api/v1/me/state                  {"state": "ready" | "paused", "reason"?} → 202 (intent)
    POST /api/v1/contacts/{id}/notes       {"notes", "disposition", "case"?: {"id", "status"?,
                                            "next_step"?, "still_needed"?}} → 200
    GET  /api/v1/pops/unacked              supervisors
    GET  /api/v1/audit?count=&before=      supervisors

`page_routes()` serves the desktop page (`/`, `/static/app.{js,css}`,
`/static/{i18n,cases,incidents,deliveries}.js` and the message catalogues `/static/i18n/{en,zh}.json`) with a strict
Content-Security-Policy, for apps that do not already serve ivrserver/web/static.

POST bodies must be `application/json` (a cross-site form cannot send that without a preflight
we never answer) and at most 16 KiB.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ivrserver.domain import contact_notes
from ivrserver.services.agent_state import PbxUnavailable
from ivrserver.services.cases import actor_of_agent
from ivrserver.services.customers import CustomerService, NoteRejected
from ivrserver.services.privacy import PrivacyService
from ivrserver.web import bodies
from ivrserver.web.agent_ws import AgentHub
from ivrserver.web.auth import (
    COOKIE,
    Authenticator,
    LoginThrottled,
    current_agent,
    request_token,
    require_supervisor,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY = 16 * 1024
ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
AUDIT_ID_RE = re.compile(r"^\d{1,20}-\d{1,20}$")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


SetPaused = Callable[[str, bool], Awaitable[None]]  # may raise PbxUnavailable: the request gets 503
GetState = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class AgentApiContext:
    auth: Authenticator
    hub: AgentHub
    privacy: PrivacyService
    customers: CustomerService
    set_paused: SetPaused
    get_state: GetState | None = None
    clock: Callable[[], float] = time.time


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=SECURITY_HEADERS)


def _bad(message: str, status: int = 400) -> web.Response:
    return _json({"error": message}, status)


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_type != "application/json":
        return _bad("Content-Type must be application/json", 415)
    if request.content_length is None or request.content_length > MAX_BODY:
        return _bad(f"body must be at most {MAX_BODY} bytes with a Content-Length", 413)
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return _bad("body too large", 413)
    try:
        body = bodies.parse_json(raw)
    except bodies.BodyError as exc:
        return _bad(str(exc))
    if not isinstance(body, dict):
        return _bad("body must be a JSON object")
    return body


def _str_field(body: dict[str, Any], name: str, *, limit: int, required: bool = False,
               pattern: re.Pattern[str] | None = None) -> str | None:
    """A string field, or None if absent; raises ValueError with a precise message if wrong."""
    value = body.get(name)
    if value is None:
        if required:
            raise ValueError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    if len(value) > limit:
        raise ValueError(f"{name} must be at most {limit} characters")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL")
    if pattern is not None and not pattern.match(value):
        raise ValueError(f"{name} has an invalid format")
    return value


class AgentRoutes:
    """The handlers, one method each (the route table: `routes`)."""

    def __init__(self, ctx: AgentApiContext) -> None:
        self.ctx = ctx

    async def login(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        agent_id, password = body.get("agent"), body.get("password")
        if not isinstance(agent_id, str) or not isinstance(password, str):
            return _bad("agent and password are required strings")
        try:
            session = await self.ctx.auth.login(agent_id, password, source=self.ctx.auth.source_of(request))
        except LoginThrottled as exc:
            resp = _bad("too many failed logins; try again later", 429)
            resp.headers["Retry-After"] = str(exc.retry_after)
            return resp
        if session is None:
            return _bad("wrong agent or password", 401)
        resp = _json({"token": session.token, "expires_at": session.expires_at,
                      "agent": {"id": session.agent.id, "name": session.agent.name,
                                "supervisor": session.agent.supervisor}})
        resp.set_cookie(COOKIE, session.token, max_age=self.ctx.auth.session_seconds, httponly=True,
                        samesite="Strict", secure=request.secure, path="/")
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        token = request_token(request)
        if token:
            await self.ctx.auth.logout(token)
        resp = _json({"ok": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def me(self, request: web.Request) -> web.Response:
        agent = await current_agent(request)
        state = await self.ctx.get_state(agent.id) if self.ctx.get_state is not None else None
        return _json({"agent": {"id": agent.id, "name": agent.name, "supervisor": agent.supervisor},
                      "state": state, "customers": await self.ctx.privacy.customers_of(agent.id)})

    async def set_state(self, request: web.Request) -> web.Response:
        agent = await current_agent(request)
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        state = body.get("state")
        if state not in ("ready", "paused"):
            return _bad("state must be 'ready' or 'paused'")
        try:
            reason = _str_field(body, "reason", limit=100) or ""
        except ValueError as exc:
            return _bad(str(exc))
        try:
            await self.ctx.set_paused(agent.id, state == "paused")
        except PbxUnavailable as exc:
            return _bad(str(exc), 503)
        await self.ctx.hub.publish(agent.id, {"type": "state", "state": state, "requested": True,
                                         "reason": reason, "at": self.ctx.clock()})
        return _json({"state": state, "requested": True}, 202)

    async def save_notes(self, request: web.Request) -> web.Response:
        agent = await current_agent(request)
        contact_id = request.match_info["contact_id"]
        if not ID_RE.match(contact_id):
            return _bad("invalid contact id")
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        note, errors = contact_notes.validate(body, write_back=True,
                                              fault_services=self.ctx.customers.fault_services())
        if note is None:
            return _bad("; ".join(str(e) for e in errors))
        allowed = await self.ctx.privacy.may_write_contact(agent, contact_id, source=request.remote or "")
        if not allowed:
            return _bad("you are not handling this contact", 403)
        now = self.ctx.clock()
        try:
            saved = await self.ctx.customers.save_note(contact_id, note, now=now, actor=actor_of_agent(agent))
        except NoteRejected as exc:
            return _bad(str(exc))
        if saved is None:
            return _bad("no such contact", 404)
        case = note.case
        return _json({"saved": {
            "contact_id": contact_id, "agent_id": agent.id, "notes": saved.notes, "disposition": saved.disposition,
            "at": now, "case_id": case.case_id if case else None, "case_status": case.status if case else None,
            "next_step": case.next_step if case else None, "still_needed": case.still_needed if case else None}})

    async def unacked(self, request: web.Request) -> web.Response:
        await require_supervisor(request)
        return _json({"unacked": await self.ctx.hub.unacked(now=self.ctx.clock())})

    async def audit(self, request: web.Request) -> web.Response:
        sup = await require_supervisor(request)
        try:
            count = int(request.query.get("count", "100"))
        except ValueError:
            return _bad("count must be a whole number")
        if not 1 <= count <= 1000:
            return _bad("count must be 1..1000")
        before = request.query.get("before")
        if before is not None and not AUDIT_ID_RE.match(before):
            return _bad("before must be an audit entry id")
        page = await self.ctx.privacy.read_audit(sup, count=count, before=before, source=request.remote or "")
        entries = page.entries
        return _json({"entries": entries, "source": page.source,
                      "next_before": entries[-1]["id"] if len(entries) >= count else None})


def routes(ctx: AgentApiContext) -> list[web.RouteDef]:
    h = AgentRoutes(ctx)
    return [
        web.post("/api/v1/login", h.login),
        web.post("/api/v1/logout", h.logout),
        web.get("/api/v1/me", h.me),
        web.post("/api/v1/me/state", h.set_state),
        web.post("/api/v1/contacts/{contact_id}/notes", h.save_notes),
        web.get("/api/v1/pops/unacked", h.unacked),
        web.get("/api/v1/audit", h.audit),
    ]


def page_routes(static_dir: Path = STATIC_DIR) -> list[web.RouteDef]:
    """The agent desktop at `/` with its script and style under `/static/`, each with the CSP."""
    files = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css",
             "i18n.js": "text/javascript", "i18n/en.json": "application/json", "i18n/zh.json": "application/json",
             "cases.js": "text/javascript", "incidents.js": "text/javascript", "deliveries.js": "text/javascript"}
    pages = {name: (static_dir / name).read_bytes() for name in files}

    def page(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            return web.Response(body=pages[name], content_type=files[name], charset="utf-8",
                                headers={**SECURITY_HEADERS, "Content-Security-Policy": CSP})
        return serve

    return [web.get("/", page("index.html")),
            *(web.get(f"/static/{name}", page(name)) for name in files if name != "index.html")]
