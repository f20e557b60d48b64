"""One local stack: Redis + Asterisk up together, and the ivrserver settings that fit it.

- `stack()`: `async with stack() as (asterisk, redis):` — what `make run` and other tools use.
- `stack_settings()`: ivrserver's settings for a stack (its Redis, AMI, FastAGI, Asterisk paths).
- `write_settings()`: those settings as a YAML file (`make run`: run/ivrserver.yaml), so that
  `ivrserver -c run/ivrserver.yaml doctor | menus check | customers …` look at this stack.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path

import yaml

from ivrserver import config
from ivrserver.config import Settings
from ivrserver.devstack.asterisk import DEFAULT_AMI_SECRET, LocalAsterisk
from ivrserver.devstack.pidfiles import PidFiles
from ivrserver.devstack.ports import StackPorts
from ivrserver.devstack.process import REPO_DIR
from ivrserver.devstack.redis import LocalRedis

DEMO_AGENTS = REPO_DIR / "scripts" / "demo-agents.yaml"


@contextlib.asynccontextmanager
async def stack(ports: StackPorts | None = None, *, ami_secret: str = DEFAULT_AMI_SECRET,
                redis: LocalRedis | None = None, name: str | None = None,
                pids: PidFiles | None = None) -> AsyncIterator[tuple[LocalAsterisk, LocalRedis]]:
    """Redis + Asterisk, up for the duration of the block; stopped and cleaned up afterwards.

    Defaults: StackPorts.default() (`make run`'s ports), AMI secret "ivrserver", a private
    throwaway Redis on a free port (pass `redis` for another one, e.g. `make run`'s persistent
    one). Start ivrserver itself inside the block.
    """
    redis = redis or LocalRedis(pids=pids)
    asterisk = LocalAsterisk(ports or StackPorts.default(), ami_secret=ami_secret,
                             name=name or f"devstack-{os.getpid()}", pids=pids)
    await redis.start()
    try:
        await asterisk.start()
        try:
            yield asterisk, redis
        finally:
            await asterisk.stop()
            asterisk.remove()
    finally:
        await redis.stop()


def stack_settings(asterisk: LocalAsterisk, redis_url: str, config_file: str | None = None) -> Settings:
    """ivrserver settings for a local stack: the user's settings (or the defaults, which are
    `make run`'s ports) with this stack's Redis, AMI, FastAGI and Asterisk paths (the rendered
    configuration and the chroot's sounds), and the demo agents (passwords = their ids) unless
    the settings name an agents file."""
    base = config.load(config_file)
    agents = base.routing.agents_file
    if agents == config.RoutingSettings().agents_file:
        agents = str(DEMO_AGENTS)
    return dataclasses.replace(
        base,
        redis=dataclasses.replace(base.redis, url=redis_url),
        ami=dataclasses.replace(base.ami, host="127.0.0.1", port=asterisk.ports.ami_port, secret=asterisk.ami_secret),
        agi=dataclasses.replace(base.agi, host=asterisk.ports.agi_host, port=asterisk.ports.agi_port),
        asterisk=dataclasses.replace(base.asterisk, config_dir=str(asterisk.etc_dir),
                                     sounds_dir=str(asterisk.sounds_dir)),
        routing=dataclasses.replace(base.routing, agents_file=agents),
        sms=_stack_sms(base.sms, asterisk),
    )


def _stack_sms(sms: config.SmsSettings, asterisk: LocalAsterisk) -> config.SmsSettings:
    """SMS through this stack's Asterisk to its SIPp customers' phone, unless the settings chose."""
    if sms != config.SmsSettings():
        return sms
    return dataclasses.replace(sms, transport="asterisk",
                               destination=f"pjsip:customers/sip:{{number}}@127.0.0.1:{asterisk.ports.customer_port}")


def write_settings(settings: Settings, path: Path) -> Path:
    """Write the effective `settings` as ivrserver YAML (every key), readable by the owner only:
    it holds the AMI secret. Blocking: call it in a worker thread from a coroutine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("# Written by `make run` for the stack it runs; rewritten at every start.\n"
            "#   .venv/bin/ivrserver -c run/ivrserver.yaml doctor | menus check | customers show c-vip-1 ...\n"
            + yaml.safe_dump(dataclasses.asdict(settings), sort_keys=False))
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)
    return path
