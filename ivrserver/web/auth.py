"""Agent login, sessions, and the privacy gate for customer records.

- Passwords are stored as scrypt hashes (`scrypt$N$r$p$salt$hash`, base64); `scripts/hash-password`
  prints one. A static token per agent may also come from configuration.
- `POST /api/v1/login` issues a random session token; Redis keeps only its SHA-256, with an expiry.
- `current_agent(request)` reads `Authorization: Bearer <token>` or the `ivr_session` cookie.
- `authorize(request, customer_id, purpose)` lets supervisors read any customer and agents only
  customers they are handling (a live access grant), and audits every read, allowed or denied.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from ivrserver.domain.model import Agent
from ivrserver.store.keys import Keys
from ivrserver.store.pops import AuditLog, PopStore, check_agent_id

COOKIE = "ivr_session"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,128}$")
MAX_LOGIN_FAILURES = 10
FAILURE_WINDOW = 900

_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1


# ---- keys this module adds -------------------------------------------------------------------
def session_key(keys: Keys, token_digest: str) -> str:
    return keys.session(token_digest)


def login_failures_key(keys: Keys, agent_id: str) -> str:
    return keys.login_failures(agent_id)


# ---- password hashing (stdlib scrypt) --------------------------------------------------------
def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check; a malformed or absurd stored hash never verifies."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except ValueError:
        return False
    if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16 and 8 <= len(expected) <= 64):
        return False
    try:
        actual = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(expected),
                                maxmem=256 * 1024 * 1024)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


_DUMMY_HASH = hash_password("not-a-real-password", salt=b"\0" * 16)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LoginThrottled(Exception):
    """Too many failed logins for this agent id recently."""


@dataclass(frozen=True)
class Session:
    token: str
    agent: Agent
    expires_at: float


class Authenticator:
    """Sessions and the customer-record gate. One per app instance; state lives in Redis."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, agents: Mapping[str, Agent],
                 credentials: Mapping[str, str], *, pops: PopStore, audit: AuditLog,
                 static_tokens: Mapping[str, str] | None = None, session_seconds: int = 12 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.keys = keys
        self.agents = agents
        self.credentials = credentials
        self.pops = pops
        self.audit = audit
        # agent id -> token from configuration; compared in constant time.
        self.static_tokens = {a: t for a, t in (static_tokens or {}).items() if a in agents and len(t) >= 20}
        self.session_seconds = session_seconds
        self.clock = clock

    async def login(self, agent_id: str, password: str) -> Session | None:
        """A new session, or None for a wrong id/password. Raises LoginThrottled after too many
        failures for this id."""
        if not isinstance(agent_id, str) or not isinstance(password, str) or len(password) > 1024:
            return None
        try:
            check_agent_id(agent_id)
        except ValueError:
            return None
        fail_key = login_failures_key(self.keys, agent_id)
        failures = await self.redis.get(fail_key)
        if failures is not None and int(failures) >= MAX_LOGIN_FAILURES:
            raise LoginThrottled(agent_id)
        agent = self.agents.get(agent_id)
        stored = self.credentials.get(agent_id) if agent else None
        # Unknown agents cost the same scrypt as known ones (no timing oracle for valid ids).
        ok = await asyncio.to_thread(verify_password, password, stored or _DUMMY_HASH)
        if not ok or agent is None or stored is None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(fail_key)
                pipe.expire(fail_key, FAILURE_WINDOW, nx=True)
                await pipe.execute()
            return None
        await self.redis.delete(fail_key)
        token = secrets.token_urlsafe(32)
        await self.redis.set(session_key(self.keys, token_digest(token)), agent.id, ex=self.session_seconds)
        return Session(token, agent, self.clock() + self.session_seconds)

    async def resolve(self, token: str) -> Agent | None:
        """The agent a session (or configured static) token belongs to."""
        if not isinstance(token, str) or not TOKEN_RE.match(token):
            return None
        for agent_id, static in self.static_tokens.items():
            if hmac.compare_digest(static.encode(), token.encode()):
                return self.agents[agent_id]
        agent_id = await self.redis.get(session_key(self.keys, token_digest(token)))
        return self.agents.get(agent_id) if agent_id else None

    async def alive(self, tokens: list[str]) -> list[bool]:
        """Which of these tokens still name a live session (one round trip)."""
        if not tokens:
            return []
        statics = set(self.static_tokens.values())
        async with self.redis.pipeline(transaction=False) as pipe:
            for t in tokens:
                pipe.exists(session_key(self.keys, token_digest(t)))
            found = await pipe.execute()
        return [t in statics or bool(f) for t, f in zip(tokens, found, strict=True)]

    async def logout(self, token: str) -> None:
        if isinstance(token, str) and TOKEN_RE.match(token):
            await self.redis.delete(session_key(self.keys, token_digest(token)))

    async def may_access(self, agent: Agent, customer_id: str | None, purpose: str, *, reason: str = "",
                         source: str = "") -> bool:
        """The privacy gate: supervisors always; agents only for a customer they hold a live grant
        for (handling the call, or shortly after), and never for SUPERVISOR_PURPOSES or for
        operations on no particular customer (listing). Every decision is audited: who, what
        (purpose), target, why (the caller's stated reason, else the basis of the decision), when."""
        now = self.clock()
        if agent.supervisor:
            allowed, basis = True, "supervisor"
        elif customer_id is None or purpose in SUPERVISOR_PURPOSES:
            allowed, basis = False, "supervisors only"
        elif await self.pops.has_access(agent.id, customer_id, now=now):
            allowed, basis = True, "handling this customer's call"
        else:
            allowed, basis = False, "not handling this customer"
        why = f"{reason} ({basis})" if reason else basis
        await self.audit.append(who=agent.id, role="supervisor" if agent.supervisor else "agent",
                                what=purpose, target=customer_id or "*", why=why,
                                allowed=allowed, at=now, source=source)
        return allowed


AUTH = web.AppKey("ivrserver_auth", Authenticator)
# The agent resolved by `auth_middleware` for this request (absent: anonymous).
AGENT = web.RequestKey("ivrserver_agent", Agent)
# Purposes agents never get, even for a customer they are handling.
SUPERVISOR_PURPOSES: frozenset[str] = frozenset({"customer.list", "customer.delete"})
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
    if not await request.app[AUTH].may_access(agent, customer_id, purpose, reason=reason,
                                              source=request.remote or ""):
        raise _json_error(web.HTTPForbidden, "not handling this customer")
    return agent


async def authorize_hook(request: web.Request, customer_id: str | None, purpose: str) -> None:
    """`authorize` with the exact api_customers.Authorize signature."""
    await authorize(request, customer_id, purpose)
