"""The HTTP side of agent login: who is asking, and may they.

- `current_agent(request)` reads `Authorization: Bearer <token>` or the `ivr_session` cookie.
- `authorize(request, customer_id, purpose)` lets supervisors read any customer and agents only
  customers they are handling (a live access grant), and audits every read, allowed or denied
  (the decision: `domain/privacy.py`, through `services/privacy.py`).
- Sessions, login limits and password hashing are the use case in `services/sessions.py`
  (re-exported here for the web modules).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ivrserver.domain.model import Agent
from ivrserver.services.sessions import (  # noqa: F401  (re-exported for the web modules)
    FAILURE_WINDOW,
    MAX_LOGIN_FAILURES,
    Authenticator,
    LoginLimits,
    LoginThrottled,
    Session,
    client_address,
    hash_password,
    parse_networks,
    run_hashing,
    token_digest,
    verify_password,
)

COOKIE = "ivr_session"


AUTH = web.AppKey("ivrserver_auth", Authenticator)
# The agent resolved by `auth_middleware` for this request (absent: anonymous).
AGENT = web.RequestKey("ivrserver_agent", Agent)
REASON_HEADER = "X-Access-Reason"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.cookies.get(COOKIE) or None


def _json_error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=f'{{"error": "{message}"}}', content_type="application/json")


async def current_agent(request: web.Request) -> Agent:
    """The logged-in agent of this request, or 401."""
    agent = request.get(AGENT)
    if agent is None:
        token = request_token(request)
        agent = await request.app[AUTH].resolve(token) if token else None
    if agent is None:
        raise _json_error(web.HTTPUnauthorized, "login required")
    request[AGENT] = agent
    return agent


def agent_id_of(request: web.Request) -> str | None:
    """Synchronous: the agent `auth_middleware` resolved for this request (api_callbacks' CurrentAgent)."""
    agent = request.get(AGENT)
    return agent.id if agent is not None else None


def auth_middleware(*, protect: tuple[str, ...] = ("/api/",), public: tuple[str, ...] = ("/api/v1/login",),
                    accepted: Callable[[web.Request], bool] | None = None,
                    ) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Resolve the session of every request once (request[AGENT]); paths under `protect` other
    than `public` ones get 401 without a valid session, unless `accepted` says an earlier middleware
    authenticated the request otherwise (a back-office token: web/backoffice.py)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = request_token(request)
        agent = await request.app[AUTH].resolve(token) if token else None
        if agent is not None:
            request[AGENT] = agent
        elif request.path.startswith(protect) and request.path not in public and not (
                accepted is not None and accepted(request)):
            raise _json_error(web.HTTPUnauthorized, "login required")
        return await handler(request)

    return middleware


async def require_supervisor(request: web.Request) -> Agent:
    agent = await current_agent(request)
    if not agent.supervisor:
        raise _json_error(web.HTTPForbidden, "supervisors only")
    return agent


async def authorize(request: web.Request, customer_id: str | None, purpose: str) -> Agent:
    """Allow this request to access customer `customer_id` (None: no particular customer, e.g. a
    listing) for `purpose` (e.g. "customer.read"), or raise 401/403. Every decision is audited;
    the client may state why in the X-Access-Reason header. Fits api_customers' Authorize hook."""
    agent = await current_agent(request)
    reason = "".join(c for c in request.headers.get(REASON_HEADER, "") if c.isprintable())[:150]
    auth = request.app[AUTH]
    if not await auth.may_access(agent, customer_id, purpose, reason=reason, source=auth.source_of(request)):
        raise _json_error(web.HTTPForbidden, "not handling this customer")
    return agent


async def authorize_hook(request: web.Request, customer_id: str | None, purpose: str) -> None:
    """`authorize` with the exact api_customers.Authorize signature."""
    await authorize(request, customer_id, purpose)
