"""An in-process IvrServer for tests: its settings (free ports, the hotline menu, no Asterisk),
start, stop, a migrated PostgreSQL, and waiting for a condition. Shared by the tests that drive a
whole server on a real Redis (and PostgreSQL): tests/test_frozen_redis.py, tests/test_redis_ttls.py,
tests/record/test_app_records.py, tests/record/test_customers_cases_e2e.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.record import migrate
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
# the AGI commands that play a prompt and wait for a key: a scripted caller answers these
PROMPTS = ("STREAM FILE", "GET DATA", "GET OPTION", "EXEC")


def hotline_menus(folder: Path) -> Path:
    """`folder` (created) holding the repository's hotline menu only; returns it."""
    folder.mkdir()
    (folder / "hotline.yaml").write_text((REPO / "menus" / "hotline.yaml").read_text())
    return folder


def server_settings(redis_url: str, menus: Path, **sections: Any) -> config.Settings:
    """Settings of a server on free ports, no Asterisk, callbacks off. Each keyword is a section
    (merged into the base one when both are mappings) or a top-level setting (instance=...)."""
    mapping: dict[str, Any] = {
        "redis": {"url": redis_url},
        "ami": {"port": free_port(), "reconnect_max_delay": 1.0},
        "agi": {"port": free_port()},
        "web": {"port": free_port()},
        "asterisk": {"config_dir": "/nonexistent", "sounds_dir": "/nonexistent"},
        "menus": {"dir": str(menus), "watch": False},
        "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml")},
        "callbacks": {"enabled": False},
        "event_loop": "asyncio",
    }
    for name, value in sections.items():
        base = mapping.get(name)
        mapping[name] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
    return config.from_mapping(mapping)


async def migrated(dsn: str, target: int | None = None) -> None:
    """The database at `dsn` migrated to `target` (default: the newest version)."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn, target)
    finally:
        await conn.close()


async def running(settings: config.Settings) -> tuple[IvrServer, asyncio.Task[None]]:
    """A started server (ready: its listeners are up) and the task that runs it."""
    srv = IvrServer(settings)
    ready = asyncio.Event()
    task = asyncio.create_task(srv.run(ready))
    await asyncio.wait_for(ready.wait(), 15)
    return srv, task


async def stop(srv: IvrServer, task: asyncio.Task[None]) -> None:
    srv.stopping.set()
    await asyncio.wait_for(task, 30)


@asynccontextmanager
async def serving(settings: config.Settings) -> AsyncIterator[IvrServer]:
    srv, task = await running(settings)
    try:
        yield srv
    finally:
        await stop(srv, task)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "") -> Any:
    """The first truthy value of `check()`, polled every 0.1 s; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s: {what} (last: {value!r})")
        await asyncio.sleep(0.1)


def agi_headers(uid: str, n: int = 1, number: str = "", name: str = "Eve") -> str:
    """The variables res_agi.c sends first for call `n` to the hotline script (caller ID `number`,
    default 1555 and n in 4 digits), ending with the blank line."""
    return ("agi_network: yes\nagi_network_script: hotline\nagi_request: agi://127.0.0.1/hotline\n"
            f"agi_channel: PJSIP/callers-{n:08d}\nagi_uniqueid: {uid}\nagi_callerid: {number or f'1555{n:04d}'}\n"
            f"agi_calleridname: {name}\n\n")


class ScriptedCaller:
    """A FastAGI peer scripted the way res_agi.c talks: presses `key` at the first prompt, no key at
    the next ones, and hangs up at the prompt after `answered` prompts, unless the server ends the
    session first (the call left the menu). Records every command the server sent, how long the
    first prompt took and how long the server held the session after the hang-up."""

    def __init__(self, port: int, headers: str, *, key: str = "1", answered: int = 3) -> None:
        self.port, self.headers, self.key, self.answered = port, headers, key, answered
        self.commands: list[str] = []
        self.first_prompt_after = -1.0
        self.closed_after_hangup = -1.0

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        started = time.monotonic()
        writer.write(self.headers.encode())
        prompts = 0
        try:
            while True:
                line = (await asyncio.wait_for(reader.readline(), 10)).decode().strip()
                if not line:
                    return
                self.commands.append(line)
                if line.startswith(PROMPTS):
                    prompts += 1
                    if prompts == 1:
                        self.first_prompt_after = time.monotonic() - started
                    if prompts > self.answered:
                        writer.write(b"200 result=-1\nHANGUP\n")
                        await writer.drain()
                        hung_up = time.monotonic()
                        await asyncio.wait_for(reader.read(), 10)
                        self.closed_after_hangup = time.monotonic() - hung_up
                        return
                    # the digit's character code, as res_agi.c reports a key; 0: none pressed
                    writer.write(f"200 result={ord(self.key) if prompts == 1 else 0} endpos=8000\n".encode())
                else:
                    writer.write(b"200 result=1\n")
                await writer.drain()
        finally:
            writer.close()
