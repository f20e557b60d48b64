"""Session-wide fixtures: a real redis-server of our own on a free port (never the machine's 6379)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivrserver.devstack.ports import free_port
from ivrserver.domain.hashing import Pepper
from ivrserver.store.keys import Keys

# PostgreSQL for the tests that need it: one private cluster per session (tests/pg_fixtures.py).
pytest_plugins = ["tests.pg_fixtures"]

# PIN hashes are keyed with a server-side pepper: one fixed pepper for every test, the in-process
# server and the CLI subprocesses, never the developer's generated development pepper.
TEST_PEPPER_TEXT = "ivrserver-test-pepper-" + "0123456789" * 4
os.environ.setdefault("IVRSERVER_SECURITY__PEPPER", TEST_PEPPER_TEXT)
TEST_PEPPER = Pepper(os.environ["IVRSERVER_SECURITY__PEPPER"].strip().encode())


@contextmanager
def private_redis(prefix: str = "ivrserver-redis-") -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of our own on a free port (no persistence, its own work dir): its URL and
    process, stopped and removed on exit (resumed first, should a test have frozen it)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `make test`, which installs it")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix=prefix)
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                shutil.rmtree(workdir, ignore_errors=True)
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Start a private redis-server for the test session; fail loudly if it is not installed."""
    with private_redis() as (url, _proc):
        os.environ["IVRSERVER_TEST_REDIS_URL"] = url
        yield url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client on a flushed database: every test starts from an empty Redis."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys(prefix="t")


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
