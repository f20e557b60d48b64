"""Background tasks under the supervisor: a crash is logged (traceback once), counted in /metrics and
restarted; the app's own loops all run under it; a hostile menu file neither stops the server at
start nor kills the file watch."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import generate_latest

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.metrics import Metrics
from ivrserver.supervision import Supervisor
from ivrserver.web.backoffice import digest
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
DEEP = "[" * 5000


def restarts(metrics: Metrics, task: str) -> float:
    return metrics.task_restarts.labels(task)._value.get()


async def eventually(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_a_crashed_task_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    supervisor = Supervisor(metrics, initial_delay=0.01, max_delay=0.04)
    attempts: list[float] = []
    serving = asyncio.Event()

    async def consumer() -> None:
        attempts.append(time.monotonic())
        if len(attempts) <= 3:
            json.loads("[" * 100_000)  # a real RecursionError from hostile input
        serving.set()
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR, logger="ivrserver.tasks"):
        supervisor.start("consumer", consumer)
        await asyncio.wait_for(serving.wait(), 5)
    try:
        assert restarts(metrics, "consumer") == 3 and supervisor.runs["consumer"] == 4
        assert not supervisor.tasks["consumer"].done()
        with_traceback = [r for r in caplog.records if r.exc_info]
        assert len(with_traceback) == 1 and "crashed; restarting" in with_traceback[0].getMessage()
        assert "RecursionError" in caplog.records[1].getMessage() and "2 times" in caplog.records[1].getMessage()
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.01 and gaps[1] >= 0.02 and gaps[2] >= 0.04  # backoff doubles, capped
        exported = generate_latest(metrics.registry).decode()
        assert 'ivrserver_task_restarts_total{task="consumer"} 3.0' in exported
    finally:
        await supervisor.stop()
    assert supervisor.tasks == {}


async def test_a_task_that_returns_is_restarted_too() -> None:
    metrics = Metrics()
    supervisor = Supervisor(metrics, initial_delay=0.01)
    runs: list[int] = []

    async def loop_that_ends() -> None:
        runs.append(1)
        if len(runs) < 2:
            return
        await asyncio.Event().wait()

    supervisor.start("ends", loop_that_ends)
    await eventually(lambda: len(runs) == 2)
    assert restarts(metrics, "ends") == 1
    await supervisor.stop()


BACKOFFICE_TOKEN = "bo-" + "5e7a" * 10  # every scope: the routes only back offices may use


async def test_one_task_stopped_may_be_started_again() -> None:
    """A component owning its lifecycle (a websocket hub closing with its web app) stops its own
    supervised loops; the name is free again for the next start."""
    supervisor = Supervisor(Metrics())
    first = supervisor.start("hub-loop", lambda: asyncio.Event().wait())
    await supervisor.stop_task("hub-loop")
    assert first.cancelled() and "hub-loop" not in supervisor.tasks
    await supervisor.stop_task("hub-loop")  # nothing left: no error
    supervisor.start("hub-loop", lambda: asyncio.Event().wait())
    assert set(supervisor.tasks) == {"hub-loop"}
    await supervisor.stop()


def app_settings(redis_url: str, menus_dir: Path) -> config.Settings:
    tokens = menus_dir.parent / "tokens.yaml"
    tokens.write_text(f'bo: {{digest: "{digest(BACKOFFICE_TOKEN)}", '
                      "scopes: [callbacks, cases:read, cases:write, events, incidents]}\n")
    return config.from_mapping({
        "redis": {"url": redis_url, "prefix": f"sv{free_port()}"},
        "ami": {"port": free_port(), "reconnect_max_delay": 1.0},  # nothing listens: AMI retries
        "agi": {"port": free_port()},
        "web": {"port": free_port(), "backoffice_tokens_file": str(tokens)},
        "asterisk": {"config_dir": "/nonexistent", "sounds_dir": "/nonexistent"},
        "menus": {"dir": str(menus_dir), "watch": True, "watch_interval": 0.05},
        "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml")},
        "instance": "sv",
        "event_loop": "asyncio",
    })


@pytest.fixture
async def started(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[IvrServer, Path]]:
    menus = tmp_path / "menus"
    menus.mkdir()
    shutil.copy(REPO / "menus" / "hotline.yaml", menus / "hotline.yaml")
    server = IvrServer(app_settings(redis_url, menus))
    ready = asyncio.Event()
    task = asyncio.create_task(server.run(ready))
    await asyncio.wait_for(ready.wait(), 15)
    yield server, menus
    server.stopping.set()
    await asyncio.wait_for(task, 20)


async def get(server: IvrServer, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{server.web_port}{path}") as r:
        return r.status, await r.text()


async def test_every_app_loop_is_supervised_and_a_crash_shows_in_metrics(
        started: tuple[IvrServer, Path]) -> None:
    server, _ = started
    # always: the AMI fan-out and its consumers, the contact sweeper, the callback observer, the
    # case follow-up, the held SMS sender; by settings: callbacks, reminders (rules present),
    # incidents, the menu watcher (webhooks and the PostgreSQL record loops are off in this app: no endpoints, no dsn)
    assert set(server.supervisor.tasks) == {"ami-fanout", "agent-state", "screen-pop", "contact-sweeper",
                                            "callback-observer",
                                            "wallboard-events", "wallboard-listener", "wallboard-ticker",
                                            "case-followup", "notice-sms", "notice-reconcile", "callback-scheduler",
                                            "reminder-scanner", "incident-detector", "menu-watch",
                                            "reload-signal",  # SIGHUP's reload, off the signal handler
                                            # the websocket hubs' loops, started with the web app
                                            "agent-hub-listener", "agent-sessions", "wallboard-sessions"}
    # No loop of the app can be crashed from outside any more (the hostile menu file was the last
    # known way, see below), so a task of this test crashes for real on the app's own supervisor.
    server.supervisor.initial_delay = 0.01
    runs: list[int] = []

    async def crashes_once() -> None:
        runs.append(1)
        if len(runs) == 1:
            json.loads("[" * 100_000)
        await asyncio.Event().wait()

    server.supervisor.start("probe", crashes_once)
    await eventually(lambda: len(runs) == 2)
    status, text = await get(server, "/metrics")
    assert status == 200
    assert 'ivrserver_task_restarts_total{task="probe"} 1.0' in text
    assert 'ivrserver_task_restarts_total{task="menu-watch"} 0.0' in text


async def test_a_hostile_menu_file_neither_kills_the_watch_nor_replaces_the_live_menu(
        started: tuple[IvrServer, Path]) -> None:
    server, menus = started
    live = server.menus.current
    (menus / "hotline.yaml").write_text(DEEP)
    await asyncio.sleep(0.5)
    assert server.menus.current is live and not server.supervisor.tasks["menu-watch"].done()
    assert restarts(server.metrics, "menu-watch") == 0
    body = json.loads((await get(server, "/healthz"))[1])
    assert body["checks"]["menus"]["ok"] is True
    (menus / "hotline.yaml").write_text((REPO / "menus" / "hotline.yaml").read_text() + "\n# fixed\n")
    await eventually(lambda: server.menus.current is not live)


async def test_starting_with_a_hostile_menu_file_serves_without_a_menu_until_it_is_fixed(
        redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    menus = tmp_path / "menus"
    menus.mkdir()
    (menus / "hotline.yaml").write_text(DEEP)
    server = IvrServer(app_settings(redis_url, menus))
    ready = asyncio.Event()
    task = asyncio.create_task(server.run(ready))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        assert "no valid menu at start" in caplog.text and "nested deeper than 40 levels" in caplog.text
        status, text = await get(server, "/healthz")
        assert status == 503 and json.loads(text)["checks"]["menus"]["ok"] is False
        shutil.copy(REPO / "menus" / "hotline.yaml", menus / "hotline.yaml")
        await eventually(lambda: "hotline" in server.menus.current.menus)
        assert json.loads((await get(server, "/healthz"))[1])["checks"]["menus"]["ok"] is True
    finally:
        server.stopping.set()
        await asyncio.wait_for(task, 20)
