"""Pid files: a leftover is stopped only while its pid is still the very process recorded."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivrserver.devstack.pidfiles import OWNER, PidFiles, process_start, still_ours
from ivrserver.devstack.process import DevStackError


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_claim_stops_a_recorded_leftover(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    pids = PidFiles(tmp_path)
    pids.record_now("sipp-5071", sleeper.pid, "sleep", "a phone")
    stopped = pids.claim()
    assert [r.pid for r in stopped] == [sleeper.pid]
    assert sleeper.wait(5) == -15                       # SIGTERM
    assert [r.name for r in pids.recorded()] == [OWNER]


@pytest.mark.parametrize("change", [{"start": -1}, {"program": "asterisk"}])
def test_a_stranger_on_a_recorded_pid_is_never_signalled(tmp_path: Path, sleeper: subprocess.Popen[bytes],
                                                          change: dict[str, object]) -> None:
    """Another start time (the pid was reused) or another program: not ours."""
    pids = PidFiles(tmp_path)
    pids.record_now("redis", sleeper.pid, "sleep", "Redis")
    path = tmp_path / "redis.pid"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    assert not still_ours(pids.recorded()[0])
    assert pids.claim() == []
    assert sleeper.poll() is None                         # still running, untouched
    assert not path.exists()


def test_a_running_make_run_is_not_taken_over(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    pids = PidFiles(tmp_path)
    pids.record_now(OWNER, sleeper.pid, "sleep", "make run")
    with pytest.raises(DevStackError, match=f"already running \\(pid {sleeper.pid}\\)"):
        pids.claim()
    assert sleeper.poll() is None


def test_a_dead_process_and_a_garbled_file_are_dropped(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    pids = PidFiles(tmp_path)
    pids.record_now("gone", proc.pid, "true", "gone")       # already reaped: nothing recorded
    (tmp_path / "bad.pid").write_text("{not json")
    assert pids.recorded() == []
    assert process_start(proc.pid) is None
    me = pids.claim()
    assert me == [] and pids.recorded()[0].pid == os.getpid()
    pids.release()
    assert pids.recorded() == []


def test_recorded_round_trip(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    pids = PidFiles(tmp_path)
    pids.record_now("asterisk", sleeper.pid, "sleep", "Asterisk devstack")
    rec = pids.recorded()[0]
    assert dataclasses.asdict(rec) == {"name": "asterisk", "pid": sleeper.pid, "start": process_start(sleeper.pid),
                                       "program": "sleep", "what": "Asterisk devstack"}
    assert still_ours(rec)


def test_a_port_left_in_time_wait_is_free_for_a_server_a_listener_is_not() -> None:
    """After a killed make run its PostgreSQL port has connections in TIME_WAIT: the next start
    must take the same port (5433) instead of wandering to a free one, as PostgreSQL itself can."""
    import socket

    from ivrserver.devstack.ports import port_free, tcp_listen_free

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    assert not tcp_listen_free(port)  # a listener holds it
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end goes to TIME_WAIT
    client.close()
    server.close()
    assert tcp_listen_free(port)
    assert not port_free(port)  # the strict check (no SO_REUSEADDR) still sees the TIME_WAIT socket
