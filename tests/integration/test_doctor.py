"""`ivrserver doctor` against the real Asterisk and Redis: all green when configured as shipped,
and a precise failure with a fix for each thing newcomers get wrong."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivrserver import config
from ivrserver.commands.doctor import diagnose
from ivrserver.devstack.asterisk import LocalAsterisk
from ivrserver.devstack.stack import stack_settings

pytestmark = pytest.mark.integration


def by_name(checks: list) -> dict:
    return {c.name: c for c in checks}


@pytest.fixture
def settings(asterisk: LocalAsterisk, redis_url: str) -> config.Settings:
    return stack_settings(asterisk, redis_url)


async def test_shipped_configuration_passes_every_check(settings: config.Settings,
                                                       redis_client: aioredis.Redis) -> None:
    checks = await diagnose(settings)
    failed = [c for c in checks if not c.ok]
    assert failed == []
    names = set(by_name(checks))
    assert {"redis", "ami.login", "ami.read", "ami.write", "dialplan.include", "dialplan.agi", "queues", "menus",
            "routing", "fastagi.port"} <= names


async def test_wrong_secret_wrong_agi_port_and_dead_redis_are_explained(settings: config.Settings,
                                                                         tmp_path: Path) -> None:
    broken = dataclasses.replace(
        settings,
        ami=dataclasses.replace(settings.ami, secret="not-the-secret"),
        agi=dataclasses.replace(settings.agi, port=settings.agi.port + 1),
        redis=dataclasses.replace(settings.redis, url="redis://127.0.0.1:1/0"),
        routing=dataclasses.replace(settings.routing, policy_file=str(tmp_path / "missing.yaml")),
    )
    checks = by_name(await diagnose(broken))
    assert not checks["ami.login"].ok and "manager.conf" in checks["ami.login"].fix
    assert not checks["dialplan.agi"].ok
    assert f"IVRSERVER_AGI={settings.agi.host}:{settings.agi.port + 1}" in checks["dialplan.agi"].fix
    assert not checks["redis"].ok and "redis.url" in checks["redis"].fix
    assert not checks["routing"].ok and "missing.yaml" in checks["routing"].detail
    assert checks["menus"].ok  # what is right stays green


async def test_missing_ami_permission_is_named(settings: config.Settings, tmp_path: Path) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    for name in ("extensions.conf", "queues.conf"):
        (conf / name).write_text((Path(settings.asterisk.config_dir) / name).read_text())
    manager = (Path(settings.asterisk.config_dir) / "manager.conf").read_text()
    (conf / "manager.conf").write_text(manager.replace("write = originate,call,agent", "write = call"))
    checks = by_name(await diagnose(dataclasses.replace(
        settings, asterisk=dataclasses.replace(settings.asterisk, config_dir=str(conf)))))
    assert not checks["ami.write"].ok
    assert "originate: placing callbacks" in checks["ami.write"].detail
    assert checks["ami.read"].ok
