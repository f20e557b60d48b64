"""`ivrserver doctor` for SMS and reminders: the AMI user needs the `message` write class when SMS
go through Asterisk (MessageSend), and reminders.yaml is checked as the server reads it at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivrserver import config
from ivrserver.commands.doctor import _check_ami_permissions, _check_reminders

REPO = Path(__file__).resolve().parent.parent
MANAGER = "[ivrserver]\nsecret = x\nread = system,call,agent,user\nwrite = {write}\n"


@pytest.mark.parametrize(("transport", "write", "ok"), [
    ("asterisk", "originate,call,agent,message", True),
    ("asterisk", "originate,call,agent", False),
    ("gateway", "originate,call,agent", True),
    ("off", "originate,call,agent", True),
    ("asterisk", "all", True),
])
def test_the_message_class_is_needed_for_sms_through_asterisk(tmp_path: Path, transport: str, write: str,
                                                              ok: bool) -> None:
    (tmp_path / "manager.conf").write_text(MANAGER.format(write=write))
    settings = config.from_mapping({"sms": {"transport": transport}})
    [_, check] = _check_ami_permissions(settings, tmp_path)
    assert check.name == "ami.write" and check.ok is ok, check
    if not ok:
        assert "message: sending SMS" in check.detail and "add message" in check.fix


def test_the_shipped_manager_conf_allows_messagesend() -> None:
    settings = config.from_mapping({"sms": {"transport": "asterisk"}})
    [_, check] = _check_ami_permissions(settings, REPO / "asterisk-config")
    assert check.ok, check


def test_reminders_file(tmp_path: Path) -> None:
    assert _check_reminders(config.Settings()) is not None and _check_reminders(config.Settings()).ok  # type: ignore[union-attr]
    bad = tmp_path / "reminders.yaml"
    bad.write_text("events:\n  w: {event: roaming_started, kind: roaming, text: {en: \"{date}\"}}\n")
    check = _check_reminders(config.from_mapping({"reminders": {"rules_file": str(bad)}}))
    assert check is not None and not check.ok
    assert "unknown placeholder {date}" in check.detail and check.fix == f"fix {bad}"
    assert _check_reminders(config.from_mapping({"reminders": {"enabled": False, "rules_file": str(bad)}})) is None
