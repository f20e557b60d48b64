"""`ivrserver run` and `ivrserver menus reload` against a real server process: the console script on
free ports, the private test Redis, an AMI port nothing listens on (Asterisk is not needed to
serve health, the web API and menu reloads; the server keeps retrying AMI in the background).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli_harness import IVRSERVER, REPO, assert_clean_failure, covers, free_port, ivrserver, user_env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    config: Path
    log: Path
    base: str

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def login(self, agent: str, password: str) -> str:
        req = urllib.request.Request(self.base + "/api/v1/login", method="POST",
                                     data=json.dumps({"agent": agent, "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return str(json.loads(resp.read())["token"])


@pytest.fixture
def server(redis_url: str, tmp_path: Path) -> Iterator[Server]:
    web_port = free_port()
    config = tmp_path / "ivrserver.yaml"
    config.write_text(yaml.safe_dump({
        "redis": {"url": redis_url, "prefix": "cli-run"},
        "ami": {"port": free_port(), "reconnect_max_delay": 1.0},      # nothing listens there
        "agi": {"host": "127.0.0.1", "port": free_port()},
        "web": {"host": "127.0.0.1", "port": web_port},
        "menus": {"watch": False},
        "asterisk": {"config_dir": str(tmp_path)},
        "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml")},
    }))
    log = tmp_path / "ivrserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(IVRSERVER), "-c", str(config), "run"], cwd=REPO, env=user_env(None),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(proc, config, log, f"http://127.0.0.1:{web_port}")
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"ivrserver run exited {proc.returncode}:\n{srv.tail()}")
            try:
                srv.get("/healthz")
                break
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"ivrserver run did not answer /healthz in 20 s:\n{srv.tail()}") from None
                time.sleep(0.1)
        yield srv
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@covers("run")
def test_run_serves_health_and_stops_cleanly_on_sigterm(server: Server) -> None:
    status, body = server.get("/healthz")
    assert status == 503                                  # AMI is unreachable, and /healthz says so
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["fastagi"]["ok"] is True
    assert body["checks"]["ami"]["ok"] is False
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0, server.tail()
    assert "Traceback" not in server.tail()


@covers("run")
def test_run_refuses_invalid_settings_before_starting(redis_url: str, tmp_path: Path) -> None:
    config = tmp_path / "ivrserver.yaml"
    config.write_text("web: {prot: 8080}\n")
    result = ivrserver("-c", str(config), "run", env=user_env(redis_url), timeout=30)
    assert result.returncode == 2
    assert_clean_failure(result)
    assert "web.prot: unknown key; did you mean 'port'?" in result.stderr


@covers("menus reload")
def test_menus_reload_with_the_token_from_the_environment(server: Server) -> None:
    token = server.login("agent1010", "agent1010")        # the demo supervisor
    # The README's way: $IVRSERVER_TOKEN. It used to abort every command as an unknown setting.
    result = ivrserver("-c", str(server.config), "menus", "reload",
                       env=user_env(None, IVRSERVER_TOKEN=token))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("reloaded: unchanged")

    result = ivrserver("-c", str(server.config), "menus", "reload", "--token", token, env=user_env(None))
    assert result.returncode == 0, result.stdout + result.stderr

    result = ivrserver("-c", str(server.config), "menus", "reload", env=user_env(None))   # no token
    assert result.returncode == 2
    assert_clean_failure(result)
    assert "401" in result.stderr

    agent = server.login("agent1003", "agent1003")         # not a supervisor
    result = ivrserver("-c", str(server.config), "menus", "reload", "--token", agent, env=user_env(None))
    assert result.returncode == 2
    assert_clean_failure(result)
    assert "403" in result.stderr

    result = ivrserver("menus", "reload", "--url", f"http://127.0.0.1:{free_port()}", "--token", token,
                       env=user_env(None))
    assert result.returncode == 2
    assert_clean_failure(result)
    assert "cannot reach the server" in result.stderr
