"""`make run` itself, as a newcomer meets it: the real command (`python -m ivrserver.devstack run`,
on free ports and its own run directory instead of 5060/5038/4573/8080 and run/), with real
Asterisk, Redis, SIPp phones and ivrserver.

- the banner's facts are the demo data's (the VIP's call rings the case owner agent1003);
- `ivrserver -c <run>/ivrserver.yaml doctor` is green and `menus check` checks sounds and queues;
- `make call` (devstack call) reports route, agent and outcome from the contact record;
- its own PostgreSQL is up, migrated (`db status`), its dsn in <run>/ivrserver.yaml;
- after a SIGKILL of `make run`, its Asterisk, Redis, PostgreSQL and eleven phones keep running; the next
  `make run` stops exactly those (pid files), says so, and comes up; Ctrl-C then stops everything.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import yaml

from ivrserver.devstack.pidfiles import OWNER, PidFiles, still_ours

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

READY = "Ctrl-C stops everything."
IVRSERVER = [sys.executable, "-m", "ivrserver"]


class MakeRun:
    def __init__(self, run_dir: Path, name: str) -> None:
        self.argv = [sys.executable, "-m", "ivrserver.devstack", "run", "--free-ports", "--run-dir", str(run_dir),
                     "--name", name]
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []

    async def start(self, timeout: float = 120.0) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IVRSERVER_")}
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env)
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stdout.readline()).decode(errors="replace")
                if not line:
                    pytest.fail("make run exited before it was up:\n" + "".join(self.lines[-40:]))
                self.lines.append(line)
                if line.startswith(READY):
                    break
        self._drain = asyncio.create_task(self._read_rest())
        return "".join(line for line in self.lines if not line[:4].isdigit())    # not the log lines

    async def _read_rest(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace"))

    async def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 60)
        await asyncio.wait_for(self._drain, 10)
        return code


async def run(*argv: str, timeout: float = 120.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def _logs_of(run_dir: Path) -> str:
    """The tails of what the stack logged, for a failure message."""
    tails = []
    for path in sorted(run_dir.rglob("*.log")):
        try:
            lines = path.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            continue
        tails.append(f"--- {path}\n" + "\n".join(lines))
    return "\n".join(tails)


async def test_make_run_end_to_end_and_after_a_sigkill(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pids = PidFiles(run_dir / "pids")
    first = MakeRun(run_dir, f"mr-test-{os.getpid()}")
    second = MakeRun(run_dir, f"mr-test-{os.getpid()}")
    try:
        banner = await first.start()
        assert "log in as agent1003 / agent1003" in banner, banner
        assert "demo VIP c-vip-1: repeat caller: open case → case owner agent1003" in banner, banner
        assert "a SIPp customer phone" in banner and "your own SIP trunk" in banner
        assert "append-only file (appendfsync everysec)" in banner
        assert "  Postgres  postgresql://ivrserver@127.0.0.1:" in banner and "(durable; log " in banner, banner
        settings = run_dir / "ivrserver.yaml"
        written = yaml.safe_load(settings.read_text())
        assert written["postgres"]["dsn"].startswith("postgresql://ivrserver@127.0.0.1:")
        assert written["postgres"]["dsn"] in banner
        code, out = await run(*IVRSERVER, "-c", str(settings), "db", "status")
        assert code == 0 and "pending" not in out, out     # migrated by make run
        assert f"ivrserver -c {settings} doctor" in banner or "ivrserver -c run/ivrserver.yaml doctor" in banner

        code, out = await run(*IVRSERVER, "-c", str(settings), "doctor")
        assert code == 0 and "[FAIL]" not in out, out
        assert "redis.persistence: AOF on" in out and "no log channel records DTMF" in out, out
        code, out = await run(*IVRSERVER, "-c", str(settings), "menus", "check")
        assert code == 0 and "not checked" not in out, out

        code, out = await run(sys.executable, "-m", "ivrserver.devstack", "call", "--run-dir", str(run_dir),
                              "--caller", "15550001", "--digits", "", "--hold-ms", "3000")
        assert code == 0, out
        assert "customer c-vip-1" in out and "route      repeat caller: open case" in out, out
        assert "agent      agent1003 answered" in out and "outcome    answered" in out, out

        started = {r.name: r for r in pids.recorded()}
        assert {"asterisk", "redis", "postgres", OWNER} <= set(started)
        phones = [r for r in started.values() if r.program == "sipp"]
        assert len(phones) == 11 and any("customer phone" in r.what for r in phones)
        assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
        left = [r for r in started.values() if r.name != OWNER]
        gone = [f"{r.what} (pid {r.pid})" for r in left if not still_ours(r)]
        assert not gone, (f"a SIGKILL of make run must leave its stack running; gone: {gone}\n"
                          + "".join(first.lines[-30:]) + _logs_of(run_dir))

        banner = await second.start()
        for rec in left:
            assert f"stopped {rec.what} (pid {rec.pid}), left running by a previous `make run`" in banner
            assert not still_ours(rec)
        now = {r.name: r for r in pids.recorded()}
        assert second.proc is not None and now[OWNER].pid == second.proc.pid
        assert await second.stop(signal.SIGINT) == 0
        assert pids.recorded() == []
        assert not any(still_ours(r) for r in now.values())
    finally:
        for m in (first, second):
            if m.proc is not None and m.proc.returncode is None:
                m.proc.kill()
                await m.proc.wait()
        await asyncio.to_thread(pids.claim)     # whatever a failed run left
        pids.release()
        for line in (first.lines + second.lines):   # a killed run leaves its Asterisk instance directory
            if line.startswith("Asterisk up in") and "(config " in line:
                shutil.rmtree(Path(line.split("(config ", 1)[1].split(",", 1)[0]).parent, ignore_errors=True)
