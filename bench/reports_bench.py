"""Reports over a month at the seeds' volume (18 M calls): how long each report takes, and what keeping
the hourly rollups costs the writer.

A private PostgreSQL (temporary directory) at the newest schema (migration 0008 holds the report
rollups). 18 M raw rows (~18 GB with indexes, ~1 KB per call) do not fit this disk, so:
1. the MONTH is generated as rollup rows, COPYed: 720 hours × menus × queues × agents × reasons, the
   counts scaled to 18 M calls (25,000 calls an hour); every report is then asked for the whole month
   `--repeat` times through ReportService (the same code the REST API runs): p50 / p99 and the rows
   each one reads.
   The suggested option order reads `menus stats`' 15-minute tallies (ivr_rollup: 2,880 per menu a
   month, JSON built from synthetic paths through the hotline's nodes); the agents report reads the
   raw `case_events` (resolutions) and `case_compensations` (grants) of the month, generated at
   `--case-events` events (a quarter of them resolutions) and `--compensations` grants.
2. the MAINTENANCE: one busy hour of raw rows (`--hour-calls` contacts + IVR paths, COPY) is rolled
   (record/reports.roll_paths / roll_contacts) as the upkeep does after the writer marks it dirty:
   seconds per hour of calls, and per call.

    .venv/bin/python bench/reports_bench.py [--repeat 20] [--hour-calls 25000] [--case-events 2000000]
                                            [--compensations 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from ivrserver.config import ReportSettings
from ivrserver.domain import reports as rp
from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath, Tally
from ivrserver.record import migrate
from ivrserver.record import reports as rec
from ivrserver.record.local_cluster import LocalPostgres
from ivrserver.record.rows import encode_path_events
from ivrserver.services.reports import ReportService

from benchlib import percentile

MONTH = datetime(2026, 11, 1, tzinfo=UTC)
HOURS = 720
CALLS_PER_HOUR = 18_000_000 // HOURS  # 25,000
MENUS = ("hotline", "vip", "english")
QUEUES = ("general", "billing", "faults", "sales", "vip", "english")
AGENTS = tuple(f"agent{1000 + i}" for i in range(300))
NODES = ("main", "balance", "billing", "faults", "sales", "plans", "roaming", "card", "agent", "english")


def funnel_json(rng: random.Random, calls: int) -> dict:
    f = rp.Funnel(calls=calls)
    for node in NODES:
        n = rng.randint(calls // 20, calls // 2)
        st = f.nodes.setdefault(node, rp.FunnelNode(entries=n, seconds=n * 9.0, visits=n))
        for c in rp.EXIT_CATEGORIES[:6]:
            st.exits[c] = n // 12
    f.reasons.update({"self_served": calls * 7 // 10, "queue": calls // 4, "caller_hangup": calls // 20})
    f.exits.update({"self_served": calls * 7 // 10, "queue": calls // 5, "timed_out": calls // 20,
                    "caller_hangup": calls // 20})
    f.depth_calls.update({1: calls // 3, 2: calls // 3, 3: calls // 4, 4: calls // 12})
    f.depth_hangups.update({1: calls // 50, 2: calls // 60, 3: calls // 70, 4: calls // 20})
    f.seconds = calls * 30.0
    return f.to_dict()


def tally_json(rng: random.Random, paths: int) -> str:
    """A 15-minute bucket's tally as the record keeps it: `paths` calls through the hotline's nodes."""
    t = Tally()
    for i in range(paths):
        at, events = 0.0, [PathEvent(PathKind.ENTER, "main", 0.0)]
        node = "main"
        for _ in range(rng.randint(1, 3)):
            key = rng.choice("123456789")
            nxt = NODES[int(key)]
            at += rng.uniform(2, 9)
            events += [PathEvent(PathKind.KEY, node, at, key=key, target=nxt), PathEvent(PathKind.ENTER, nxt, at)]
            node = nxt
        if rng.random() < 0.1:
            events.append(PathEvent(PathKind.INVALID, node, at + 1))
        events.append(PathEvent(PathKind.EXIT, node, at + 20, detail=rng.choice(("self_served", "queue",
                                                                                    "caller_hangup"))))
        t.add(CallPath(f"p{i}", "hotline", "v1", 0.0, tuple(events)))
    return json.dumps(t.to_dict(), separators=(",", ":"))


async def generate_tallies(conn: asyncpg.Connection, rng: random.Random) -> int:
    templates = [tally_json(rng, 400) for _ in range(16)]
    rows = [(menu, MONTH + timedelta(minutes=15 * b), rng.choice(templates))
            for menu in MENUS for b in range(HOURS * 4)]
    await conn.copy_records_to_table("ivr_rollup", records=rows, columns=["menu", "bucket", "tally"])
    return len(rows)


async def generate_case_rows(conn: asyncpg.Connection, rng: random.Random, events: int,
                             compensations: int) -> tuple[int, int]:
    """The month's case events (a quarter resolutions, by agents) and compensations (granted or
    approved), spread over the month; COPYed in chunks."""
    span = HOURS * 3600.0
    kinds = ("opened", "resolved", "checklist", "moved")
    for start in range(0, events, 500_000):
        rows = [(f"k{(start + i) // 4}", MONTH + timedelta(seconds=rng.uniform(0, span)),
                 f"agent:{rng.choice(AGENTS)}", kinds[(start + i) % 4], "{}", f"e{start + i}",
                 f"cust{rng.randint(0, 2_000_000)}") for i in range(min(500_000, events - start))]
        await conn.copy_records_to_table("case_events", records=rows, columns=[
            "case_id", "at", "actor", "kind", "detail", "entry_id", "customer_id"])
    rows = [(f"cp{i}", f"k{i}", f"cust{i}", rng.choice((500, 1000, 2000, 5000)), "CNY", "outage",
             f"agent:{rng.choice(AGENTS)}", rng.choice(("granted", "granted", "approved")),
             MONTH + timedelta(seconds=rng.uniform(0, span))) for i in range(compensations)]
    await conn.copy_records_to_table("case_compensations", records=rows, columns=[
        "id", "case_id", "customer_id", "amount_cents", "currency", "reason", "granted_by", "state", "requested_at"])
    return events, compensations


async def generate_month(conn: asyncpg.Connection, rng: random.Random) -> dict[str, int]:
    hours = [MONTH + timedelta(hours=h) for h in range(HOURS)]
    ivr, queue, repeat, agent, callback = [], [], [], [], []
    share = {m: w for m, w in zip(MENUS, (0.8, 0.15, 0.05), strict=True)}
    for hour in hours:
        for menu in MENUS:
            n = int(CALLS_PER_HOUR * share[menu])
            ivr.append((menu, hour, n, n * 7 // 10, n // 4, n // 20, n // 20,
                        json.dumps(funnel_json(rng, n), separators=(",", ":"))))
        for q in QUEUES:
            n = CALLS_PER_HOUR // 4 // len(QUEUES)
            hist = [rng.randint(0, n // 8) for _ in rp.WAIT_EDGES]
            queue.append((q, hour, n, sum(hist), n - sum(hist), hist, [rng.randint(0, 20) for _ in rp.WAIT_EDGES],
                          sum(hist) * 20.0, sum(hist) * 240.0))
            repeat.append((q, hour, n, n // 10, n // 5, n // 15, n // 8, n // 6, n // 10))
        for a in AGENTS:
            agent.append((a, hour, 20, 20 * 240.0))
        for kind in ("callback", "notice"):
            callback.append((kind, hour, 80, 78, 60, 20, 5, 2, [rng.randint(0, 10) for _ in rp.LATE_EDGES], 80 * 300.0))
    await conn.copy_records_to_table("report_ivr_hourly", records=ivr, columns=[
        "menu", "hour", "calls", "self_served", "human", "hangups", "timed_out", "funnel"])
    await conn.copy_records_to_table("report_queue_hourly", records=queue)
    await conn.copy_records_to_table("report_repeat_hourly", records=repeat)
    await conn.copy_records_to_table("report_agent_hourly", records=agent)
    await conn.copy_records_to_table("report_callback_hourly", records=callback)
    await conn.execute("ANALYZE")
    return {"report_ivr_hourly": len(ivr), "report_queue_hourly": len(queue), "report_repeat_hourly": len(repeat),
            "report_agent_hourly": len(agent), "report_callback_hourly": len(callback)}


ROWS_READ = {"ivr": ("report_ivr_hourly", "ivr_rollup"), "selfservice": ("report_ivr_hourly",),
             "queues": ("report_queue_hourly",), "repeats": ("report_repeat_hourly",),
             "callbacks": ("report_callback_hourly",),
             "agents": ("report_agent_hourly", "resolved", "case_compensations")}


def rows_read(name: str, sizes: dict[str, int]) -> int:
    return sum(sizes["case_events"] // 4 if t == "resolved" else sizes[t] for t in ROWS_READ[name])


async def time_reports(pool: asyncpg.Pool, repeat: int, sizes: dict[str, int]) -> list[tuple[str, int, float, float]]:
    service = ReportService(lambda: pool, ReportSettings(timezone="Asia/Shanghai"), wrap_up_seconds=10)
    out = []
    for name in rp.REPORTS:
        q = service.parse(name, {"from": "2026-11-01", "to": "2026-11-30"})
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            await service.run(q)
            times.append(time.perf_counter() - t0)
        out.append((name, rows_read(name, sizes), percentile(times, 50), percentile(times, 99)))
    return out


async def time_maintenance(conn: asyncpg.Connection, calls: int, rng: random.Random) -> tuple[float, float]:
    hour = MONTH + timedelta(days=40)
    t = hour.timestamp()
    contacts, paths = [], []
    for i in range(calls):
        at = t + rng.uniform(0, 3599)
        started = datetime.fromtimestamp(at, UTC)
        outcome = rng.choice(("self_served", "answered", "answered", "abandoned"))
        q = None if outcome == "self_served" else rng.choice(QUEUES)
        contacts.append((f"c{i}", started, "inbound", "+8613800000000", f"cust{rng.randint(0, 2_000_000)}",
                         started + timedelta(seconds=200), "", q, rng.uniform(0, 120) if q else None,
                         rng.uniform(30, 600) if outcome == "answered" else None,
                         [rng.choice(AGENTS)] if outcome == "answered" else [], outcome, "", "", [], 1))
        key = rng.choice("1234")
        events = (PathEvent(PathKind.ENTER, "main", at), PathEvent(PathKind.KEY, "main", at + 3, key=key),
                  PathEvent(PathKind.ENTER, NODES[int(key)], at + 3),
                  PathEvent(PathKind.EXIT, NODES[int(key)], at + 20, detail=rng.choice(("self_served", "queue"))))
        paths.append((f"c{i}", started, "hotline", "v1", "", encode_path_events(CallPath(f"c{i}", "hotline", "v1", at,
                                                                                         events))))
    await conn.copy_records_to_table("contacts", records=contacts, columns=[
        "id", "started_at", "kind", "number", "customer_id", "ended_at", "routing_reason", "queue", "wait_seconds",
        "talk_seconds", "agents", "outcome", "disposition", "notes", "ivr_path", "rev"])
    await conn.copy_records_to_table("ivr_paths", records=paths, columns=[
        "call_id", "started_at", "menu", "version", "exit_reason", "events"])
    await conn.execute("ANALYZE contacts; ANALYZE ivr_paths")
    t0 = time.perf_counter()
    async with conn.transaction():
        await rec.roll_paths(conn, "hotline", hour)
    t1 = time.perf_counter()
    async with conn.transaction():
        await rec.roll_contacts(conn, "", hour)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


async def main(repeat: int, hour_calls: int, case_events: int, compensations: int) -> None:
    rng = random.Random(20)
    work = tempfile.mkdtemp(prefix="reports-bench-")
    pg = LocalPostgres(f"{work}/pg", durable=False)
    await pg.start()
    try:
        conn = await asyncpg.connect(pg.dsn)
        await migrate.migrate(conn)
        t0 = time.perf_counter()
        sizes = await generate_month(conn, rng)
        sizes["ivr_rollup"] = await generate_tallies(conn, rng)
        sizes["case_events"], sizes["case_compensations"] = await generate_case_rows(
            conn, rng, case_events, compensations)
        await conn.execute("ANALYZE")
        gen = time.perf_counter() - t0
        pool = await asyncpg.create_pool(pg.dsn, min_size=1, max_size=2)
        rows = await time_reports(pool, repeat, sizes)
        await pool.close()
        paths_s, contacts_s = await time_maintenance(conn, hour_calls, rng)
        size = await conn.fetchval("SELECT pg_size_pretty(sum(pg_total_relation_size(oid))) FROM pg_class "
                                   "WHERE relname LIKE 'report_%hourly'")
        await conn.close()
    finally:
        await pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    hourly = sum(v for k, v in sizes.items() if k.startswith("report_"))
    print(f"\nA month at {HOURS * CALLS_PER_HOUR:,} calls as hourly rollups: {hourly:,} rows, {size} "
          f"(generated + COPY in {gen:.1f} s); each report over the whole month, {repeat} runs:\n")
    print(f"plus {sizes['ivr_rollup']:,} 15-minute menu tallies, {sizes['case_events']:,} case events "
          f"({sizes['case_events'] // 4:,} resolutions), {sizes['case_compensations']:,} compensations\n")
    print(f"{'report':<12} {'rows read':>17} {'p50 ms':>9} {'p99 ms':>9}")
    for name, n, p50, p99 in rows:
        print(f"{name:<12} {n:>17,} {p50 * 1000:>9.1f} {p99 * 1000:>9.1f}")
    per = (paths_s + contacts_s) / hour_calls * 1e6
    print(f"\nKeeping them: one hour of {hour_calls:,} calls rolled from its raw rows: IVR paths {paths_s:.2f} s, "
          f"contacts (queues, repeats with two index look-ups per call, agents) {contacts_s:.2f} s "
          f"= {per:.0f} µs per call, once per roll_interval for the current hour and once after it ends.")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--hour-calls", type=int, default=25_000)
    ap.add_argument("--case-events", type=int, default=2_000_000)
    ap.add_argument("--compensations", type=int, default=100_000)
    args = ap.parse_args()
    asyncio.run(main(args.repeat, args.hour_calls, args.case_events, args.compensations))
