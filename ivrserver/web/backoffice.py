"""Back-office tokens: named bearer tokens for systems (a CRM, a partner's billing, a batch job),
each with scopes that say which routes it may use.

The file (`web.backoffice_tokens_file`) holds only SHA-256 digests, never a token:

```yaml
# name: sha256 of the token (printf %s "$TOKEN" | sha256sum) — the old form: scope callbacks
crm-nightly: "sha256:9f2c…64 hex digits"
# name: {digest, scopes}
partner-billing:
  digest: "sha256:…"
  scopes: [cases:read, cases:write]
```

Scopes: `callbacks` (/api/v1/callbacks, as a supervisor may), `cases:read` (GET a case handed to
the token: /api/v1/cases…), `cases:write` (POST results on such a case), `incidents`
(/api/v1/incidents), `events` (POST /api/v1/customers/{id}/events: a customer's events
such as roaming_started, which may call for a reminder). A token is sent as
`Authorization: Bearer <token>`; it must be 32-256
characters of [A-Za-z0-9_.~+/=-] (e.g. `openssl rand -hex 32`). The token is compared by its digest
in constant time; only its name ever reaches a log or the audit stream. A request under a path
none of the token's scopes covers is not authenticated by it (401 without a session).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from ivrserver.config import YamlFileError, read_yaml_mapping

BACKOFFICE = web.RequestKey("ivrserver_backoffice", str)  # the token's name, set by `middleware`
SCOPES = web.RequestKey("ivrserver_backoffice_scopes", frozenset)  # the token's scopes
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
TOKEN = re.compile(r"^[A-Za-z0-9_.~+/=-]{32,256}$")
# scope → the paths it opens (a route checks cases:read / cases:write itself: `has_scope`)
SCOPE_PATHS: dict[str, tuple[str, ...]] = {
    "callbacks": ("/api/v1/callbacks",),
    "cases:read": ("/api/v1/cases",),
    "cases:write": ("/api/v1/cases",),
    "incidents": ("/api/v1/incidents",),
    # POST /api/v1/customers/{id}/events (web/api_events.py checks the scope; every other
    # customer route still needs an agent's session)
    "events": ("/api/v1/customers/",),
}
DEFAULT_SCOPES = frozenset({"callbacks"})  # a token written as `name: sha256:…`
SCOPE = SCOPE_PATHS["callbacks"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BackofficeTokensError(ValueError):
    """The tokens file is unreadable or malformed; `problems` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def digest(token: str) -> str:
    """The file's form of a token: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class BackofficeTokens:
    def __init__(self, digests: Mapping[str, object] | None = None) -> None:
        """`digests`: name → `sha256:<hex>` or {digest, scopes} (checked)."""
        problems = _problems(digests or {})
        if problems:
            raise BackofficeTokensError(problems)
        self._digests: dict[str, bytes] = {}
        self._scopes: dict[str, frozenset[str]] = {}
        for name, value in (digests or {}).items():
            text = value if isinstance(value, str) else value["digest"]  # type: ignore[index]
            self._digests[name] = bytes.fromhex(text.removeprefix("sha256:"))
            self._scopes[name] = DEFAULT_SCOPES if isinstance(value, str) else frozenset(value["scopes"])  # type: ignore[index]

    def scopes(self, name: str) -> frozenset[str]:
        return self._scopes.get(name, frozenset())

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def load(cls, path: str) -> BackofficeTokens:
        """The tokens of `path` ('' → none). Read once at start."""
        if not path:
            return cls()
        try:
            return cls(read_yaml_mapping(path, "a mapping name: sha256:<hex> or {digest, scopes}"))
        except YamlFileError as exc:
            raise BackofficeTokensError([f"web.backoffice_tokens_file: {path}: {exc}"]) from exc

    def resolve(self, token: str | None) -> str | None:
        """The name of the token, or None. Every known digest is compared (constant time)."""
        if not token or not self._digests or not TOKEN.match(token):
            return None
        actual = hashlib.sha256(token.encode()).digest()
        found = None
        for name, expected in self._digests.items():
            if hmac.compare_digest(actual, expected):
                found = name
        return found


def _digest_problem(name: str, value: object) -> str | None:
    if isinstance(value, str) and DIGEST.match(value):
        return None
    return (f"web.backoffice_tokens_file: {name}: expected \"sha256:<64 hex digits>\" "
            "(printf %s \"$TOKEN\" | sha256sum), never the token itself")


def _entry_problems(name: str, value: object) -> list[str]:
    if not isinstance(value, Mapping):
        problem = _digest_problem(name, value)
        return [problem] if problem else []
    problems = [f"web.backoffice_tokens_file: {name}: unknown key {str(k)[:32]!r}; allowed: digest, scopes"
                for k in value if k not in ("digest", "scopes")]
    problem = _digest_problem(name, value.get("digest"))
    if problem:
        problems.append(problem)
    scopes = value.get("scopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(x, str) and x in SCOPE_PATHS for x in scopes):
        problems.append(f"web.backoffice_tokens_file: {name}: scopes: expected a list of "
                        f"{', '.join(SCOPE_PATHS)}")
    return problems


def _problems(digests: Mapping[object, object]) -> list[str]:
    problems = []
    for name, value in digests.items():
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(f"web.backoffice_tokens_file: name {name!r}: 1-64 letters, digits, _ . - expected")
        else:
            problems += _entry_problems(name, value)
    return problems


def _covers(scopes: frozenset[str], path: str) -> bool:
    return any(path.startswith(SCOPE_PATHS[s]) for s in scopes if s in SCOPE_PATHS)


def middleware(tokens: BackofficeTokens, scope: tuple[str, ...] | None = None
               ) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Mark requests that carry a back-office token whose scopes cover the path (request[BACKOFFICE]
    = its name, request[SCOPES] = its scopes). `scope` (paths) narrows every token further. Runs
    before the session middleware, which lets such requests through (`accepted`)."""

    @web.middleware
    async def backoffice(request: web.Request, handler: Handler) -> web.StreamResponse:
        if len(tokens) and request.path.startswith("/api/") and (scope is None or request.path.startswith(scope)):
            header = request.headers.get("Authorization", "")
            if header[:7].lower() == "bearer ":
                name = tokens.resolve(header[7:].strip())
                if name is not None and _covers(tokens.scopes(name), request.path):
                    request[BACKOFFICE] = name
                    request[SCOPES] = tokens.scopes(name)
        return await handler(request)

    return backoffice


def accepted(request: web.Request) -> bool:
    """Whether `middleware` authenticated this request by a back-office token."""
    return BACKOFFICE in request


def has_scope(request: web.Request, scope: str) -> bool:
    """Whether this request's back-office token has `scope` (False without a token)."""
    return scope in request.get(SCOPES, frozenset())
