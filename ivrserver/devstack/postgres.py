"""`make run`'s own PostgreSQL: a private, durable cluster in run/postgres, migrated at every start.

Debian's `postgres` binaries (Makefile APT_PACKAGES: postgresql), never the machine's own cluster
on 5432: port 5433 by default, a free one when that is taken. The server process is recorded in
the run's pid files like Redis and Asterisk, so the next `make run` stops a leftover of a killed
one; its data directory is kept (customers, cases, contacts survive restarts).

Run as root, the server runs as the `postgres` system user (initdb refuses root), which must reach
the data directory: each of its parents that we own and that others cannot traverse gets o+x
(traverse only, never read), e.g. a 0700 home or pytest's /tmp/pytest-of-root.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from ivrserver.config import PostgresSettings
from ivrserver.devstack.pidfiles import PidFiles
from ivrserver.devstack.ports import free_port
from ivrserver.devstack.process import DevStackError
from ivrserver.record.local_cluster import ClusterError, LocalPostgres
from ivrserver.services import record_schema

DEFAULT_POSTGRES_PORT = 5433    # never the machine's 5432
PID_NAME = "postgres"


def let_postgres_reach(folder: Path) -> None:
    """o+x on each parent of `folder` that we own and others cannot traverse (root only). Blocking."""
    if os.geteuid() != 0:
        return
    for parent in folder.resolve().parents:
        st = parent.stat()
        if st.st_uid == 0 and not st.st_mode & 0o001:
            os.chmod(parent, st.st_mode | 0o001)


class DevPostgres:
    """A LocalPostgres in `data_dir`, recorded in `pids`, schema migrated once it is up."""

    def __init__(self, data_dir: Path, port: int | None = DEFAULT_POSTGRES_PORT, *,
                 pids: PidFiles | None = None, durable: bool = True) -> None:
        self.data_dir = data_dir
        self.pids = pids
        self.note = ""
        self.cluster = LocalPostgres(data_dir, port, durable=durable)
        self.schema: record_schema.SchemaReport | None = None

    @property
    def dsn(self) -> str:
        return self.cluster.dsn

    @property
    def port(self) -> int | None:
        return self.cluster.port

    async def start(self) -> None:
        from ivrserver.devstack.ports import tcp_listen_free

        if self.cluster.port is not None and not tcp_listen_free(self.cluster.port):
            taken = self.cluster.port
            self.cluster.port = free_port()
            self.note = f" (port {taken} is taken by another program)"
        try:
            await asyncio.to_thread(self.data_dir.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(let_postgres_reach, self.data_dir)
            await self.cluster.start()
            pid = self.cluster.pid
            if self.pids is not None and pid is not None:
                await self.pids.record(PID_NAME, pid, "postgres", f"PostgreSQL on port {self.cluster.port}")
            self.schema = await record_schema.migrate_schema(PostgresSettings(dsn=self.dsn))
        except ClusterError as exc:
            await self.stop()
            raise DevStackError(str(exc)) from exc
        except Exception as exc:    # a failed migration: say which, stop the cluster
            await self.stop()
            raise DevStackError(f"PostgreSQL in {self.data_dir}: {type(exc).__name__}: {exc}") from exc

    async def stop(self) -> None:
        """Fast shutdown (SIGINT: checkpoint, exit); the data directory stays."""
        await self.cluster.stop()
        if self.pids is not None:
            await self.pids.forget(PID_NAME)

    async def __aenter__(self) -> DevPostgres:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
