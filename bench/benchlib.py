"""What the benchmarks share: the project's own Redis launcher, a free port, percentiles.

- `local_redis()`: a private, throwaway redis-server (ivrserver.devstack.redis.LocalRedis: free
  port, never 6379, no persistence, its directory removed at the end) for a synchronous
  orchestrator; async code uses `async with LocalRedis()` directly. `cpus` pins every thread of
  it (`--pin` of fastagi_bench: the system under test on some CPUs, the generator on the others).
- `free_port()`: a TCP port nothing listens on right now.
- `percentile(values, q)`: nearest rank on the sorted values (q in percent), NaN when empty —
  the one definition every table uses.

Imported by the benchmarks as `from benchlib import ...` (Python puts the script's directory,
bench/, first on sys.path); not a `*_bench.py`, so `make bench` does not run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ivrserver.devstack.process import DevStackError  # noqa: E402
from ivrserver.devstack.redis import LocalRedis  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
