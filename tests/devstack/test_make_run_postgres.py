"""`make run`'s PostgreSQL (devstack/postgres.py) as `make run` starts it: a private durable cluster in
<run>/postgres, migrated, recorded in <run>/pids; data kept across restarts; a leftover of a killed
`make run` stopped by the next start (PidFiles.claim); 5433 taken → a free port, said so.

Real Debian `postgres` binaries; no Asterisk (the whole `make run` is in test_make_run.py).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncpg

from ivrserver.devstack.pidfiles import PidFiles, still_ours
from ivrserver.devstack.postgres import DevPostgres
from ivrserver.record import migrate


def make_run_postgres(run_dir: Path, port: int | None = None) -> DevPostgres:
    return DevPostgres(run_dir / "postgres", port, pids=PidFiles(run_dir / "pids"))


async def test_up_migrated_durable_recorded_and_kept_across_restarts(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pg = make_run_postgres(run_dir)
    await pg.start()
    newest = migrate.available()[-1].version
    try:
        assert pg.schema is not None and pg.schema.version == newest
        assert pg.dsn.startswith("postgresql://ivrserver@127.0.0.1:")
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("SHOW fsync") == "on"
            assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == newest
            await conn.execute("INSERT INTO customers (id, name) VALUES ('c-kept', 'Kept')")
        finally:
            await conn.close()
        recorded = {r.name: r for r in PidFiles(run_dir / "pids").recorded()}
        assert "postgres" in recorded and still_ours(recorded["postgres"])
        assert (run_dir / "postgres" / "PG_VERSION").is_file()
    finally:
        await pg.stop()
    assert PidFiles(run_dir / "pids").recorded() == []

    again = make_run_postgres(run_dir)
    await again.start()
    try:
        assert again.schema is not None and again.schema.applied == []     # nothing left to apply
        conn = await asyncpg.connect(again.dsn)
        try:
            assert await conn.fetchval("SELECT name FROM customers WHERE id = 'c-kept'") == "Kept"
        finally:
            await conn.close()
    finally:
        await again.stop()


async def test_a_leftover_of_a_killed_make_run_is_stopped_at_the_next_start(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pg = make_run_postgres(run_dir)
    await pg.start()        # then "make run" dies: nobody calls stop(); the server keeps running
    leftover = {r.name: r for r in PidFiles(run_dir / "pids").recorded()}["postgres"]
    assert still_ours(leftover)
    stopped = await asyncio.to_thread(PidFiles(run_dir / "pids").claim)
    try:
        assert [r.name for r in stopped] == ["postgres"]
        assert not still_ours(leftover)
        again = make_run_postgres(run_dir, pg.port)     # same port: the leftover freed it
        await again.start()
        await again.stop()
    finally:
        PidFiles(run_dir / "pids").release()
        await pg.cluster.kill()


async def test_a_taken_port_gives_a_free_one_and_says_so(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        pg = make_run_postgres(tmp_path / "run", taken)
        await pg.start()
        try:
            assert pg.port != taken
            assert f"(port {taken} is taken by another program)" in pg.note
        finally:
            await pg.stop()
