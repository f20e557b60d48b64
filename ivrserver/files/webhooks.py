"""webhooks.yaml on disk (setting `webhooks.endpoints_file`): the endpoints outgoing webhooks go to.

Read by the one loader of admins' files (files/yaml_source.py), so every error points at its line:
`file:line:column: error: endpoints.0.url: …`. Format::

    endpoints:
      - name: crm                                    # letters, digits, _ . - (unique)
        url: https://crm.example.com/hooks/ivrserver # http or https, no user:password@
        events: ["case.*", "incident.opened"]        # glob patterns of event names
        secret_env: IVRSERVER_WEBHOOK_CRM_SECRET     # the HMAC secret from this environment variable …
        # secret_file: /etc/ivrserver/crm.secret     # … or from this file (mode 0600, else a warning)
        timeout: 5                                   # optional: seconds per attempt (webhooks.timeout_seconds)
        max_attempts: 12                             # optional (webhooks.max_attempts)

A secret is at least 16 characters; it is read here once and kept only in memory (never logged,
never written to Redis, PostgreSQL or an export). A missing or empty file means no endpoints.
"""

from __future__ import annotations

import os
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ivrserver.config import WebhookSettings
from ivrserver.domain import suggest
from ivrserver.domain.source import Issue, Severity, Source, TreePath
from ivrserver.domain.webhooks import NAME_RE, PATTERN_RE, Endpoint
from ivrserver.files import yaml_source

MIN_SECRET = 16
MAX_SECRET_FILE = 4096
_KEYS = ("name", "url", "events", "secret_env", "secret_file", "timeout", "max_attempts")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class WebhookFileError(ValueError):
    """The endpoints file is unreadable or invalid; `problems` holds one line per error."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Endpoints:
    endpoints: tuple[Endpoint, ...] = ()
    warnings: tuple[str, ...] = field(default=())  # e.g. a secret file others may read


class _Checker:
    """Collects the problems of one file's data, each at its path."""

    def __init__(self, src: Source, settings: WebhookSettings, environ: Mapping[str, str]) -> None:
        self.src = src
        self.settings = settings
        self.environ = environ
        self.issues: list[Issue] = []
        self.warnings: list[str] = []

    def bad(self, path: TreePath, message: str, *, warning: bool = False) -> None:
        pos = self.src.at(path, key=True)
        where = ".".join(str(p) for p in path) or "<top>"
        severity = Severity.WARNING if warning else Severity.ERROR
        issue = Issue(self.src.file, pos.line, pos.column, severity, "webhooks", f"{where}: {message}")
        if warning:
            self.warnings.append(issue.format())
        else:
            self.issues.append(issue)

    def endpoints(self) -> list[Endpoint]:
        data = self.src.data
        if not isinstance(data, dict):
            self.bad((), "expected a mapping with `endpoints: [...]`")
            return []
        for key in data:
            if key != "endpoints":
                self.bad((key,), "unknown key; allowed: endpoints" + _mean(key, ("endpoints",)))
        raw = data.get("endpoints") or []
        if not isinstance(raw, list):
            self.bad(("endpoints",), f"expected a list of endpoints, got {type(raw).__name__}")
            return []
        out: list[Endpoint] = []
        names: set[str] = set()
        for i, item in enumerate(raw):
            endpoint = self.endpoint(("endpoints", i), item)
            if endpoint is None:
                continue
            if endpoint.name in names:
                self.bad(("endpoints", i, "name"), f"duplicate endpoint name {endpoint.name!r}")
                continue
            names.add(endpoint.name)
            out.append(endpoint)
        return out

    def endpoint(self, path: TreePath, item: object) -> Endpoint | None:
        if not isinstance(item, dict):
            self.bad(path, "expected a mapping with name, url, events and secret_env or secret_file")
            return None
        before = len(self.issues)
        for key in item:
            if key not in _KEYS:
                self.bad((*path, key), f"unknown key; allowed: {', '.join(_KEYS)}" + _mean(key, _KEYS))
        name = item.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            self.bad((*path, "name"), "expected 1-64 letters, digits, _ . - (starting with a letter or digit)")
        url = self.url((*path, "url"), item.get("url"))
        events = self.events((*path, "events"), item.get("events"))
        secret = self.secret(path, item)
        timeout = self.number((*path, "timeout"), item.get("timeout", self.settings.timeout_seconds), 0.1, 300.0)
        attempts = self.number((*path, "max_attempts"), item.get("max_attempts", self.settings.max_attempts), 1, 100,
                               whole=True)
        if len(self.issues) > before or secret is None:
            return None
        return Endpoint(name=str(name), url=str(url), events=tuple(events), secret=secret, timeout=float(timeout),
                        max_attempts=int(attempts))

    def url(self, path: TreePath, value: object) -> str | None:
        if not isinstance(value, str) or not value or len(value) > 2000:
            self.bad(path, "expected an http:// or https:// URL")
            return None
        try:
            parts = urllib.parse.urlsplit(value)
            host, _port = parts.hostname, parts.port  # .port raises ValueError when out of range
        except ValueError as exc:
            self.bad(path, f"not a valid URL ({exc})")
            return None
        if parts.scheme not in ("http", "https") or not host:
            self.bad(path, f"expected an http:// or https:// URL with a host, got scheme {parts.scheme!r}")
        elif parts.username is not None or parts.password is not None:
            self.bad(path, "no user:password@ in the URL: the request is signed with the endpoint's secret")
        elif parts.fragment or any(c.isspace() or not c.isprintable() for c in value):
            self.bad(path, "no #fragment, spaces or control characters in the URL")
        elif parts.scheme == "http" and host not in _LOOPBACK:
            self.bad(path, f"plain http to {host}: the events travel unencrypted (use https)",
                     warning=True)
        return value

    def events(self, path: TreePath, value: object) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            self.bad(path, 'expected a list of event patterns, e.g. ["case.*", "incident.opened"]')
            return []
        for i, pattern in enumerate(value):
            if not isinstance(pattern, str) or len(pattern) > 100 or not PATTERN_RE.fullmatch(pattern):
                self.bad((*path, i), f"expected an event pattern like 'case.*' or 'incident.opened', got {pattern!r}")
        return [p for p in value if isinstance(p, str)]

    def secret(self, path: TreePath, item: Mapping[str, Any]) -> bytes | None:
        env, file = item.get("secret_env"), item.get("secret_file")
        if (env is None) == (file is None):
            self.bad(path, "give exactly one of secret_env (an environment variable) or secret_file")
            return None
        if env is not None:
            if not isinstance(env, str) or not env:
                self.bad((*path, "secret_env"), "expected the name of an environment variable")
                return None
            text = self.environ.get(env, "")
            if len(text.strip()) < MIN_SECRET:
                self.bad((*path, "secret_env"), f"environment variable {env} is not set or shorter than "
                                                f"{MIN_SECRET} characters")
                return None
            return text.strip().encode()
        return self.secret_file((*path, "secret_file"), file)

    def secret_file(self, path: TreePath, file: object) -> bytes | None:
        if not isinstance(file, str) or not file:
            self.bad(path, "expected the path of a file holding the secret")
            return None
        try:
            with open(file, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                raw = f.read(MAX_SECRET_FILE + 1)
        except OSError as exc:
            self.bad(path, f"{file}: cannot read: {exc.strerror}")
            return None
        text = raw.strip()
        if len(raw) > MAX_SECRET_FILE or len(text) < MIN_SECRET:
            self.bad(path, f"{file}: expected a secret of {MIN_SECRET}..{MAX_SECRET_FILE} characters")
            return None
        if stat.S_IMODE(mode) & 0o077:
            self.bad(path, f"{file}: mode {stat.S_IMODE(mode):04o}: others may read the secret (chmod 600)",
                     warning=True)
        return text

    def number(self, path: TreePath, value: object, low: float, high: float, *, whole: bool = False) -> float:
        ok = isinstance(value, int) if whole else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not low <= value <= high:  # type: ignore[operator]
            kind = "a whole number" if whole else "seconds"
            self.bad(path, f"expected {kind} {low:g}..{high:g}, got {value!r}")
            return low
        return float(value)  # type: ignore[arg-type]


def _mean(word: object, allowed: tuple[str, ...]) -> str:
    hint = suggest.did_you_mean(word, allowed)
    return f"; {hint}" if hint else ""


def parse(text: str, file: str, settings: WebhookSettings,
          environ: Mapping[str, str] | None = None) -> Endpoints:
    """The endpoints in `text` (the file `file`); WebhookFileError lists every problem."""
    src, issues = yaml_source.parse(text, file, kind="webhooks")
    if src is None:
        if issues and issues[0].code == "empty":
            return Endpoints()
        raise WebhookFileError([i.format() for i in issues])
    checker = _Checker(src, settings, os.environ if environ is None else environ)
    endpoints = checker.endpoints()
    problems = [i.format() for i in issues + checker.issues]
    if problems:
        raise WebhookFileError(problems)
    return Endpoints(tuple(endpoints), tuple(checker.warnings))


def load(settings: WebhookSettings, environ: Mapping[str, str] | None = None) -> Endpoints:
    """The endpoints of `settings.endpoints_file` ('' = none); WebhookFileError lists every problem."""
    if not settings.endpoints_file:
        return Endpoints()
    text, issues = yaml_source.read_text(settings.endpoints_file)
    if text is None:
        raise WebhookFileError([f"webhooks.endpoints_file: {i.format()}" for i in issues])
    return parse(text, settings.endpoints_file, settings, environ)
