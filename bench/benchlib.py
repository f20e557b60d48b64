"""What the benchmarks share: the project's own Redis launcher, a free port, percentiles.

- `local_redis()`: a private, throwaway redis-server (ivrserver.devstack.redis.LocalRedis: free
  port, never 6379, no persistence, its directory removed at the end) for a synchronous
  orchestrator; async code uses `async with LocalRedis()` directly. `cpus` pins every thread of
  it (`--pin` of fastagi_bench: the system under test on some CPUs, the generator on the others).
- `free_port()`: a TCP port nothing listens on right now.
- `percentile(values, q)`: nearest rank on the sorted values (q in percent), NaN when empty —
  the one definition every table uses; `print_columns(cols, rows)`: a table's header and rows.
- For the multi-process scheduler benchmarks (callbacks, callbacks_originate, notices):
  `add_scheduler_options`, `scenarios`, `watch_until_drained` (SIGKILL one instance at 40 % of the
  spread, wait until nothing is due or leased), `stop_processes`, `reaped_in_log`, `count_dials`
  (duplicates and first dial per call from the recording dialer's log), `cpu_seconds`, `loadavg`.

Imported by the benchmarks as `from benchlib import ...` (Python puts the script's directory,
bench/, first on sys.path); not a `*_bench.py`, so `make bench` does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ivrserver.devstack.ports import free_port  # noqa: E402,F401 - the benchmarks import it from here
from ivrserver.devstack.process import DevStackError  # noqa: E402
from ivrserver.devstack.redis import LocalRedis  # noqa: E402

R = TypeVar("R")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def pin_process(pid: int, cpus: Collection[int]) -> None:
    """Every thread of `pid` (redis-server starts its background threads before it listens) on `cpus`."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)


@contextlib.contextmanager
def local_redis(*, cpus: Collection[int] = ()) -> Iterator[LocalRedis]:
    """LocalRedis started and stopped on an event loop of its own thread, so a synchronous
    orchestrator (and the `asyncio.run` calls it makes meanwhile) can use it; exits the program
    with the launcher's message when redis-server cannot start."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bench-redis", daemon=True)
    thread.start()
    redis = LocalRedis()
    try:
        try:
            asyncio.run_coroutine_threadsafe(redis.start(), loop).result()
        except DevStackError as exc:
            raise SystemExit(str(exc)) from exc
        if cpus and redis.pid is not None:
            pin_process(redis.pid, cpus)
        yield redis
    finally:
        asyncio.run_coroutine_threadsafe(redis.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def print_columns(cols: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table: each column as wide as its widest cell, two spaces between."""
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


# ----------------------------------------------------------------------------- scheduler benchmarks

def add_scheduler_options(parser: argparse.ArgumentParser, *, scenario: str = "both", lease: float = 5.0,
                          batch: int = 100) -> None:
    """The options every multi-process scheduler benchmark takes."""
    parser.add_argument("--scenario", choices=["normal", "kill", "both"], default=scenario)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--lease", type=float, default=lease)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--poll", type=float, default=0.05)


def scenarios(choice: str) -> list[str]:
    return ["normal", "kill"] if choice == "both" else [choice]


def run_scenarios_on_local_redis(args: argparse.Namespace, workdir_prefix: str,
                                 run: Callable[[str, str, argparse.Namespace, str, int], Awaitable[R]],
                                 print_table: Callable[[list[R], argparse.Namespace], None]) -> None:
    """Each chosen scenario, `run(redis_url, scenario, args, workdir, redis_pid)`, on one private
    redis-server, then the table; the scratch directory is removed at the end."""
    workdir = tempfile.mkdtemp(prefix=workdir_prefix)
    try:
        with local_redis() as redis:
            assert redis.pid is not None
            reports = [asyncio.run(run(redis.url, s, args, workdir, redis.pid)) for s in scenarios(args.scenario)]
        print_table(reports, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def watch_until_drained(scenario: str, counts: Callable[[], Awaitable[Mapping[str, int]]], *, start: float,
                              spread: float, deadline: float, kill: Callable[[], Awaitable[str]],
                              done: Callable[[], Awaitable[bool]] | None = None) -> float | None:
    """Every 0.25 s until, past the spread, nothing is due or leased (and `done`, if given), or the
    deadline. In the `kill` scenario `kill()` SIGKILLs an instance at 40 % of the spread and says
    what it did. Returns when the kill happened (None: no kill)."""
    kill_at = start + spread * 0.4 if scenario == "kill" else None
    killed_at: float | None = None
    while True:
        await asyncio.sleep(0.25)
        now = time.time()
        if kill_at is not None and killed_at is None and now >= kill_at:
            killed_at = now
            print(f"[{scenario}] SIGKILL {await kill()} at +{now - start:.1f}s", flush=True)
        current = await counts()
        if (now > start + spread and current["due"] == 0 and current["leased"] == 0
                and (done is None or await done())):
            return killed_at
        if now > deadline:
            print(f"[{scenario}] gave up waiting: {dict(current)}", flush=True)
            return killed_at


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)


def stop_processes(procs: Collection[subprocess.Popen[bytes]]) -> None:
    """Terminate what still runs, wait for each (kill one that will not stop)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def reaped_in_log(log_path: str | Path) -> int:
    """Callbacks a worker re-queued after another's lease expired, from its log."""
    text = Path(log_path).read_text(errors="replace")
    return sum(int(m) for m in re.findall(r"re-queued (\d+) callbacks", text))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


@dataclass
class Dials:
    """The recording dialer's log ("<call id>-<attempt> <instance> <time>" lines), counted."""

    dials: int = 0
    dup_channels: int = 0  # an attempt dialed more than once
    dup_calls: int = 0  # a call with more than one dialed attempt
    first_dial: dict[str, float] = field(default_factory=dict)  # call id -> its first dial's time
    per_instance: dict[str, int] = field(default_factory=dict)


def count_dials(lines: Sequence[str]) -> Dials:
    out = Dials(dials=len(lines))
    per_channel: Counter[str] = Counter()
    for line in lines:
        channel, name, t = line.split(" ")
        per_channel[channel] += 1
        out.per_instance[name] = out.per_instance.get(name, 0) + 1
        call = channel.rsplit("-", 1)[0]
        out.first_dial[call] = min(out.first_dial.get(call, float("inf")), float(t))
    per_call = Counter(ch.rsplit("-", 1)[0] for ch in per_channel)
    out.dup_channels = sum(1 for k in per_channel.values() if k > 1)
    out.dup_calls = sum(1 for k in per_call.values() if k > 1)
    return out
