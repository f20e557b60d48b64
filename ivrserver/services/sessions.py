"""Agent login and sessions: the use case behind `POST /api/v1/login`, session tokens, login
limits and password hashing (`web/auth.py` is the HTTP side: cookies, middleware, 401/403).

- Passwords are hashed by `ivrserver.domain.hashing` (scrypt N=2^17, r=8, p=1; `scripts/hash-password`
  prints one). Older hashes still verify and are replaced on the next successful login: in the
  agents file when it can be rewritten, else in memory with a warning telling the admin to run
  `scripts/hash-password`. Hashing runs in a two-thread pool, never on the event loop.
- Login limits (`LoginLimits`) are taken *before* the password is checked, atomically in Redis
  (`store/sessions.py`), per (agent, source address), per source address and per agent.
- A login issues a random session token; Redis keeps only its SHA-256, with an expiry. A
  configured static token per agent may be used instead.
- `may_access` is the privacy gate (`services/privacy.py`, rules in `domain/privacy.py`).
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
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis

from ivrserver.domain import hashing
from ivrserver.domain.hashing import PASSWORD_COST, Cost
from ivrserver.domain.model import Agent
from ivrserver.services.privacy import PrivacyService, valid_agent_id
from ivrserver.store.keys import Keys
from ivrserver.store.sessions import SessionStore

log = logging.getLogger("ivrserver.auth")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,128}$")
T = TypeVar("T")


def new_token() -> str:
    """A session token: 256 random bits, URL-safe, never starting with '-' (a token that did was
    read as an option by `ivrserver menus reload --token TOKEN`: one login in 64)."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


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
                 credentials: Mapping[str, str], *, privacy: PrivacyService,
                 static_tokens: Mapping[str, str] | None = None, session_seconds: int = 12 * 3600,
                 clock: Callable[[], float] = time.time, limits: LoginLimits | None = None,
                 password_cost: Cost = PASSWORD_COST, agents_file: str | None = None,
                 trusted_proxies: str = "") -> None:
        self.redis = redis
        self.keys = keys
        self.agents = agents
        # agent id -> password hash; upgraded hashes replace the file's in this copy.
        self.credentials = dict(credentials)
        self.privacy = privacy
        # agent id -> token from configuration; compared in constant time.
        self.static_tokens = {a: t for a, t in (static_tokens or {}).items() if a in agents and len(t) >= 20}
        self.session_seconds = session_seconds
        self.clock = clock
        self.limits = limits or LoginLimits()
        self.password_cost = password_cost
        self.agents_file = Path(agents_file) if agents_file else None
        self.trusted_proxies = parse_networks(trusted_proxies)
        self.sessions = SessionStore(redis, keys)
        self._upgrading: set[str] = set()

    def source_of(self, request: Any) -> str:
        """The client address of an HTTP request (`.remote`, `.headers`; see `client_address`)."""
        return client_address(request.remote, request.headers.get("X-Forwarded-For"), self.trusted_proxies)

    async def login(self, agent_id: str, password: str, *, source: str = "") -> Session | None:
        """A new session, or None for a wrong id/password. Raises LoginThrottled when a limit of
        `LoginLimits` is reached for this agent and/or `source` address (checked before the hash)."""
        if not isinstance(agent_id, str) or not isinstance(password, str) or len(password) > 1024:
            return None
        if not valid_agent_id(agent_id):
            return None
        limits = self.limits
        which, ttl_ms = await self.sessions.take_login_slot(
            agent_id, source, per_agent_address=limits.per_agent_address, per_address=limits.per_address,
            per_agent=limits.per_agent, window_seconds=limits.window_seconds)
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
        await self.sessions.release_login_slot(agent_id, source, known_seconds=self.limits.known_address_days * 86400)
        if hashing.needs_rehash(stored, cost=self.password_cost):
            await self._upgrade(agent_id, password, stored)
        token = new_token()
        await self.sessions.create(token_digest(token), agent.id, seconds=self.session_seconds)
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
        agent_id = await self.sessions.agent_of(token_digest(token))
        return self.agents.get(agent_id) if agent_id else None

    async def alive(self, tokens: list[str]) -> list[bool]:
        """Which of these tokens still name a live session (one round trip)."""
        if not tokens:
            return []
        statics = set(self.static_tokens.values())
        found = await self.sessions.exist([token_digest(t) for t in tokens])
        return [t in statics or bool(f) for t, f in zip(tokens, found, strict=True)]

    async def logout(self, token: str) -> None:
        if isinstance(token, str) and TOKEN_RE.match(token):
            await self.sessions.delete(token_digest(token))

    async def may_access(self, agent: Agent, customer_id: str | None, purpose: str, *, reason: str = "",
                         source: str = "") -> bool:
        """The privacy gate (`services.privacy`, rules in `domain.privacy`): supervisors always;
        agents only for a customer they hold a live grant for, never for supervisor purposes or
        for operations on no particular customer. Every decision is audited."""
        return await self.privacy.may_access(agent, customer_id, purpose, reason=reason, source=source)
