"""Migration 0010 against a real PostgreSQL: rollups made before issue 20 named queues as Asterisk does
(`ivr-general`); after it they carry the supervisors' name (`general`), added up where both existed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from ivrserver.config import ReportSettings
from ivrserver.record import migrate
from ivrserver.services.reports import ReportService

HOUR = datetime(2026, 11, 3, 9, tzinfo=UTC)
EDGES = 16  # len(domain/reports.WAIT_EDGES)


def hist(*pairs: tuple[int, int]) -> list[int]:
    out = [0] * EDGES
    for i, n in pairs:
        out[i] = n
    return out


def version_of(name: str) -> int:
    [found] = [m.version for m in migrate.available() if m.name == name]
    return found


async def test_rollups_are_renamed_and_merged(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate.migrate(conn, target=version_of("report_queue_names") - 1)
        queue_rows = [  # (queue, hour, offered, answered, abandoned, wait_answered, wait_abandoned, wait, talk)
            ("ivr-general", HOUR, 3, 2, 1, hist((0, 1), (2, 1)), hist((5, 1)), 12.0, 200.0),
            ("ivr-vip", HOUR, 1, 1, 0, hist((1, 1)), hist(), 7.0, 60.0),
            # the same hour under both names (a queue outside ivrserver named like one of ours), one
            # with short histograms: added up bin by bin
            ("ivr-faults", HOUR + timedelta(hours=1), 2, 1, 1, hist((0, 1)), hist((3, 1)), 2.0, 40.0),
            ("faults", HOUR + timedelta(hours=1), 1, 1, 0, [0, 1], [0], 6.0, 30.0),
            ("support", HOUR, 5, 5, 0, hist((0, 5)), hist(), 10.0, 500.0),  # not ours: kept as named
        ]
        await conn.executemany(
            """INSERT INTO report_queue_hourly (queue, hour, offered, answered, abandoned, wait_answered,
                                                wait_abandoned, wait_seconds, talk_seconds)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""", queue_rows)
        await conn.executemany(
            """INSERT INTO report_repeat_hourly (reason, hour, calls, repeat_24h, repeat_7d, same_24h, same_7d,
                                                 repeat_answered, story_carried)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            [("ivr-general", HOUR, 4, 1, 2, 1, 1, 1, 1), ("general", HOUR, 1, 1, 1, 0, 0, 1, 0),
             ("ivr", HOUR, 2, 0, 0, 0, 0, 0, 0)])

        applied = await migrate.migrate(conn)
        assert [m.name for m in applied][:1] == ["report_queue_names"]

        got = {(r["queue"], r["hour"]): tuple(r)[2:] for r in await conn.fetch(
            """SELECT queue, hour, offered, answered, abandoned, wait_answered, wait_abandoned, wait_seconds,
                      talk_seconds FROM report_queue_hourly""")}
        assert got == {
            ("general", HOUR): (3, 2, 1, hist((0, 1), (2, 1)), hist((5, 1)), 12.0, 200.0),
            ("vip", HOUR): (1, 1, 0, hist((1, 1)), hist(), 7.0, 60.0),
            ("faults", HOUR + timedelta(hours=1)): (3, 2, 1, hist((0, 1), (1, 1)), hist((3, 1)), 8.0, 70.0),
            ("support", HOUR): (5, 5, 0, hist((0, 5)), hist(), 10.0, 500.0),
        }
        reasons = {r["reason"]: tuple(r)[1:] for r in await conn.fetch(
            """SELECT reason, calls, repeat_24h, repeat_7d, same_24h, same_7d, repeat_answered, story_carried
               FROM report_repeat_hourly""")}
        assert reasons == {"general": (5, 2, 3, 1, 1, 2, 1), "ivr": (2, 0, 0, 0, 0, 0, 0)}
    finally:
        await conn.close()

    # and the queues report reads the one name, which its filter takes either way
    pool = await asyncpg.create_pool(empty_db, min_size=1, max_size=2)
    try:
        service = ReportService(lambda: pool, ReportSettings(timezone="UTC"), wrap_up_seconds=15)
        for asked in ("general", "ivr-general"):
            body = await service.run(service.parse("queues", {"from": "2026-11-03", "to": "2026-11-03",
                                                              "queue": asked}))
            assert [(r["queue"], r["offered"], r["abandoned"]) for r in body["tables"]["queues"]["rows"]] == [
                ("general", 3, 1), ("*", 3, 1)]
    finally:
        await pool.close()
