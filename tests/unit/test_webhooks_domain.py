"""domain/webhooks.py: event matching, ids and bodies, signatures, Retry-After, backoff and the step
after each attempt — tables, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
from email.utils import formatdate

import pytest

from ivrserver.domain.webhooks import (
    MAX_BODY,
    MAX_LOG,
    RETRY_AFTER_MAX,
    Attempt,
    Backoff,
    Delivery,
    DeliveryState,
    Endpoint,
    Verdict,
    after_attempt,
    attempted,
    backoff_delay,
    body,
    check_event,
    check_key,
    classify,
    delivery_id,
    matches,
    retry_after,
    routed,
    signature,
    verify,
)

SECRET = b"s3cret-s3cret-s3cret"
NOW = 1_764_871_234.0


@pytest.mark.parametrize(("patterns", "event", "expected"), [
    (["case.*"], "case.resolved", True),
    (["case.*"], "case.compensation_granted", True),
    (["case.*"], "incident.opened", False),
    (["case.*"], "cases.resolved", False),
    (["incident.opened"], "incident.opened", True),
    (["incident.opened"], "incident.opened2", False),
    (["*"], "sms.send", True),
    (["*.resolved"], "incident.resolved", True),
    (["case.*", "incident.opened"], "incident.opened", True),
    ([], "case.resolved", False),
    (["Case.*"], "case.resolved", False),  # case-sensitive
])
def test_matches(patterns: list[str], event: str, expected: bool) -> None:
    assert matches(patterns, event) is expected


def test_routed_keeps_configuration_order() -> None:
    a = Endpoint("a", "http://127.0.0.1/a", ("case.*",), SECRET)
    b = Endpoint("b", "http://127.0.0.1/b", ("*",), SECRET)
    c = Endpoint("c", "http://127.0.0.1/c", ("incident.*",), SECRET)
    assert [e.name for e in routed([a, b, c], "case.resolved")] == ["a", "b"]
    assert [e.name for e in routed([a, b, c], "sms.send")] == ["b"]


@pytest.mark.parametrize(("event", "ok"), [
    ("case.resolved", True), ("sms.send", True), ("case.compensation_granted", True), ("a.b.c", True),
    ("case", False), ("Case.resolved", False), ("case..resolved", False), ("case.", False), (".case", False),
    ("case.resolved\n", False), ("case resolved", False), ("", False), ("x." + "a" * 100, False), (None, False),
])
def test_check_event(event: object, ok: bool) -> None:
    if ok:
        assert check_event(event) == event
    else:
        with pytest.raises(ValueError, match="event"):
            check_event(event)


@pytest.mark.parametrize(("key", "ok"), [
    ("case:K-1:resolved:1764871234-0", True), ("x", True), ("a" * 200, True),
    ("", False), ("a" * 201, False), ("has space", False), ("line\nbreak", False), ("ümlaut", False), (7, False),
])
def test_check_key(key: object, ok: bool) -> None:
    if ok:
        assert check_key(key) == key
    else:
        with pytest.raises(ValueError, match="key"):
            check_key(key)


def test_delivery_id_is_deterministic_per_key_and_endpoint() -> None:
    assert delivery_id("k1", "crm") == delivery_id("k1", "crm")
    assert delivery_id("k1", "crm") != delivery_id("k1", "billing")
    assert delivery_id("k1", "crm") != delivery_id("k2", "crm")
    assert delivery_id("a\x00b", "c") != delivery_id("a", "b\x00c")  # no separator games
    ident = delivery_id("k1", "crm")
    assert ident.startswith("wh-") and len(ident) == 35


def test_body_is_the_contract_envelope() -> None:
    text = body("wh-1", "case.resolved", "k1", 12.5, {"case_id": "K-1", "名": "张三"})
    assert json.loads(text) == {"id": "wh-1", "event": "case.resolved", "key": "k1", "created_at": 12.5,
                                "data": {"case_id": "K-1", "名": "张三"}}
    assert "张三" in text  # UTF-8, not \\u escapes


@pytest.mark.parametrize("data", [{"x": object()}, {"x": float("nan")}, {"x": "a" * MAX_BODY}])
def test_body_refuses_what_cannot_be_sent(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="data"):
        body("wh-1", "case.resolved", "k1", 1.0, data)


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    raw = b'{"a":1}'
    expected = hmac.new(SECRET, b"1764871234." + raw, hashlib.sha256).hexdigest()
    assert signature(SECRET, 1764871234, raw) == f"t=1764871234,v1={expected}"


@pytest.mark.parametrize(("header", "raw", "secret", "now", "ok"), [
    (signature(SECRET, int(NOW), b"body"), b"body", SECRET, NOW, True),
    (signature(SECRET, int(NOW), b"body"), b"body", SECRET, NOW + 299, True),
    (signature(SECRET, int(NOW), b"body"), b"body", SECRET, NOW + 301, False),  # too old: replay
    (signature(SECRET, int(NOW), b"body"), b"body", SECRET, NOW - 301, False),  # from the future
    (signature(SECRET, int(NOW), b"body"), b"bodY", SECRET, NOW, False),  # body changed
    (signature(SECRET, int(NOW), b"body"), b"body", b"other-secret-other", NOW, False),
    (signature(SECRET, int(NOW), b"body").replace("t=", "t=1"), b"body", SECRET, NOW, False),
    ("v1=abc", b"body", SECRET, NOW, False),
    ("", b"body", SECRET, NOW, False),
    ("t=x,v1=abc", b"body", SECRET, NOW, False),
    (f"t={int(NOW)},t={int(NOW)},v1=abc", b"body", SECRET, NOW, False),
    # several v1 values (a secret being rotated): any one matching is enough
    (f"v1=00,{signature(SECRET, int(NOW), b'body')}", b"body", SECRET, NOW, True),
])
def test_verify(header: str, raw: bytes, secret: bytes, now: float, ok: bool) -> None:
    assert verify(secret, header, raw, now) is ok


@pytest.mark.parametrize(("status", "verdict"), [
    (200, Verdict.DELIVERED), (201, Verdict.DELIVERED), (204, Verdict.DELIVERED), (299, Verdict.DELIVERED),
    (500, Verdict.RETRY), (502, Verdict.RETRY), (503, Verdict.RETRY), (408, Verdict.RETRY), (429, Verdict.RETRY),
    (None, Verdict.RETRY),
    (400, Verdict.FINAL), (401, Verdict.FINAL), (404, Verdict.FINAL), (410, Verdict.FINAL), (422, Verdict.FINAL),
    (301, Verdict.FINAL), (302, Verdict.FINAL), (100, Verdict.FINAL),
])
def test_classify(status: int | None, verdict: Verdict) -> None:
    assert classify(status) is verdict


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("0", 0.0), ("30", 30.0), (" 12 ", 12.0), ("999999", RETRY_AFTER_MAX),
    (formatdate(NOW + 120, usegmt=True), 120.0), (formatdate(NOW - 60, usegmt=True), 0.0),
    ("-5", None), ("soon", None), ("1.5", None),
])
def test_retry_after(value: str | None, expected: float | None) -> None:
    got = retry_after(value, NOW)
    assert got == (pytest.approx(expected) if expected is not None else None)


BACKOFF = Backoff(base=5.0, cap=300.0, jitter=0.5)


@pytest.mark.parametrize(("failed", "rand", "expected"), [
    (1, 0.0, 5.0), (2, 0.0, 10.0), (3, 0.0, 20.0), (7, 0.0, 300.0), (100, 0.0, 300.0),
    (1, 1.0, 2.5), (3, 0.5, 15.0), (0, 0.0, 5.0),  # 0 is read as 1
])
def test_backoff_delay(failed: int, rand: float, expected: float) -> None:
    assert backoff_delay(failed, BACKOFF, rand) == pytest.approx(expected)


@pytest.mark.parametrize(("status", "attempt", "max_attempts", "after", "state", "due", "why"), [
    (200, 1, 3, None, DeliveryState.DELIVERED, None, ""),
    (204, 3, 3, None, DeliveryState.DELIVERED, None, ""),  # the last attempt may still succeed
    (500, 1, 3, None, DeliveryState.PENDING, NOW + 5, ""),
    (None, 2, 3, None, DeliveryState.PENDING, NOW + 10, ""),
    (500, 3, 3, None, DeliveryState.DEAD, None, "gave up after 3 attempts"),
    (429, 1, 3, 42.0, DeliveryState.PENDING, NOW + 42, ""),  # Retry-After wins over the backoff
    (429, 3, 3, 42.0, DeliveryState.DEAD, None, "gave up after 3 attempts"),
    (404, 1, 3, None, DeliveryState.DEAD, None, "final answer 404"),
    (400, 1, 3, None, DeliveryState.DEAD, None, "final answer 400"),
    (408, 1, 3, None, DeliveryState.PENDING, NOW + 5, ""),
])
def test_after_attempt(status: int | None, attempt: int, max_attempts: int, after: float | None,
                       state: DeliveryState, due: float | None, why: str) -> None:
    step = after_attempt(status=status, attempt=attempt, max_attempts=max_attempts, now=NOW, backoff=BACKOFF,
                         rand=0.0, retry_after_seconds=after)
    assert (step.state, step.due, step.why) == (state, due, why)


def test_attempted_counts_and_keeps_the_newest_log() -> None:
    d = Delivery("wh-1", "crm", "case.resolved", "k", 1.0, "{}")
    for n in range(MAX_LOG + 5):
        step = after_attempt(status=500, attempt=d.attempt + 1, max_attempts=1000, now=NOW + n, backoff=BACKOFF,
                             rand=0.0)
        d = attempted(d, Attempt(at=NOW + n, status=500, error="", duration=0.1, by="i1"), step)
    assert d.attempt == d.attempts == MAX_LOG + 5 and len(d.log) == MAX_LOG
    assert d.log[-1].at == NOW + MAX_LOG + 4 and d.last_status == 500 and d.state is DeliveryState.PENDING


def test_the_secret_is_never_shown() -> None:
    endpoint = Endpoint("crm", "https://crm.example/hook", ("case.*",), b"very-secret-value-123")
    assert "very-secret" not in repr(endpoint)
    assert "very-secret" not in json.dumps(endpoint.public())
    assert set(endpoint.public()) == {"name", "url", "events", "timeout", "max_attempts"}
