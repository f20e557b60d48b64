"""redis-server for the local stack: a throwaway one for tests, a persistent one for `make run`."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from ivrserver.devstack.pidfiles import PidFiles
from ivrserver.devstack.ports import StackPorts
from ivrserver.devstack.process import DevStackError, listening


class LocalRedis:
    """A private redis-server of ours, or with `reuse=True` one already listening on `port`.

    Without `data_dir` it keeps nothing (a temporary directory, no AOF, no snapshots: tests and
    benchmarks). With `data_dir` (`make run`: run/redis) it writes an append-only file there,
    fsynced every second, so customers, cases, callbacks and contact history survive a restart of
    Redis, of `make run` or of the machine; the directory is kept.
    """

    def __init__(self, port: int | None = None, *, reuse: bool = False, host: str = "127.0.0.1",
                 data_dir: Path | None = None, pids: PidFiles | None = None) -> None:
        self.host = host
        self.port = port
        self.reuse = reuse
        self.data_dir = data_dir
        self.pids = pids
        self.external = False
        self._proc: asyncio.subprocess.Process | None = None
        self._dir: str | None = None        # the temporary directory, removed at stop

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def persistent(self) -> bool:
        return self.data_dir is not None

    @property
    def pid(self) -> int | None:
        """The redis-server we started (None when reusing one or not running): benchmarks pin it
        to CPUs and read its CPU time."""
        return self._proc.pid if self._proc is not None else None

    async def start(self, timeout: float = 10.0) -> None:
        if self.reuse and self.port is not None and await listening(self.host, self.port):
            self.external = True
            return
        exe = shutil.which("redis-server")
        if exe is None:
            raise DevStackError("redis-server is not installed (apt-get install redis-server)")
        if self.port is None:
            self.port = StackPorts.free().sip_port
        if self.data_dir is not None:
            await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True)
            directory = str(self.data_dir)
            persistence = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        else:
            self._dir = directory = await asyncio.to_thread(tempfile.mkdtemp, "", "ivrserver-redis-")
            persistence = ["--appendonly", "no", "--save", ""]
        self._proc = await asyncio.create_subprocess_exec(
            exe, "--port", str(self.port), "--bind", self.host, *persistence, "--dir", directory,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        if self.pids is not None:
            await self.pids.record("redis", self._proc.pid, "redis-server", f"Redis on port {self.port}")
        deadline = time.monotonic() + timeout
        while not await listening(self.host, self.port):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                await self.stop()
                raise DevStackError(f"redis-server did not start on port {self.port}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """SIGTERM (Redis writes its append-only file and exits), SIGKILL after 10 s."""
        if self._proc is not None:
            if self._proc.returncode is None:
                self._proc.terminate()
                try:
                    await asyncio.wait_for(self._proc.wait(), 10)
                except TimeoutError:
                    self._proc.kill()
                    await self._proc.wait()
            self._proc = None
            if self.pids is not None:
                await self.pids.forget("redis")
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None

    async def __aenter__(self) -> LocalRedis:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
