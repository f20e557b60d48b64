"""files/webhooks.py: webhooks.yaml read and validated, every problem at its line, secrets from the
environment or a file (0600, else a warning) and never in a message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ivrserver.config import WebhookSettings
from ivrserver.files.webhooks import WebhookFileError, load, parse

SECRET = "crm-secret-0123456789abcdef"
ENV = {"CRM_SECRET": SECRET, "SHORT": "abc"}
SETTINGS = WebhookSettings(timeout_seconds=7.0, max_attempts=4)
GOOD = """\
endpoints:
  - name: crm
    url: https://crm.example.com/hooks/ivrserver?team=1
    events: ["case.*", "incident.opened"]
    secret_env: CRM_SECRET
  - name: sms-gw
    url: http://127.0.0.1:9000/sms
    events: sms.send
    secret_env: CRM_SECRET
    timeout: 2.5
    max_attempts: 12
"""


def test_a_good_file() -> None:
    loaded = parse(GOOD, "webhooks.yaml", SETTINGS, ENV)
    crm, sms = loaded.endpoints
    assert (crm.name, crm.url, crm.events, crm.secret, crm.timeout, crm.max_attempts) == (
        "crm", "https://crm.example.com/hooks/ivrserver?team=1", ("case.*", "incident.opened"), SECRET.encode(),
        7.0, 4)  # the settings' defaults
    assert (sms.events, sms.timeout, sms.max_attempts) == (("sms.send",), 2.5, 12)
    assert loaded.warnings == ()


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "endpoints: []\n", "endpoints:\n"])
def test_empty_means_no_endpoints(text: str) -> None:
    assert parse(text, "webhooks.yaml", SETTINGS, ENV).endpoints == ()


def test_no_file_setting_means_no_endpoints() -> None:
    assert load(WebhookSettings()).endpoints == ()


def _entry(**fields: object) -> str:
    base: dict[str, object] = {"name": "crm", "url": "https://crm.example.com/h", "events": ["case.*"],
                               "secret_env": "CRM_SECRET"}
    base.update(fields)
    lines = ["endpoints:", "  - " + "\n    ".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}"
                                                  for k, v in base.items() if v is not None)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("text", "message"), [
    ("- a\n", "expected a mapping with `endpoints: [...]`"),
    ("endpoint: []\n", "endpoint: unknown key; allowed: endpoints; did you mean 'endpoints'?"),
    ("endpoints: {crm: 1}\n", "endpoints: expected a list of endpoints"),
    ("endpoints: [crm]\n", "endpoints.0: expected a mapping"),
    (_entry(name="bad name"), "endpoints.0.name: expected 1-64 letters"),
    (_entry(name=None), "endpoints.0.name: expected 1-64 letters"),
    (_entry(url="ftp://x.example/h"), "endpoints.0.url: expected an http:// or https:// URL with a host"),
    (_entry(url="https:///nohost"), "endpoints.0.url: expected an http:// or https:// URL with a host"),
    (_entry(url="https://user:pw@crm.example.com/h"), "endpoints.0.url: no user:password@"),
    (_entry(url="https://crm.example.com:99999/h"), "endpoints.0.url: not a valid URL"),
    (_entry(url="https://crm.example.com/h#frag"), "endpoints.0.url: no #fragment"),
    (_entry(url=None), "endpoints.0.url: expected an http:// or https:// URL"),
    (_entry(events=[]), "endpoints.0.events: expected a list of event patterns"),
    (_entry(events=["Case.*"]), "endpoints.0.events.0: expected an event pattern"),
    (_entry(events=["case..x"]), "endpoints.0.events.0: expected an event pattern"),
    (_entry(secret_env=None), "endpoints.0: give exactly one of secret_env"),
    (_entry(secret_file="/etc/x"), "endpoints.0: give exactly one of secret_env"),
    (_entry(secret_env="MISSING"), "endpoints.0.secret_env: environment variable MISSING is not set or shorter"),
    (_entry(secret_env="SHORT"), "endpoints.0.secret_env: environment variable SHORT is not set or shorter"),
    (_entry(timeout=0), "endpoints.0.timeout: expected seconds 0.1..300, got 0"),
    (_entry(timeout="fast"), "endpoints.0.timeout: expected seconds"),
    (_entry(max_attempts=0), "endpoints.0.max_attempts: expected a whole number 1..100, got 0"),
    (_entry(max_attempts=2.5), "endpoints.0.max_attempts: expected a whole number"),
    (_entry(max_attempts=True), "endpoints.0.max_attempts: expected a whole number"),
    (_entry(secret="x"), "endpoints.0.secret: unknown key; allowed: name, url, events, secret_env"),
    ("endpoints:\n  - {name: a, url: 'https://a.example', events: ['*'], secret_env: CRM_SECRET}\n"
     "  - {name: a, url: 'https://b.example', events: ['*'], secret_env: CRM_SECRET}\n",
     "endpoints.1.name: duplicate endpoint name 'a'"),
    ("endpoints: [\n", "not valid YAML"),
    ("endpoints: []\nendpoints: []\n", "duplicate key 'endpoints'"),
])
def test_problems_are_precise(text: str, message: str) -> None:
    with pytest.raises(WebhookFileError) as caught:
        parse(text, "webhooks.yaml", SETTINGS, ENV)
    assert any(message in p for p in caught.value.problems), caught.value.problems
    assert all(p.startswith("webhooks.yaml:") for p in caught.value.problems)
    assert not any(SECRET in p for p in caught.value.problems)


def test_problems_name_their_line() -> None:
    with pytest.raises(WebhookFileError) as caught:
        parse(GOOD.replace("timeout: 2.5", "timeout: -1"), "webhooks.yaml", SETTINGS, ENV)
    assert caught.value.problems == ["webhooks.yaml:10:5: error: endpoints.1.timeout: expected seconds 0.1..300, "
                                     "got -1"]


def test_plain_http_off_this_host_is_a_warning() -> None:
    loaded = parse(_entry(url="http://crm.example.com/h"), "webhooks.yaml", SETTINGS, ENV)
    assert len(loaded.endpoints) == 1
    assert loaded.warnings == ("webhooks.yaml:3:5: warning: endpoints.0.url: plain http to crm.example.com: the "
                               "events travel unencrypted (use https)",)


def test_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "crm.secret"
    secret.write_text(SECRET + "\n")
    os.chmod(secret, 0o600)
    text = _entry(secret_env=None, secret_file=str(secret))
    loaded = parse(text, "webhooks.yaml", SETTINGS, ENV)
    assert loaded.endpoints[0].secret == SECRET.encode() and loaded.warnings == ()
    os.chmod(secret, 0o644)
    loaded = parse(text, "webhooks.yaml", SETTINGS, ENV)
    assert loaded.endpoints[0].secret == SECRET.encode()
    assert len(loaded.warnings) == 1 and "mode 0644: others may read the secret (chmod 600)" in loaded.warnings[0]
    assert SECRET not in loaded.warnings[0]


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read"), ("short\n", "expected a secret of 16..4096 characters"),
    ("x" * 5000, "expected a secret of 16..4096 characters"),
])
def test_secret_file_problems(tmp_path: Path, content: str | None, message: str) -> None:
    secret = tmp_path / "crm.secret"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(WebhookFileError) as caught:
        parse(_entry(secret_env=None, secret_file=str(secret)), "webhooks.yaml", SETTINGS, ENV)
    assert message in caught.value.problems[0]


def test_load_reads_the_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "webhooks.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv("CRM_SECRET", SECRET)
    assert [e.name for e in load(WebhookSettings(endpoints_file=str(path))).endpoints] == ["crm", "sms-gw"]
    with pytest.raises(WebhookFileError, match=r"webhooks\.endpoints_file: .*cannot read"):
        load(WebhookSettings(endpoints_file=str(tmp_path / "missing.yaml")))


def test_doctor_checks_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ivrserver import config
    from ivrserver.commands.doctor import _check_webhooks

    path = tmp_path / "webhooks.yaml"
    assert _check_webhooks(config.from_mapping({})) is None
    settings = config.from_mapping({"webhooks": {"endpoints_file": str(path)}})
    path.write_text(GOOD)
    monkeypatch.setenv("CRM_SECRET", SECRET)
    check = _check_webhooks(settings)
    assert check is not None and (check.ok, check.warning, check.detail) == (True, False, "2 endpoint(s): crm, sms-gw")
    path.write_text(GOOD.replace("https://crm", "http://crm"))
    check = _check_webhooks(settings)
    assert check is not None and check.ok and check.warning and "plain http to crm.example.com" in check.detail
    monkeypatch.delenv("CRM_SECRET")
    check = _check_webhooks(settings)
    assert check is not None and not check.ok and "environment variable CRM_SECRET is not set" in check.detail
    assert SECRET not in check.detail
