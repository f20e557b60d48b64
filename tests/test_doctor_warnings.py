"""`ivrserver doctor` warnings about data at risk: a Redis that keeps nothing on disk, an Asterisk
that logs every key a caller presses. Against the session's real redis-server and real files."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivrserver import config
from ivrserver.commands.doctor import _check_asterisk_logger, _check_redis_persistence
from ivrserver.pbx.asterisk_conf import ConfReadError, keypress_log_channels

REPO = Path(__file__).resolve().parent.parent


def settings_for(url: str) -> config.Settings:
    base = config.Settings()
    return dataclasses.replace(base, redis=dataclasses.replace(base.redis, url=url))


# ------------------------------------------------------------------------------ logger.conf


def test_shipped_logger_conf_records_no_keypress() -> None:
    assert keypress_log_channels(REPO / "asterisk-config" / "logger.conf") == []


@pytest.mark.parametrize(("logfiles", "expected"), [
    ("full.log => notice,warning,error,verbose(3),dtmf", ["full.log"]),
    ("messages => notice,warning,error", []),
    ("console => [plain]notice, DTMF", ["console"]),       # format prefix, spaces, upper case
    ("syslog.local0 => *", ["syslog.local0"]),               # '*' is every level, dtmf included
    ("full => verbose(5),debug\nkeys => dtmf", ["keys"]),
    ("dtmf.log => notice", []),                              # the file's name is not a level
])
def test_keypress_log_channels(tmp_path: Path, logfiles: str, expected: list[str]) -> None:
    conf = tmp_path / "logger.conf"
    conf.write_text(f"[general]\ndateformat = %F %T\n\n[logfiles]\n{logfiles}\n")
    assert keypress_log_channels(conf) == expected


def test_missing_logger_conf_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfReadError):
        keypress_log_channels(tmp_path / "logger.conf")


def test_doctor_warns_when_the_users_asterisk_logs_dtmf(tmp_path: Path) -> None:
    (tmp_path / "logger.conf").write_text("[logfiles]\nmessages => notice,warning,error\n"
                                          "full => notice,verbose(3),dtmf\n")
    check = _check_asterisk_logger(tmp_path)
    assert check.ok and check.warning
    assert "full" in check.detail and "PIN" in check.detail
    assert "remove `dtmf`" in check.fix


def test_doctor_is_quiet_about_the_shipped_logger_conf() -> None:
    check = _check_asterisk_logger(REPO / "asterisk-config")
    assert check.ok and not check.warning, check


def test_doctor_says_when_logger_conf_was_not_checked(tmp_path: Path) -> None:
    check = _check_asterisk_logger(tmp_path)
    assert check.warning and "not checked" in check.detail


# ------------------------------------------------------------------------- Redis persistence


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client on the session's Redis; its persistence settings are put back afterwards."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    before = {**await client.config_get("appendonly"), **await client.config_get("save")}
    yield client
    await client.config_set("appendonly", before["appendonly"])
    await client.config_set("save", before["save"])
    await client.aclose()


async def test_doctor_warns_when_redis_keeps_nothing(redis_url: str, admin: aioredis.Redis) -> None:
    await admin.config_set("appendonly", "no")
    await admin.config_set("save", "")
    check = await _check_redis_persistence(settings_for(redis_url))
    assert check is not None and check.ok and check.warning
    assert "keeps nothing on disk" in check.detail
    assert "appendonly yes" in check.fix


async def test_aof_is_fine(redis_url: str, admin: aioredis.Redis) -> None:
    await admin.config_set("appendonly", "yes")
    check = await _check_redis_persistence(settings_for(redis_url))
    assert check is not None and check.ok and not check.warning
    assert check.detail.startswith("AOF on (appendfsync everysec")


async def test_rdb_snapshots_alone_are_not_a_warning(redis_url: str, admin: aioredis.Redis) -> None:
    await admin.config_set("appendonly", "no")
    await admin.config_set("save", "3600 1")
    check = await _check_redis_persistence(settings_for(redis_url))
    assert check is not None and check.ok and not check.warning
    assert "RDB snapshots only" in check.detail


async def test_config_denied_is_a_warning_not_a_crash(redis_url: str, admin: aioredis.Redis) -> None:
    """A Redis whose CONFIG is off limits (ACL here; `rename-command CONFIG ""` answers the same
    way: an error reply) cannot tell what it keeps: doctor says so."""
    user, password = f"doctor-{secrets.token_hex(3)}", secrets.token_hex(8)
    await admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-config")
    try:
        url = redis_url.replace("redis://", f"redis://{user}:{password}@")
        check = await _check_redis_persistence(settings_for(url))
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
    assert check is not None and check.ok and check.warning
    assert "cannot tell" in check.detail and password not in check.detail


async def test_dead_redis_is_left_to_the_redis_check() -> None:
    assert await _check_redis_persistence(settings_for("redis://127.0.0.1:1/0")) is None
