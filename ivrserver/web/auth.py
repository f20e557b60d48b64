"""Agent login, sessions, login limits, and the privacy gate for customer records.

- Passwords are hashed by `ivrserver.domain.hashing` (scrypt N=2^17, r=8, p=1; `scripts/hash-password`
  prints one). Older hashes still verify and are replaced on the next successful login: in the
  agents file when it can be rewritten, else in memory with a warning telling the admin to run
  `scripts/hash-password`. Hashing runs in a two-thread pool, never on the event loop.
- Login limits (`LoginLimits`) are taken *before* the password is checked, atomically in Redis, per
  (agent, source address), per source address and per agent; see `LoginLimits` for the policy.
- `POST /api/v1/login` issues a random session token; Redis keeps only its SHA-256, with an expiry.
  A configured static token per agent may be used instead.
- `current_agent(request)` reads `Authorization: Bearer <token>` or the `ivr_session` cookie.
- `authorize(request, customer_id, purpose)` lets supervisors read any customer and agents only
  customers they are handling (a live access grant), and audits every read, allowed or denied.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis.asyncio as aioredis
from aiohttp import web

from ivrserver.domain import hashing
from ivrserver.domain.hashing import PASSWORD_COST, Cost
from ivrserver.domain.model import Agent
from ivrserver.store.keys import Keys
from ivrserver.store.pops import AuditLog, PopStore, check_agent_id

log = logging.getLogger("ivrserver.auth")
COOKIE = "ivr_session"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,128}$")
T = TypeVar("T")


@dataclass(frozen=True)
class LoginLimits:
    """Failed-login limits, each counted in a fixed window that starts at the first failure.

    Every attempt takes a slot in all three counters *before* its password is checked (one Lua
    script: check and count are atomic, so N parallel attempts cannot all pass a read-then-count);
    a successful login gives its slots back and clears its (agent, address) counter.

    - `per_agent_address` wrong passwords for one agent from one address → that pair is refused.
    - `per_address` wrong passwords from one address (any agents) → that address is refused.
    - `per_agent` wrong passwords for one agent from all addresses → addresses the agent has not
      logged in from successfully within `known_address_days` are refused for that agent.
    An address where the agent logged in successfully (a "known" address) is exempt from the last
    two, never from the first: whoever only knows agent ids can block their own address, not the
    agent's. IPv6 addresses count per /64 (one host usually has a whole /64).
    """

    per_agent_address: int = 10
    per_address: int = 50
    per_agent: int = 100
    window_seconds: int = 900
    known_address_days: int = 30


MAX_LOGIN_FAILURES = LoginLimits().per_agent_address
FAILURE_WINDOW = LoginLimits().window_seconds

# check-and-count in one step. KEYS: pair, address, agent, known-address marker.
# ARGV: pair limit, address limit, agent limit, window. Returns {0, 0} (allowed, counted) or
# {which limit (1 pair, 2 address, 3 agent), milliseconds until it resets}.
_TAKE_SLOT = """
local known = redis.call('EXISTS', KEYS[4]) == 1
local checks = known and 1 or 3
for i = 1, checks do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n >= tonumber(ARGV[i]) then
    return {i, redis.call('PTTL', KEYS[i])}
  end
end
for i = 1, 3 do
  redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[4]) end
end
return {0, 0}
"""
# a successful login: give back its slots. KEYS: pair, address, agent, known marker; ARGV: known ttl
_RELEASE_SLOT = """
redis.call('DEL', KEYS[1])
for i = 2, 3 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
redis.call('SET', KEYS[4], '1', 'EX', ARGV[1])
return 1
"""


# ---- keys this module adds -------------------------------------------------------------------
def session_key(keys: Keys, token_digest: str) -> str:  # TODO move to keys.py
    return f"{keys.prefix}:session:{token_digest}"


def login_failures_key(keys: Keys, agent_id: str, address: str = "") -> str:  # TODO move to keys.py
    return f"{keys.prefix}:loginfail:{agent_id}:{address or 'unknown'}"


def _address_failures_key(keys: Keys, address: str) -> str:
    return f"{keys.prefix}:loginfail-addr:{address or 'unknown'}"


def _agent_failures_key(keys: Keys, agent_id: str) -> str:
    return f"{keys.prefix}:loginfail-agent:{agent_id}"


def _known_address_key(keys: Keys, agent_id: str, address: str) -> str:
    return f"{keys.prefix}:loginok:{agent_id}:{address or 'unknown'}"


# ---- password hashing (one module: ivrserver.domain.hashing) ----------------------------------
def hash_password(password: str, *, salt: bytes | None = None, cost: Cost = PASSWORD_COST) -> str:
    return hashing.hash_secret(password, salt if salt is not None else os.urandom(16), cost=cost)


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check; a malformed or absurd stored hash never verifies."""
    return hashing.verify(password, stored)


@functools.cache
def _hash_pool() -> ThreadPoolExecutor:
    # scrypt at N=2^17 takes 128 MiB and ~0.45 s of a core: two at a time at most, and the
    # default executor stays free for everything else.
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="ivr-hash")


async def run_hashing(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run a hashing call in the bounded hash pool (never on the event loop)."""
    return await asyncio.get_running_loop().run_in_executor(_hash_pool(), functools.partial(fn, *args, **kwargs))


@functools.lru_cache(maxsize=4)
def _dummy_hash(cost: Cost) -> str:
    return hash_password("not-a-real-password", salt=b"\0" * 16, cost=cost)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---- the client's address ------------------------------------------------------------------------
Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_networks(text: str) -> Networks:
    """`security.trusted_proxies`: comma-separated addresses or CIDR networks (validated in config)."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip())


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_address(peer: str | None, forwarded_for: str | None, trusted: Networks) -> str:
    """The address login limits and the audit count for a request: the peer, unless the peer is a
    trusted proxy; then the right-most X-Forwarded-For entry that is not a trusted proxy (entries
    left of it are whatever the client wrote). IPv6 is reduced to its /64. '' when unknown."""
    ip = _ip(peer or "")
    if ip is not None and trusted and forwarded_for and any(ip in net for net in trusted):
        for item in reversed(forwarded_for.split(",")[-20:]):
            hop = _ip(item)
            if hop is None:
                break  # garbage: stop at the last address a trusted proxy vouched for
            ip = hop
            if not any(hop in net for net in trusted):
                break
    if ip is None:
        return ""
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoginThrottled(Exception):
    """Too many failed logins for this agent and/or address recently; retry after `retry_after` s."""

    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(f"login limit {limit} reached")
        self.limit = limit
        self.retry_after = retry_after


@dataclass(frozen=True)
class Session:
    token: str
    agent: Agent
    expires_at: float


def _rewrite_hash(path: Path, old: str, new: str) -> str | None:
    """Replace the one occurrence of `old` by `new` in the agents file, atomically, keeping its
    mode; None on success, else why not (blocking: run in a thread)."""
    try:
        text = path.read_text(encoding="utf-8")
        if text.count(old) != 1:
            return "the old hash is not in the file exactly once"
        mode = path.stat().st_mode & 0o777
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text.replace(old, new))
        os.replace(tmp, path)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


class Authenticator:
    """Sessions and the customer-record gate. One per app instance; state lives in Redis."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, agents: Mapping[str, Agent],
                 credentials: Mapping[str, str], *, pops: PopStore, audit: AuditLog,
                 static_tokens: Mapping[str, str] | None = None, session_seconds: int = 12 * 3600,
                 clock: Callable[[], float] = time.time, limits: LoginLimits | None = None,
                 password_cost: Cost = PASSWORD_COST, agents_file: str | None = None,
                 trusted_proxies: str = "") -> None:
        self.redis = redis
        self.keys = keys
        self.agents = agents
        # agent id -> password hash; upgraded hashes replace the file's in this copy.
        self.credentials = dict(credentials)
        self.pops = pops
        self.audit = audit
        # agent id -> token from configuration; compared in constant time.
        self.static_tokens = {a: t for a, t in (static_tokens or {}).items() if a in agents and len(t) >= 20}
        self.session_seconds = session_seconds
        self.clock = clock
        self.limits = limits or LoginLimits()
        self.password_cost = password_cost
        self.agents_file = Path(agents_file) if agents_file else None
        self.trusted_proxies = parse_networks(trusted_proxies)
        self._take = redis.register_script(_TAKE_SLOT)
        self._release = redis.register_script(_RELEASE_SLOT)
        self._upgrading: set[str] = set()

    def source_of(self, request: web.Request) -> str:
        """The client address of a request (see `client_address`)."""
        return client_address(request.remote, request.headers.get("X-Forwarded-For"), self.trusted_proxies)

    def _limit_keys(self, agent_id: str, address: str) -> list[str]:
        return [login_failures_key(self.keys, agent_id, address), _address_failures_key(self.keys, address),
                _agent_failures_key(self.keys, agent_id), _known_address_key(self.keys, agent_id, address)]

    async def login(self, agent_id: str, password: str, *, source: str = "") -> Session | None:
        """A new session, or None for a wrong id/password. Raises LoginThrottled when a limit of
        `LoginLimits` is reached for this agent and/or `source` address (checked before the hash)."""
        if not isinstance(agent_id, str) or not isinstance(password, str) or len(password) > 1024:
            return None
        try:
            check_agent_id(agent_id)
        except ValueError:
            return None
        limits = self.limits
        slot_keys = self._limit_keys(agent_id, source)
        which, ttl_ms = await self._take(keys=slot_keys, args=[
            limits.per_agent_address, limits.per_address, limits.per_agent, limits.window_seconds])
        if int(which):
            name = {1: "agent+address", 2: "address", 3: "agent"}.get(int(which), "?")
            log.warning("login refused: %s limit reached", name,
                        extra={"agent": agent_id, "source": source or "unknown"})
            raise LoginThrottled(name, max(1, (int(ttl_ms) + 999) // 1000))
        agent = self.agents.get(agent_id)
        stored = self.credentials.get(agent_id) if agent else None
        # Unknown agents cost the same hash as known ones (no timing oracle for valid ids).
        ok = await run_hashing(verify_password, password, stored or _dummy_hash(self.password_cost))
        if not ok or agent is None or stored is None:
            return None  # the slot taken above stays counted
        await self._release(keys=slot_keys, args=[self.limits.known_address_days * 86400])
        if hashing.needs_rehash(stored, cost=self.password_cost):
            await self._upgrade(agent_id, password, stored)
        token = secrets.token_urlsafe(32)
        await self.redis.set(session_key(self.keys, token_digest(token)), agent.id, ex=self.session_seconds)
        return Session(token, agent, self.clock() + self.session_seconds)

    async def _upgrade(self, agent_id: str, password: str, old: str) -> None:
        """Rehash a password that verified against an older or cheaper hash (once per agent)."""
        if agent_id in self._upgrading:
            return
        self._upgrading.add(agent_id)
        try:
            new = await run_hashing(hash_password, password, cost=self.password_cost)
            self.credentials[agent_id] = new
            why = "no agents file" if self.agents_file is None else \
                await asyncio.to_thread(_rewrite_hash, self.agents_file, old, new)
            if why is None:
                log.info("password hash of %s upgraded in %s", agent_id, self.agents_file)
            else:
                log.warning("password hash of %s is below the current cost and could not be replaced in the "
                            "agents file (%s): it is upgraded in memory only; run scripts/hash-password and "
                            "put the new hash in %s", agent_id, why, self.agents_file or "the agents file")
        finally:
            self._upgrading.discard(agent_id)

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
    auth = request.app[AUTH]
    if not await auth.may_access(agent, customer_id, purpose, reason=reason, source=auth.source_of(request)):
        raise _json_error(web.HTTPForbidden, "not handling this customer")
    return agent


async def authorize_hook(request: web.Request, customer_id: str | None, purpose: str) -> None:
    """`authorize` with the exact api_customers.Authorize signature."""
    await authorize(request, customer_id, purpose)
