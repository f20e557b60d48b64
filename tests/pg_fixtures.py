"""A private PostgreSQL cluster for the test session (Debian's binaries, a temp data dir, a free port).

Imported by the conftest of tests/record and by test modules elsewhere that need PostgreSQL.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from ivrserver.record.local_cluster import ClusterError, LocalPostgres


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[LocalPostgres]:
    workdir = tempfile.mkdtemp(prefix="ivrserver-pg-")
    cluster = LocalPostgres(f"{workdir}/data", durable=False)
    try:
        asyncio.run(cluster.start())
    except ClusterError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"PostgreSQL could not start: {exc} (run `make test`, which installs it)")
    yield cluster
    asyncio.run(cluster.stop())
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def empty_db(postgres_cluster: LocalPostgres) -> AsyncIterator[str]:
    """A fresh, empty database of its own for one test; its DSN."""
    admin = await asyncpg.connect(postgres_cluster.admin_dsn)
    name = f"t_{id(admin):x}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield postgres_cluster.dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
