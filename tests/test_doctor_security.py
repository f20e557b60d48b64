"""`ivrserver doctor` warnings for each default still in place before production: AMI secret,
demo or cheap agent passwords, no pepper configured, FastAGI or web bound to every address.
Real files and settings; no Asterisk needed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ivrserver import config
from ivrserver.commands.doctor import (
    _check_agent_passwords,
    _check_ami_secret,
    _check_bind_addresses,
    _check_pepper,
    security_checks,
)
from ivrserver.domain.hashing import PASSWORD_COST, Cost
from ivrserver.web.auth import hash_password

REPO = Path(__file__).resolve().parent.parent
PEPPER = "0123456789abcdef" * 4


def settings(**sections: Any) -> config.Settings:
    # no pepper from the test environment unless a test gives one
    return config.from_mapping({"security": {"dev_pepper_file": "/nonexistent/dev-pepper"}, **sections})


def by_name(checks: list[Any]) -> dict[str, Any]:
    return {c.name: c for c in checks}


def test_default_ami_secret_warns() -> None:
    check = _check_ami_secret(settings())
    assert check.ok and check.warning and "default" in check.detail and check.fix
    assert "ivrserver" in check.detail
    good = _check_ami_secret(settings(ami={"secret": "a-long-random-secret-0123456789"}))
    assert good.ok and not good.warning
    assert "a-long-random" not in good.detail  # the secret itself is never printed


def test_demo_agent_passwords_warn() -> None:
    check = _check_agent_passwords(settings(routing={"agents_file": str(REPO / "scripts" / "demo-agents.yaml")}))
    assert check.warning and "10 agent(s) with a demo password" in check.detail
    assert "hash-password" in check.fix


def agents_file(tmp_path: Path, hashes: dict[str, str]) -> str:
    lines = ["agents:"] + [f'  - {{id: {a}, name: A, endpoint: PJSIP/{a}, password_hash: "{h}"}}'
                          for a, h in hashes.items()]
    path = tmp_path / "agents.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_cheap_hash_warns_and_own_passwords_at_current_cost_pass(tmp_path: Path) -> None:
    cheap = agents_file(tmp_path, {"agent1001": hash_password("s3cret-horse", cost=Cost(10))})
    check = _check_agent_passwords(settings(routing={"agents_file": cheap}))
    assert check.warning and "below the current cost (agent1001" in check.detail and "demo" not in check.detail
    good = agents_file(tmp_path, {"agent1001": hash_password("s3cret-horse", cost=PASSWORD_COST)})
    check = _check_agent_passwords(settings(routing={"agents_file": good}))
    assert check.ok and not check.warning


def test_development_pepper_warns(tmp_path: Path) -> None:
    dev = tmp_path / "state" / "dev-pepper"
    check = _check_pepper(config.from_mapping({"security": {"dev_pepper_file": str(dev)}}))
    assert check.ok and check.warning and "development pepper" in check.detail and "pepper_file" in check.fix
    assert dev.stat().st_mode & 0o777 == 0o600 and dev.parent.stat().st_mode & 0o777 == 0o700
    assert dev.read_text().strip() not in check.detail + check.fix  # never prints the pepper


def test_configured_pepper_passes_and_loose_permissions_warn(tmp_path: Path) -> None:
    path = tmp_path / "pepper"
    path.write_text(PEPPER + "\n")
    os.chmod(path, 0o600)
    check = _check_pepper(settings(security={"pepper_file": str(path)}))
    assert check.ok and not check.warning and PEPPER not in check.detail
    os.chmod(path, 0o644)
    check = _check_pepper(settings(security={"pepper_file": str(path)}))
    assert check.warning and "chmod 600" in check.fix
    from_env = _check_pepper(settings(security={"pepper": PEPPER}))
    assert from_env.ok and not from_env.warning and PEPPER not in from_env.detail


def test_missing_or_short_pepper_fails(tmp_path: Path) -> None:
    check = _check_pepper(settings(security={"pepper_file": str(tmp_path / "missing")}))
    assert not check.ok and "security.pepper_file" in check.detail
    short = tmp_path / "short"
    short.write_text("too-short")
    check = _check_pepper(settings(security={"pepper_file": str(short)}))
    assert not check.ok and "at least 32" in check.detail


@pytest.mark.parametrize(("agi", "web", "warned"), [
    ("127.0.0.1", "127.0.0.1", set()),
    ("0.0.0.0", "127.0.0.1", {"security.fastagi_bind"}),
    ("10.0.0.5", "0.0.0.0", {"security.web_bind"}),
    ("::", "::", {"security.fastagi_bind", "security.web_bind"}),
])
def test_bind_addresses(agi: str, web: str, warned: set[str]) -> None:
    checks = _check_bind_addresses(settings(agi={"host": agi}, web={"host": web}))
    assert {c.name for c in checks if c.warning} == warned
    assert all(c.ok for c in checks)
    fastagi = by_name(checks)["security.fastagi_bind"]
    assert "no authentication" in fastagi.detail


async def test_security_checks_on_the_shipped_defaults(tmp_path: Path) -> None:
    checks = by_name(await security_checks(config.from_mapping({
        "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml")},
        "security": {"dev_pepper_file": str(tmp_path / "dev-pepper")}})))
    assert {n for n, c in checks.items() if c.warning} == {"security.ami_secret", "security.agent_passwords",
                                                           "security.pepper"}
    assert all(c.ok for c in checks.values())
