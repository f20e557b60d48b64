"""Back-office tokens: named bearer tokens for systems (a CRM, a batch job) on the callbacks routes.

The file (`web.backoffice_tokens_file`) holds only SHA-256 digests, never a token:

```yaml
# name: sha256 of the token (printf %s "$TOKEN" | sha256sum)
crm-nightly: "sha256:9f2c…64 hex digits"
```

A token is sent as `Authorization: Bearer <token>`; it must be 32-256 characters of
[A-Za-z0-9_.~+/=-] (e.g. `openssl rand -hex 32`). The token is compared by its digest in constant
time; only its name ever reaches a log or the audit stream. A back-office token may do what a
supervisor may on `/api/v1/callbacks`, nothing else (a later issue generalises scoped tokens).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from ivrserver.config import YamlFileError, read_yaml_mapping

BACKOFFICE = web.RequestKey("ivrserver_backoffice", str)  # the token's name, set by `middleware`
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
TOKEN = re.compile(r"^[A-Za-z0-9_.~+/=-]{32,256}$")
SCOPE = ("/api/v1/callbacks",)
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
    def __init__(self, digests: Mapping[str, str] | None = None) -> None:
        """`digests`: name → `sha256:<hex>` (checked)."""
        problems = _problems(digests or {})
        if problems:
            raise BackofficeTokensError(problems)
        self._digests = {name: bytes.fromhex(d.removeprefix("sha256:")) for name, d in (digests or {}).items()}

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def load(cls, path: str) -> BackofficeTokens:
        """The tokens of `path` ('' → none). Read once at start."""
        if not path:
            return cls()
        try:
            return cls(read_yaml_mapping(path, "a mapping name: sha256:<hex>"))
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


def _problems(digests: Mapping[object, object]) -> list[str]:
    problems = []
    for name, value in digests.items():
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(f"web.backoffice_tokens_file: name {name!r}: 1-64 letters, digits, _ . - expected")
        elif not isinstance(value, str) or not DIGEST.match(value):
            problems.append(f"web.backoffice_tokens_file: {name}: expected \"sha256:<64 hex digits>\" "
                            "(printf %s \"$TOKEN\" | sha256sum), never the token itself")
    return problems


def middleware(tokens: BackofficeTokens, scope: tuple[str, ...] = SCOPE
               ) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Mark requests under `scope` that carry a back-office token (request[BACKOFFICE] = its name).
    Runs before the session middleware, which lets such requests through (`accepted`)."""

    @web.middleware
    async def backoffice(request: web.Request, handler: Handler) -> web.StreamResponse:
        if len(tokens) and request.path.startswith(scope):
            header = request.headers.get("Authorization", "")
            if header[:7].lower() == "bearer ":
                name = tokens.resolve(header[7:].strip())
                if name is not None:
                    request[BACKOFFICE] = name
        return await handler(request)

    return backoffice


def accepted(request: web.Request) -> bool:
    """Whether `middleware` authenticated this request by a back-office token."""
    return BACKOFFICE in request
