"""bench/benchlib.py: the benchmarks' one Redis launcher (devstack's LocalRedis from synchronous
code), with a real redis-server; and the one percentile definition of their tables."""

from __future__ import annotations

import math
import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from benchlib import free_port, local_redis, percentile


def ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64)


def test_local_redis_from_sync_code_runs_a_private_server_and_stops_it() -> None:
    cpus = sorted(os.sched_getaffinity(0))[:1]
    with local_redis(cpus=cpus) as redis:
        assert redis.pid is not None and redis.port not in (None, 6379)
        assert ping(redis.port) == b"+PONG\r\n"
        threads = os.listdir(f"/proc/{redis.pid}/task")
        assert len(threads) > 1  # redis-server's background threads exist before it listens...
        assert all(os.sched_getaffinity(int(t)) == set(cpus) for t in threads)  # ...and are pinned too
        pid, port = redis.pid, redis.port
    assert not os.path.exists(f"/proc/{pid}") or "redis" not in Path(f"/proc/{pid}/comm").read_text()
    with pytest.raises(OSError):
        ping(port)


def test_free_port_is_free() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([5.0, 1.0, 3.0, 2.0, 4.0], 50, 3.0),
    ([5.0, 1.0, 3.0, 2.0, 4.0], 99, 5.0),
    ([5.0, 1.0, 3.0, 2.0, 4.0], 0, 1.0),
    (list(range(1, 101)), 90, 90),   # nearest rank on 0..n-1: round(0.9 * 99) = 89 → the 90th value
    ([7.0], 99, 7.0),
])
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 99))
