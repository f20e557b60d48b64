"""The queues report's wait bins in SQL (record/reports.py, width_bucket) are the domain's (domain/reports.py
wait_bin): whole seconds, closed at the top, so "answered within N s" is hold <= N in the rollups as on the
wallboard. Waits at, just under and just over every edge, on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from ivrserver.config import ReportSettings
from ivrserver.domain import reports as rp
from ivrserver.domain.model import Outcome
from ivrserver.record import reports as rec
from ivrserver.record.rows import upsert_contacts
from ivrserver.services.reports import ReportService
from tests.record.test_reports_sql import contact

DAY = datetime(2026, 11, 3, tzinfo=UTC).timestamp()
WAITS = [0.0, 0.4, *(w for edge in rp.WAIT_EDGES[1:] for w in (edge - 0.5, float(edge), edge + 0.5, edge + 1.0)),
         5000.0]


async def test_sql_bins_are_the_domains_and_the_service_level_counts_hold_up_to_n(pool: asyncpg.Pool) -> None:
    rows = [contact(i, DAY + 3600 + i, Outcome.ANSWERED, wait=w, talk=10, agents=("agent1001",))
            for i, w in enumerate(WAITS, start=1)]
    async with pool.acquire() as conn, conn.transaction():
        await upsert_contacts(conn, rows)
        await rec.mark_contacts(conn, rows)
    async with pool.acquire() as conn:
        await rec.roll(conn)
        [hour] = await rec.queue_hours(conn, datetime.fromtimestamp(DAY, UTC),
                                       datetime.fromtimestamp(DAY + 86400, UTC), None)
    expected = [0] * len(rp.WAIT_EDGES)
    for w in WAITS:
        expected[rp.wait_bin(w)] += 1
    assert list(hour["wait_answered"]) == expected
    # 20.5 s waited is a HoldTime of 20: within 20 s, as the wallboard counts it; 21 s is not
    assert rp.wait_bin(20.5) == rp.wait_bin(20) == rp.WAIT_EDGES.index(20) - 1 < rp.wait_bin(21)
    service = ReportService(lambda: pool, ReportSettings(timezone="UTC", service_level_seconds=20), wrap_up_seconds=5)
    body = await service.run(service.parse("queues", {"from": "2026-11-03", "to": "2026-11-03"}))
    [general] = [r for r in body["tables"]["queues"]["rows"] if r["queue"] == "general"]
    within = sum(1 for w in WAITS if int(w) <= 20)
    assert general["service_level"] == round(within / len(WAITS), 4)
