"""Agent REST API and the agent desktop page.

    POST /api/v1/login                     {"agent", "password"} → {"token", "agent", "expires_at"} + cookie
    POST /api/v1/logout
    GET  /api/v1/me                        the agent, their state, customers they may read now
    POST /api/v1/me/state                  {"state": "ready" | "paused", "reason"?} → 202 (intent)
    POST /api/v1/contacts/{id}/notes       {"notes", "disposition", "case"?: {"id", "status"?,
                                            "next_step"?, "still_needed"?}} → 200
    GET  /api/v1/pops/unacked              supervisors
    GET  /api/v1/audit?count=&before=      supervisors

`page_routes()` serves the desktop page (`/` and `/static/app.{js,css}`) with a strict
Content-Security-Policy, for apps that do not already serve ivrserver/web/static.

POST bodies must be `application/json` (a cross-site form cannot send that without a preflight
we never answer) and at most 16 KiB.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from ivrserver.domain.model import CaseStatus
from ivrserver.store import history
from ivrserver.store.keys import Keys
from ivrserver.store.pops import AuditLog, PopStore, contact_field
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
DISPOSITIONS = ("resolved", "follow_up", "escalated", "callback_scheduled", "no_action", "wrong_number",
                "other")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class NoteUpdate:
    """An agent's write-back for one contact (and optionally one of the customer's cases)."""

    contact_id: str
    agent_id: str
    notes: str
    disposition: str
    at: float
    case_id: str | None = None
    case_status: str | None = None  # "open" | "closed"
    next_step: str | None = None
    still_needed: str | None = None


class NoteRejected(ValueError):
    """The write-back is inconsistent (e.g. the case is another customer's): 400 with this message."""


SetPaused = Callable[[str, bool], Awaitable[None]]
SaveNotes = Callable[[NoteUpdate], Awaitable[bool]]  # False: no such contact; may raise NoteRejected
GetState = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class AgentApiContext:
    auth: Authenticator
    hub: AgentHub
    store: PopStore
    audit: AuditLog
    set_paused: SetPaused
    save_notes: SaveNotes
    get_state: GetState | None = None
    clock: Callable[[], float] = time.time


def history_saver(redis: aioredis.Redis, keys: Keys, *, retention_days: int = 365) -> SaveNotes:
    """SaveNotes on store/history.py: notes + disposition on the contact record; status, next step
    and still-needed on the case, which must belong to the contact's customer."""

    async def save(update: NoteUpdate) -> bool:
        contact = await history.get_contact(redis, keys, update.contact_id)
        if contact is None:
            return False
        if update.case_id is not None:
            case = await history.get_case(redis, keys, update.case_id)
            if case is None or case.customer_id != contact.customer_id:
                raise NoteRejected("case is not one of this caller's cases")
        await history.update_contact_notes(redis, keys, update.contact_id,
                                           {"notes": update.notes, "disposition": update.disposition},
                                           now=update.at, retention_days=retention_days)
        if update.case_id is not None:
            changes: dict[str, Any] = {}
            if update.case_status is not None:
                changes["status"] = CaseStatus(update.case_status)
            if update.next_step is not None:
                changes["next_step"] = update.next_step
            if update.still_needed is not None:
                changes["still_needed"] = update.still_needed
            if changes:
                await history.update_case(redis, keys, update.case_id, changes)
        return True

    return save


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


def routes(ctx: AgentApiContext) -> list[web.RouteDef]:
    async def login(request: web.Request) -> web.Response:
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        agent_id, password = body.get("agent"), body.get("password")
        if not isinstance(agent_id, str) or not isinstance(password, str):
            return _bad("agent and password are required strings")
        try:
            session = await ctx.auth.login(agent_id, password, source=ctx.auth.source_of(request))
        except LoginThrottled as exc:
            resp = _bad("too many failed logins; try again later", 429)
            resp.headers["Retry-After"] = str(exc.retry_after)
            return resp
        if session is None:
            return _bad("wrong agent or password", 401)
        resp = _json({"token": session.token, "expires_at": session.expires_at,
                      "agent": {"id": session.agent.id, "name": session.agent.name,
                                "supervisor": session.agent.supervisor}})
        resp.set_cookie(COOKIE, session.token, max_age=ctx.auth.session_seconds, httponly=True,
                        samesite="Strict", secure=request.secure, path="/")
        return resp

    async def logout(request: web.Request) -> web.Response:
        token = request_token(request)
        if token:
            await ctx.auth.logout(token)
        resp = _json({"ok": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def me(request: web.Request) -> web.Response:
        agent = await current_agent(request)
        state = await ctx.get_state(agent.id) if ctx.get_state is not None else None
        grants = await ctx.store.grants(agent.id, now=ctx.clock())
        return _json({"agent": {"id": agent.id, "name": agent.name, "supervisor": agent.supervisor},
                      "state": state,
                      "customers": sorted(c for c in grants if not c.startswith("contact:"))})

    async def set_state(request: web.Request) -> web.Response:
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
        await ctx.set_paused(agent.id, state == "paused")
        await ctx.hub.publish(agent.id, {"type": "state", "state": state, "requested": True,
                                         "reason": reason, "at": ctx.clock()})
        return _json({"state": state, "requested": True}, 202)

    async def save_notes(request: web.Request) -> web.Response:
        agent = await current_agent(request)
        contact_id = request.match_info["contact_id"]
        if not ID_RE.match(contact_id):
            return _bad("invalid contact id")
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        try:
            notes = _str_field(body, "notes", limit=4000, required=True) or ""
            disposition = _str_field(body, "disposition", limit=32, required=True) or ""
            if disposition not in DISPOSITIONS:
                raise ValueError(f"disposition must be one of {', '.join(DISPOSITIONS)}")
            case = body.get("case")
            case_id = case_status = next_step = still_needed = None
            if case is not None:
                if not isinstance(case, dict):
                    raise ValueError("case must be an object")
                case_id = _str_field(case, "id", limit=128, required=True, pattern=ID_RE)
                case_status = _str_field(case, "status", limit=16)
                if case_status is not None and case_status not in ("open", "closed"):
                    raise ValueError("case.status must be 'open' or 'closed'")
                next_step = _str_field(case, "next_step", limit=500)
                still_needed = _str_field(case, "still_needed", limit=500)
        except ValueError as exc:
            return _bad(str(exc))
        now = ctx.clock()
        allowed = agent.supervisor or await ctx.store.has_access(agent.id, contact_field(contact_id), now=now)
        await ctx.audit.append(who=agent.id, role="supervisor" if agent.supervisor else "agent",
                               what="contact.notes", target=contact_id, why="write-back after call",
                               allowed=allowed, at=now, source=request.remote or "")
        if not allowed:
            return _bad("you are not handling this contact", 403)
        update = NoteUpdate(contact_id=contact_id, agent_id=agent.id, notes=notes, disposition=disposition,
                            at=now, case_id=case_id, case_status=case_status, next_step=next_step,
                            still_needed=still_needed)
        try:
            saved = await ctx.save_notes(update)
        except NoteRejected as exc:
            return _bad(str(exc))
        if not saved:
            return _bad("no such contact", 404)
        return _json({"saved": asdict(update)})

    async def unacked(request: web.Request) -> web.Response:
        await require_supervisor(request)
        return _json({"unacked": await ctx.store.unacked(now=ctx.clock())})

    async def audit(request: web.Request) -> web.Response:
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
        entries = await ctx.audit.recent(count=count, before=before)
        await ctx.audit.append(who=sup.id, role="supervisor", what="audit.read", target="audit",
                               why="supervisor review", allowed=True, at=ctx.clock(),
                               source=request.remote or "")
        return _json({"entries": [asdict(e) for e in entries]})

    return [
        web.post("/api/v1/login", login),
        web.post("/api/v1/logout", logout),
        web.get("/api/v1/me", me),
        web.post("/api/v1/me/state", set_state),
        web.post("/api/v1/contacts/{contact_id}/notes", save_notes),
        web.get("/api/v1/pops/unacked", unacked),
        web.get("/api/v1/audit", audit),
    ]


def page_routes(static_dir: Path = STATIC_DIR) -> list[web.RouteDef]:
    """The agent desktop at `/` with its script and style under `/static/`, each with the CSP."""
    files = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
    pages = {name: (static_dir / name).read_bytes() for name in files}

    def page(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            return web.Response(body=pages[name], content_type=files[name], charset="utf-8",
                                headers={**SECURITY_HEADERS, "Content-Security-Policy": CSP})
        return serve

    return [
        web.get("/", page("index.html")),
        web.get("/static/app.js", page("app.js")),
        web.get("/static/app.css", page("app.css")),
    ]
