"""Outgoing webhooks, the pure part: which endpoints an event goes to, the delivery's id and body,
its signature, and what happens after each attempt (retry when, or give up).

Pure: stdlib only, no clock reads (`now` is passed), no randomness of its own (the jitter's random
number is passed). The deliverer (services/webhooks.py) does the I/O.

Wire format (what a receiver gets, one POST per delivery attempt, the same body every attempt):

    POST <endpoint url>
    Content-Type: application/json
    X-Ivrserver-Event: case.resolved
    X-Ivrserver-Delivery: wh-3f1c…          (the delivery id, also the body's "id")
    Idempotency-Key: <the publisher's key>
    X-Ivrserver-Signature: t=1764871234,v1=<hex HMAC-SHA256(secret, "1764871234." + raw body)>

    {"created_at":1764871230.5,"data":{…},"event":"case.resolved","id":"wh-3f1c…","key":"…"}

`t` is the time of the attempt (a receiver refuses old ones: replay protection), so the signature
changes from attempt to attempt while the body does not.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from fnmatch import fnmatchcase
from typing import Any

SIGNATURE_HEADER = "X-Ivrserver-Signature"
EVENT_HEADER = "X-Ivrserver-Event"
DELIVERY_HEADER = "X-Ivrserver-Delivery"
IDEMPOTENCY_HEADER = "Idempotency-Key"

# "case.resolved", "incident.opened", "sms.send": lower-case dotted words, at least two
EVENT_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
# a pattern of an endpoint's `events`: the same words, any of them may be `*` ("case.*", "*")
PATTERN_RE = re.compile(r"^(\*|[a-z][a-z0-9_*]*)(\.(\*|[a-z][a-z0-9_*]*))*$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_KEY = 200  # an idempotency key: printable ASCII, no spaces (it goes into a header)
MAX_BODY = 64 * 1024  # a delivery's body at most (the event's data serialised)
RETRY_AFTER_MAX = 3600.0  # a receiver's Retry-After is honoured up to an hour


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt, or being attempted
    DELIVERED = "delivered"  # a 2xx answer
    DEAD = "dead"  # given up: a final answer (4xx), or max attempts; a supervisor may re-queue it


class Verdict(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # 5xx, 408, 429, timeout, connection refused or reset: try again later
    FINAL = "final"  # any other answer (4xx, 3xx: redirects are not followed): trying again won't help


@dataclass(frozen=True)
class Endpoint:
    """One configured receiver (files/webhooks.py reads them). The secret never leaves this object
    except into `sign`: not in its repr, not in `public()`."""

    name: str
    url: str
    events: tuple[str, ...]
    secret: bytes = field(repr=False)
    timeout: float = 10.0
    max_attempts: int = 8

    def wants(self, event: str) -> bool:
        return matches(self.events, event)

    def public(self) -> dict[str, Any]:
        """What supervisors may see (GET /api/v1/webhooks/endpoints): no secret."""
        return {"name": self.name, "url": self.url, "events": list(self.events), "timeout": self.timeout,
                "max_attempts": self.max_attempts}


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: attempt n failed → wait base·2^(n-1), at most `cap`, times a jitter
    factor in [1 - jitter, 1] (so instances retrying together spread out)."""

    base: float = 5.0
    cap: float = 3600.0
    jitter: float = 0.5


def matches(patterns: Iterable[str], event: str) -> bool:
    """Whether `event` matches one of the glob `patterns` (`*` matches any characters, dots too:
    "case.*" matches "case.resolved" and "case.compensation.granted"; "*" matches everything)."""
    return any(fnmatchcase(event, p) for p in patterns)


def routed(endpoints: Sequence[Endpoint], event: str) -> list[Endpoint]:
    """The endpoints `event` goes to, in configuration order."""
    return [e for e in endpoints if e.wants(event)]


def check_event(event: object) -> str:
    """The event name, or ValueError."""
    if not isinstance(event, str) or len(event) > 100 or not EVENT_RE.fullmatch(event):
        raise ValueError(f"event: expected a dotted lower-case name like 'case.resolved', got {str(event)[:60]!r}")
    return event


def check_key(key: object) -> str:
    """An idempotency key: 1..200 printable ASCII characters without spaces (it is sent as a header)."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY or not all(33 <= ord(c) <= 126 for c in key):
        raise ValueError(f"key: expected 1..{MAX_KEY} printable ASCII characters without spaces")
    return key


def key_digest(key: str) -> str:
    """The key as it names a Redis key: its SHA-256 (a key may hold characters a key name should not)."""
    return hashlib.sha256(key.encode()).hexdigest()


def delivery_id(key: str, endpoint: str) -> str:
    """The id of the delivery of the event published with `key` to `endpoint`: the same on every
    instance and every retry of the publisher, so it is created once (SET NX / EXISTS in a script)."""
    return "wh-" + hashlib.sha256(f"{len(key)}:{key}{endpoint}".encode()).hexdigest()[:32]


def body(delivery: str, event: str, key: str, created_at: float, data: Mapping[str, Any]) -> str:
    """The JSON body every attempt of a delivery sends (computed once, stored with the delivery).
    ValueError if `data` is not JSON-serialisable or the body exceeds MAX_BODY bytes."""
    try:
        text = json.dumps({"id": delivery, "event": event, "key": key, "created_at": created_at, "data": data},
                          separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data: not JSON-serialisable: {exc}") from None
    if len(text.encode()) > MAX_BODY:
        raise ValueError(f"data: the body would exceed {MAX_BODY} bytes")
    return text


def signature(secret: bytes, timestamp: int, raw_body: bytes) -> str:
    """The X-Ivrserver-Signature header value: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + raw_body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, header: str, raw_body: bytes, now: float, *, tolerance: float = 300.0) -> bool:
    """What a receiver checks: a `v1` signature of this body by this secret, made within
    `tolerance` seconds of `now` (constant-time comparison)."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(name, []).append(value)
    stamps = parts.get("t", [])
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > tolerance:
        return False
    expected = signature(secret, int(stamps[0]), raw_body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))


def classify(status: int | None) -> Verdict:
    """What an attempt's answer means; `status` None: no answer (timeout, connection refused …)."""
    if status is None or status >= 500 or status in (408, 429):
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    return Verdict.FINAL


def retry_after(value: str | None, now: float) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from `now`, at most RETRY_AFTER_MAX;
    None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), RETRY_AFTER_MAX)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, min(when.timestamp() - now, RETRY_AFTER_MAX))


def backoff_delay(failed_attempts: int, backoff: Backoff, rand: float) -> float:
    """Seconds to wait after the `failed_attempts`-th failed attempt (1, 2, …); `rand` in [0, 1)."""
    exponent = min(max(failed_attempts, 1) - 1, 60)
    raw = min(backoff.cap, backoff.base * math.pow(2, exponent))
    return raw * (1 - backoff.jitter * min(max(rand, 0.0), 1.0))


@dataclass(frozen=True)
class Next:
    """After an attempt: the delivery's state and, while pending, when to try again (epoch)."""

    state: DeliveryState
    due: float | None
    why: str = ""  # why it is dead ("" otherwise)


def after_attempt(*, status: int | None, attempt: int, max_attempts: int, now: float, backoff: Backoff,
                  rand: float, retry_after_seconds: float | None = None) -> Next:
    """The delivery's next step after attempt number `attempt` (1-based, counted since it was last
    queued) answered `status` (None: no answer). A 429/503's Retry-After wins over the backoff."""
    verdict = classify(status)
    if verdict is Verdict.DELIVERED:
        return Next(DeliveryState.DELIVERED, None)
    if verdict is Verdict.FINAL:
        return Next(DeliveryState.DEAD, None, f"final answer {status}")
    if attempt >= max_attempts:
        return Next(DeliveryState.DEAD, None, f"gave up after {attempt} attempts")
    delay = backoff_delay(attempt, backoff, rand)
    if retry_after_seconds is not None:
        delay = retry_after_seconds
    return Next(DeliveryState.PENDING, now + delay)


MAX_LOG = 50  # attempts kept in a delivery's log (the newest)


@dataclass(frozen=True)
class Attempt:
    """One attempt of a delivery, as the delivery log shows it."""

    at: float
    status: int | None  # the HTTP status, None when there was no answer
    error: str  # "" on an answer; else "timeout", "connection refused", …
    duration: float  # seconds
    by: str = ""  # the instance that made it

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status, "error": self.error, "duration": round(self.duration, 4),
                "by": self.by}


def attempt_from_dict(d: Mapping[str, Any]) -> Attempt:
    status = d.get("status")
    return Attempt(at=float(d["at"]), status=None if status is None else int(status), error=str(d.get("error", "")),
                   duration=float(d.get("duration", 0.0)), by=str(d.get("by", "")))


@dataclass(frozen=True)
class Delivery:
    """One event on its way to one endpoint (store/webhooks.py keeps it as a Redis HASH)."""

    id: str
    endpoint: str
    event: str
    key: str
    created_at: float
    body: str = field(repr=False)
    state: DeliveryState = DeliveryState.PENDING
    attempt: int = 0  # attempts since it was last queued (by publish or a supervisor's retry)
    attempts: int = 0  # attempts in all
    next_at: float | None = None
    updated_at: float = 0.0
    last_status: int | None = None
    last_error: str = ""
    dead_reason: str = ""
    log: tuple[Attempt, ...] = ()

    def summary(self) -> dict[str, Any]:
        """The delivery as REST shows it (the body's data left out: GET … ?with=… is not offered)."""
        return {"id": self.id, "endpoint": self.endpoint, "event": self.event, "key": self.key,
                "created_at": self.created_at, "state": self.state.value, "attempt": self.attempt,
                "attempts": self.attempts, "next_at": self.next_at, "updated_at": self.updated_at,
                "last_status": self.last_status, "last_error": self.last_error, "dead_reason": self.dead_reason,
                "log": [a.as_dict() for a in self.log]}


def attempted(delivery: Delivery, result: Attempt, step: Next) -> Delivery:
    """The delivery after `result`, going on as `step` says (after_attempt)."""
    return replace(delivery, state=step.state, attempt=delivery.attempt + 1, attempts=delivery.attempts + 1,
                   next_at=step.due, updated_at=result.at, last_status=result.status, last_error=result.error,
                   dead_reason=step.why, log=(*delivery.log, result)[-MAX_LOG:])
