"""Pid files of what `make run` starts, so that the next `make run` can stop what a killed one left.

Asterisk, Redis and the SIPp phones run in sessions of their own (a Ctrl-C in the terminal must
not reach them before `make run` has stopped them in order), so a `kill -9` of `make run` leaves
them running, holding the stack's fixed ports. Each process gets one file `<dir>/<name>.pid`:

    {"pid": 4242, "start": 8812345, "program": "sipp", "what": "agent phone agent1001"}

`start` is the process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat; an
`exec`, e.g. chroot → asterisk, keeps it). A leftover is stopped only when a process with that
pid still exists, started at that very tick, and still is that program (its name or command
line): a pid the kernel has since given to another program is never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ivrserver.devstack.process import DevStackError

OWNER = "make-run"   # the pid file of the `make run` process itself


@dataclass(frozen=True)
class Recorded:
    """One pid file: a process `make run` started."""

    name: str
    pid: int
    start: int
    program: str    # found in the process's name or command line while it is still ours
    what: str       # for people: "Asterisk", "agent phone agent1001" ...


def process_start(pid: int) -> int | None:
    """Start time of process `pid` in clock ticks since boot; None when there is no such process
    (or only its zombie: a dead process whose parent has not collected it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])      # field 22 overall; fields[0] is field 3 (state)


def _identity(pid: int) -> tuple[str, list[str]]:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "", []
    return comm, cmdline


def still_ours(rec: Recorded) -> bool:
    """True when `rec.pid` is still the very process that was recorded (same start, same program)."""
    if process_start(rec.pid) != rec.start:
        return False
    comm, cmdline = _identity(rec.pid)
    return rec.program in comm or any(rec.program in arg for arg in cmdline)


class PidFiles:
    """The pid files of one stack, in `directory` (created on first use)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad pid file name {name!r}")
        return self.directory / f"{name}.pid"

    # -- recording: called from coroutines, the file work runs in a worker thread -----------------
    async def record(self, name: str, pid: int, program: str, what: str) -> None:
        await asyncio.to_thread(self.record_now, name, pid, program, what)

    def record_now(self, name: str, pid: int, program: str, what: str) -> None:
        start = process_start(pid)
        if start is None:
            return      # already gone: nothing to leave behind
        rec = Recorded(name=name, pid=pid, start=start, program=program, what=what)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self._path(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(rec)))
        tmp.replace(self._path(name))

    async def forget(self, name: str) -> None:
        await asyncio.to_thread(self._path(name).unlink, True)

    def recorded(self) -> list[Recorded]:
        """Every pid file; an unreadable one is dropped (it cannot name a process safely)."""
        found = []
        for path in sorted(self.directory.glob("*.pid")):
            try:
                data = json.loads(path.read_text())
                found.append(Recorded(name=path.stem, pid=int(data["pid"]), start=int(data["start"]),
                                      program=str(data["program"]), what=str(data["what"])))
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
        return found

    # -- the next start ----------------------------------------------------------------------
    def claim(self) -> list[Recorded]:
        """Become this directory's owner: stop what a previous, dead owner left; return it.

        Raises DevStackError when the previous owner still runs (two `make run` on one stack).
        Blocking (up to a few seconds): call it before the event loop starts or in a thread.
        """
        leftovers = self.recorded()
        owner = next((r for r in leftovers if r.name == OWNER), None)
        if owner is not None and owner.pid != os.getpid() and still_ours(owner):
            raise DevStackError(f"`make run` is already running (pid {owner.pid}); stop it with Ctrl-C "
                                f"or `kill {owner.pid}` first")
        stopped = []
        for rec in leftovers:
            if rec.name != OWNER and still_ours(rec):
                stop_process(rec)
                stopped.append(rec)
            self._path(rec.name).unlink(missing_ok=True)
        self.record_now(OWNER, os.getpid(), "ivrserver.devstack", "make run")
        return stopped

    def release(self) -> None:
        """Clean stop: the owner's pid file goes (the others went with their processes)."""
        self._path(OWNER).unlink(missing_ok=True)


def stop_process(rec: Recorded, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds: only while the pid is still `rec`'s process."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        if not still_ours(rec):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, sig)
        deadline = time.monotonic() + wait
        while still_ours(rec) and time.monotonic() < deadline:
            time.sleep(0.05)
    if still_ours(rec):
        raise DevStackError(f"{rec.what} (pid {rec.pid}) survives SIGKILL")
