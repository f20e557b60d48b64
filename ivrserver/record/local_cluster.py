"""A private PostgreSQL cluster for `make run` and the tests: Debian's binaries, our own data dir.

Never the machine's own PostgreSQL on 5432: a cluster is created with `initdb` in a directory of
ours (as the `postgres` system user when we run as root: initdb refuses root), started with
`postgres -D DIR -p PORT` on loopback with its socket in the data dir, and stopped by signal.
`durable=False` (tests) turns off fsync and full-page writes: a crash there only loses test data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ivrserver.devstack.ports import free_port

DATABASE = "ivrserver"
ROLE = "ivrserver"


class ClusterError(RuntimeError):
    """The local PostgreSQL could not be created or started; the message says why and the fix."""


def pg_bindir() -> Path:
    """The newest installed server's bin dir (Debian: /usr/lib/postgresql/<major>/bin)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not candidates:
        raise ClusterError("PostgreSQL is not installed (apt-get install postgresql; `make` does it)")
    return candidates[-1].parent


def _as_postgres() -> tuple[int, int] | None:
    """(uid, gid) of the `postgres` user when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ClusterError("running as root needs the 'postgres' system user (apt-get install postgresql)") from exc
    return entry.pw_uid, entry.pw_gid


def _let_traverse(folder: Path) -> None:
    """The postgres user must reach its data dir: a parent of ours made 0700 (mkdtemp) gets o+x."""
    st = folder.stat()
    if st.st_uid == os.geteuid() and not st.st_mode & 0o001:
        os.chmod(folder, st.st_mode | 0o011)


class LocalPostgres:
    """A PostgreSQL cluster in `data_dir` listening on `host:port` (a free port when None)."""

    def __init__(self, data_dir: str | os.PathLike[str], port: int | None = None, *,
                 host: str = "127.0.0.1", durable: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.durable = durable
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{ROLE}@{self.host}:{self.port}/{DATABASE}"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://{ROLE}@{self.host}:{self.port}/postgres"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self, timeout: float = 30.0) -> None:
        bindir = await asyncio.to_thread(pg_bindir)
        owner = _as_postgres()
        if not (self.data_dir / "PG_VERSION").exists():
            await self._initdb(bindir, owner)
        if self.port is None:
            self.port = free_port(host=self.host)
        options = ["-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.data_dir}",
                   "-c", "max_connections=200", "-c", "log_min_messages=warning"]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]
        # The server's log goes to a file beside nothing else of ours: a pipe nobody reads would
        # block postgres once it fills.
        # A plain Popen, not an asyncio subprocess: the server outlives the event loop that started
        # it (a test session's fixture starts it in one loop and stops it in another).
        argv = [str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port), *options]
        self._proc = await asyncio.to_thread(self._spawn, argv, owner)
        await self._wait_ready(timeout)
        await self._ensure_database()

    def _spawn(self, argv: list[str], owner: tuple[int, int] | None) -> subprocess.Popen[bytes]:
        with open(self.log_file, "ab") as log:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                    user=owner[0] if owner else None, group=owner[1] if owner else None)

    async def _initdb(self, bindir: Path, owner: tuple[int, int] | None) -> None:
        await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True)
        if owner:
            await asyncio.to_thread(os.chown, self.data_dir, *owner)
            await asyncio.to_thread(_let_traverse, self.data_dir.parent)
        await asyncio.to_thread(os.chmod, self.data_dir, 0o700)
        # subprocess.run in a worker thread, not an asyncio subprocess: uvloop's (`make run` may run
        # on it) refuses user=/group=, which initdb needs when we are root.
        proc = await asyncio.to_thread(
            subprocess.run,
            [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", ROLE, "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"],
            stdin=subprocess.DEVNULL, capture_output=True, check=False,
            user=owner[0] if owner else None, group=owner[1] if owner else None)
        if proc.returncode != 0:
            raise ClusterError(f"initdb failed in {self.data_dir}: "
                               f"{(proc.stderr or proc.stdout).decode(errors='replace').strip()}")

    async def _wait_ready(self, timeout: float) -> None:
        import asyncpg

        deadline = time.monotonic() + timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                tail = await asyncio.to_thread(self._log_tail)
                raise ClusterError(f"postgres exited ({self._proc.returncode}) on port {self.port}: {tail}")
            try:
                conn = await asyncpg.connect(self.admin_dsn, timeout=1.0)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                if time.monotonic() > deadline:
                    await self.stop()
                    raise ClusterError(f"postgres did not accept connections on {self.host}:{self.port}") from None
                await asyncio.sleep(0.1)
                continue
            await conn.close()
            return

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace").strip()[-800:]
        except OSError:
            return "(no server log)"

    async def _ensure_database(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_dsn)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()

    async def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(proc.wait)

    async def kill(self) -> None:
        """SIGKILL, as a crash would: for fault tests."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(proc.wait)

    def remove(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)

    async def __aenter__(self) -> LocalPostgres:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
