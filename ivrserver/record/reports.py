"""Reports from the system of record: hourly rollups (migration 0008) kept by the writer, and the
queries the reports read.

- `mark_paths` / `mark_contacts` / `mark_callbacks`: the sink calls them in the transaction that
  writes the raw rows; each marks the hours those rows belong to dirty (`report_dirty`).
- `roll(conn)`: recompute every dirty hour WHOLE from the raw rows (never incremented: a row
  written twice or late changes nothing but its hour's recomputation); a mark made while an hour
  was computed stays, so that hour is computed again at the next turn.
- `ivr_hours`, `queue_hours`, … read the rollups of a range for the services (services/reports.py)
  to shape with domain/reports.py. Cases resolved and compensation are read from their own (small)
  tables.

Queues are named as supervisors know them (`general`, domain/queue_names.queue_label): contacts
recorded before that change hold Asterisk's name (`ivr-general`) and are folded into the same name
when their hour is rolled (again); rollups made before it were renamed by migration 0010. Only
`abandoned` contacts count as abandoned: a caller who asked for a callback in the IVR is
`callback_requested` (the callbacks report counts the request).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ivrserver.domain import reports as rp
from ivrserver.domain.callbacks import Callback
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import Contact
from ivrserver.domain.queue_names import QUEUE_PREFIX, queue_label
from ivrserver.record.rows import decode_path_events

if TYPE_CHECKING:
    import asyncpg

HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def hour_of(epoch: float) -> datetime:
    at = datetime.fromtimestamp(epoch, UTC)
    return at - (at - _EPOCH) % HOUR


# --- marks (the writer's side) ---------------------------------------------------------------------

_MARK = """INSERT INTO report_dirty (source, key, hour) VALUES ($1, $2, $3)
           ON CONFLICT (source, key, hour) DO UPDATE SET marked_at = clock_timestamp()"""


async def _mark(conn: asyncpg.Connection, marks: Iterable[tuple[str, str, datetime]]) -> None:
    rows = sorted(set(marks))
    if rows:
        await conn.executemany(_MARK, rows)


async def mark_paths(conn: asyncpg.Connection, paths: Sequence[CallPath]) -> None:
    await _mark(conn, (("paths", p.menu, hour_of(p.started_at)) for p in paths))


async def mark_contacts(conn: asyncpg.Connection, contacts: Sequence[tuple[Contact, int]]) -> None:
    await _mark(conn, (("contacts", "", hour_of(c.started_at)) for c, _ in contacts))


async def mark_callbacks(conn: asyncpg.Connection, finished: Sequence[tuple[Callback, int]]) -> None:
    await _mark(conn, (("callbacks", "", hour_of(cb.created_at)) for cb, _ in finished))


# Every hour (UTC) of [since, until) that has raw rows, per source, marked dirty at once: the hours
# with no raw rows left (past retention) are not marked, since recomputing them would erase their
# rollups. Menu statistics' 15-minute buckets (record/rollup.py) are marked the same way.
_MARK_RANGE = {
    "contacts": """INSERT INTO report_dirty (source, key, hour)
                   SELECT DISTINCT 'contacts', '', date_trunc('hour', started_at, 'UTC') FROM contacts
                   WHERE started_at >= $1 AND started_at < $2
                   ON CONFLICT (source, key, hour) DO UPDATE SET marked_at = clock_timestamp()""",
    "paths": """INSERT INTO report_dirty (source, key, hour)
                SELECT DISTINCT 'paths', menu, date_trunc('hour', started_at, 'UTC') FROM ivr_paths
                WHERE started_at >= $1 AND started_at < $2
                ON CONFLICT (source, key, hour) DO UPDATE SET marked_at = clock_timestamp()""",
    "callbacks": """INSERT INTO report_dirty (source, key, hour)
                    SELECT DISTINCT 'callbacks', '', h FROM (
                        SELECT date_trunc('hour', requested_at, 'UTC') AS h FROM callbacks_finished
                        WHERE requested_at >= $1 AND requested_at < $2
                        UNION SELECT date_trunc('hour', created_at, 'UTC') FROM notifications
                        WHERE created_at >= $1 AND created_at < $2) t
                    ON CONFLICT (source, key, hour) DO UPDATE SET marked_at = clock_timestamp()""",
    "menu_buckets": """INSERT INTO ivr_rollup_dirty (menu, bucket)
                       SELECT DISTINCT menu, date_bin('15 minutes', started_at, TIMESTAMPTZ '1970-01-01 00:00:00+00')
                       FROM ivr_paths WHERE started_at >= $1 AND started_at < $2
                       ON CONFLICT (menu, bucket) DO UPDATE SET marked_at = clock_timestamp()""",
}


async def mark_range(conn: asyncpg.Connection, since: datetime, until: datetime) -> dict[str, int]:
    """Mark every hour of [since, until) that has raw rows for recomputation by the upkeep (after a
    change of how a figure is counted); returns how many marks per source."""
    out: dict[str, int] = {}
    async with conn.transaction():
        for source, sql in _MARK_RANGE.items():
            status = await conn.execute(sql, since, until)
            out[source] = int(status.rsplit(" ", 1)[-1])
    return out


# --- recomputation -----------------------------------------------------------------------------------


async def roll(conn: asyncpg.Connection) -> int:
    """Recompute every dirty hour; returns how many (source, key, hour) marks were done."""
    rows = await conn.fetch("SELECT source, key, hour, marked_at FROM report_dirty ORDER BY hour")
    for row in rows:
        async with conn.transaction():
            await _ROLLERS[row["source"]](conn, row["key"], row["hour"])
            await conn.execute("DELETE FROM report_dirty WHERE source = $1 AND key = $2 AND hour = $3 "
                               "AND marked_at = $4", row["source"], row["key"], row["hour"], row["marked_at"])
    return len(rows)


async def roll_paths(conn: asyncpg.Connection, menu: str, hour: datetime) -> None:
    f = rp.Funnel()
    async for row in conn.cursor("""SELECT call_id, version, started_at, events FROM ivr_paths
                                    WHERE menu = $1 AND started_at >= $2 AND started_at < $3""",
                                 menu, hour, hour + HOUR, prefetch=2000):
        f.add(CallPath(row["call_id"], menu, row["version"], row["started_at"].timestamp(),
                       decode_path_events(row["events"])))
    await conn.execute("DELETE FROM report_ivr_hourly WHERE hour = $1 AND menu = $2", hour, menu)
    if f.calls:
        await conn.execute(
            """INSERT INTO report_ivr_hourly (menu, hour, calls, self_served, human, hangups, timed_out, funnel)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)""",
            menu, hour, f.calls, f.self_served, f.human, f.exits["caller_hangup"], f.exits[rp.TIMED_OUT],
            json.dumps(f.to_dict(), separators=(",", ":"), ensure_ascii=False))


# Wait bins as domain/reports.wait_bin makes them: whole seconds (cut, as Asterisk's HoldTime), bin i
# holds WAIT_EDGES[i] < w <= WAIT_EDGES[i + 1] (width_bucket over WAIT_BIN_FLOORS: 1 = the first bin).
_QUEUE_BINS = f"""
SELECT queue, outcome,
       width_bucket(floor(coalesce(wait_seconds, 0))::float8, ARRAY{list(rp.WAIT_BIN_FLOORS)}::float8[]) AS bin,
       count(*) AS n, coalesce(sum(wait_seconds), 0) AS wait, coalesce(sum(talk_seconds), 0) AS talk
FROM contacts
WHERE started_at >= $1 AND started_at < $2 AND queue IS NOT NULL AND queue <> '' AND outcome <> 'in_progress'
GROUP BY 1, 2, 3
"""


def _reason_sql(column: str) -> str:
    """A contact's reason in SQL: its queue as supervisors name it (queue_label), 'ivr' for none."""
    prefix = QUEUE_PREFIX.replace("'", "''")
    return (f"coalesce(nullif(CASE WHEN starts_with({column}, '{prefix}') AND {column} <> '{prefix}' "
            f"THEN substr({column}, {len(QUEUE_PREFIX) + 1}) ELSE {column} END, ''), 'ivr')")


_REPEATS = f"""
SELECT {_reason_sql('c.queue')} AS reason, count(*) AS calls,
       count(*) FILTER (WHERE p.started_at >= c.started_at - interval '24 hours') AS repeat_24h,
       count(p.started_at) AS repeat_7d,
       count(*) FILTER (WHERE s.started_at >= c.started_at - interval '24 hours') AS same_24h,
       count(s.started_at) AS same_7d,
       count(p.started_at) FILTER (WHERE c.outcome = 'answered') AS repeat_answered,
       count(p.started_at) FILTER (WHERE c.outcome = 'answered' AND p.story) AS story_carried
FROM contacts c
LEFT JOIN LATERAL (
    SELECT q.started_at, (q.notes <> '' OR q.disposition <> '') AS story FROM contacts q
    WHERE q.customer_id = c.customer_id AND q.started_at < c.started_at
      AND q.started_at >= c.started_at - interval '7 days' AND q.kind = 'inbound'
    ORDER BY q.started_at DESC LIMIT 1) p ON true
LEFT JOIN LATERAL (
    SELECT q.started_at FROM contacts q
    WHERE q.customer_id = c.customer_id AND q.started_at < c.started_at
      AND q.started_at >= c.started_at - interval '7 days' AND q.kind = 'inbound'
      AND {_reason_sql('q.queue')} = {_reason_sql('c.queue')}
    ORDER BY q.started_at DESC LIMIT 1) s ON true
WHERE c.started_at >= $1 AND c.started_at < $2 AND c.kind = 'inbound' AND c.customer_id IS NOT NULL
GROUP BY 1
"""

_AGENTS = """
SELECT agents[cardinality(agents)] AS agent, count(*) AS calls, coalesce(sum(talk_seconds), 0) AS talk
FROM contacts
WHERE started_at >= $1 AND started_at < $2 AND outcome = 'answered' AND cardinality(agents) > 0
GROUP BY 1
"""


async def roll_contacts(conn: asyncpg.Connection, _key: str, hour: datetime) -> None:
    until = hour + HOUR
    queues: dict[str, dict[str, Any]] = {}
    for r in await conn.fetch(_QUEUE_BINS, hour, until):
        # contacts recorded before queues were named as supervisors know them join the same queue
        q = queues.setdefault(queue_label(r["queue"]), {
            "offered": 0, "answered": 0, "abandoned": 0, "wait": 0.0, "talk": 0.0,
            "wa": [0] * len(rp.WAIT_EDGES), "wb": [0] * len(rp.WAIT_EDGES)})
        q["offered"] += r["n"]
        q["talk"] += float(r["talk"])
        bin_ = max(0, min(len(rp.WAIT_EDGES), int(r["bin"] or 1)) - 1)
        if r["outcome"] == "answered":
            q["answered"] += r["n"]
            q["wait"] += float(r["wait"])
            q["wa"][bin_] += r["n"]
        elif r["outcome"] == "abandoned":
            q["abandoned"] += r["n"]
            q["wb"][bin_] += r["n"]
    await conn.execute("DELETE FROM report_queue_hourly WHERE hour = $1", hour)
    await conn.executemany(
        """INSERT INTO report_queue_hourly (queue, hour, offered, answered, abandoned, wait_answered, wait_abandoned,
                                            wait_seconds, talk_seconds) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        [(name, hour, q["offered"], q["answered"], q["abandoned"], q["wa"], q["wb"], q["wait"], q["talk"])
         for name, q in queues.items()])
    await conn.execute("DELETE FROM report_repeat_hourly WHERE hour = $1", hour)
    await conn.execute(f"""INSERT INTO report_repeat_hourly (reason, hour, calls, repeat_24h, repeat_7d, same_24h,
                                                             same_7d, repeat_answered, story_carried)
                           SELECT reason, $1, calls, repeat_24h, repeat_7d, same_24h, same_7d, repeat_answered,
                                  story_carried FROM ({_REPEATS}) AS r""", hour, until)
    await conn.execute("DELETE FROM report_agent_hourly WHERE hour = $1", hour)
    await conn.execute(f"""INSERT INTO report_agent_hourly (agent, hour, calls, talk_seconds)
                           SELECT agent, $1, calls, talk FROM ({_AGENTS}) AS a""", hour, until)


_CALLBACK_ROWS = """
SELECT 'callback' AS kind, state, record FROM callbacks_finished WHERE requested_at >= $1 AND requested_at < $2
UNION ALL
SELECT 'notice', state, record FROM notifications WHERE created_at >= $1 AND created_at < $2
"""


def _callback_facts(state: str, record: dict[str, Any]) -> tuple[bool, bool, bool, float | None]:
    """(placed, answered, retried, lateness seconds or None) of one finished callback record."""
    history = record.get("history") or []
    dials = int(record.get("attempts") or len(history))
    answered = any(isinstance(a, dict) and a.get("outcome") == "answered" for a in history)
    late = None
    if history and isinstance(history[0], dict):
        try:
            late = max(0.0, float(history[0]["started_at"]) - float(record["earliest"]))
        except (KeyError, TypeError, ValueError):
            late = None
    return dials > 0, answered or (state == "done" and dials > 0), dials > 1, late


async def roll_callbacks(conn: asyncpg.Connection, _key: str, hour: datetime) -> None:
    kinds: dict[str, Counter[str]] = {}
    late: dict[str, list[int]] = {}
    late_sum: dict[str, float] = {}
    for r in await conn.fetch(_CALLBACK_ROWS, hour, hour + HOUR):
        record = json.loads(r["record"])
        placed, answered, retried, lateness = _callback_facts(r["state"], record)
        c = kinds.setdefault(r["kind"], Counter())
        c["requested"] += 1
        c["placed"] += placed
        c["answered"] += answered
        c["retried"] += retried
        c["failed"] += r["state"] == "failed"
        c["cancelled"] += r["state"] == "cancelled"
        hist = late.setdefault(r["kind"], [0] * len(rp.LATE_EDGES))
        if lateness is not None:
            hist[rp.bin_of(lateness, rp.LATE_EDGES)] += 1
            late_sum[r["kind"]] = late_sum.get(r["kind"], 0.0) + lateness
    await conn.execute("DELETE FROM report_callback_hourly WHERE hour = $1", hour)
    await conn.executemany(
        """INSERT INTO report_callback_hourly (kind, hour, requested, placed, answered, retried, failed,
                                               cancelled, lateness, late_seconds)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        [(kind, hour, c["requested"], c["placed"], c["answered"], c["retried"], c["failed"], c["cancelled"],
          late[kind], late_sum.get(kind, 0.0)) for kind, c in kinds.items()])


_ROLLERS = {"paths": roll_paths, "contacts": roll_contacts, "callbacks": roll_callbacks}


# --- reads ------------------------------------------------------------------------------------------


async def pending_since(conn: asyncpg.Connection, since: datetime, until: datetime) -> datetime | None:
    """The oldest hour of the range not yet recomputed (None: the rollups are complete)."""
    return await conn.fetchval("SELECT min(hour) FROM report_dirty WHERE hour >= $1 AND hour < $2", since, until)


async def ivr_hours(conn: asyncpg.Connection, since: datetime, until: datetime, menu: str | None) -> list[Any]:
    return await conn.fetch(
        """SELECT menu, hour, calls, self_served, human, hangups, timed_out, funnel FROM report_ivr_hourly
           WHERE hour >= $1 AND hour < $2 AND ($3::text IS NULL OR menu = $3) ORDER BY hour""", since, until, menu)


async def selfservice_hours(conn: asyncpg.Connection, since: datetime, until: datetime,
                            menu: str | None) -> list[Any]:
    return await conn.fetch(
        """SELECT menu, hour, calls, self_served, human FROM report_ivr_hourly
           WHERE hour >= $1 AND hour < $2 AND ($3::text IS NULL OR menu = $3) ORDER BY hour""", since, until, menu)


async def queue_hours(conn: asyncpg.Connection, since: datetime, until: datetime, queue: str | None) -> list[Any]:
    return await conn.fetch(
        """SELECT queue, hour, offered, answered, abandoned, wait_answered, wait_abandoned, wait_seconds,
                  talk_seconds FROM report_queue_hourly
           WHERE hour >= $1 AND hour < $2 AND ($3::text IS NULL OR queue = $3) ORDER BY hour""",
        since, until, queue)


async def repeat_hours(conn: asyncpg.Connection, since: datetime, until: datetime, reason: str | None) -> list[Any]:
    return await conn.fetch(
        """SELECT reason, hour, calls, repeat_24h, repeat_7d, same_24h, same_7d, repeat_answered, story_carried
           FROM report_repeat_hourly
           WHERE hour >= $1 AND hour < $2 AND ($3::text IS NULL OR reason = $3) ORDER BY hour""",
        since, until, reason)


async def callback_hours(conn: asyncpg.Connection, since: datetime, until: datetime) -> list[Any]:
    return await conn.fetch(
        """SELECT kind, hour, requested, placed, answered, retried, failed, cancelled, lateness, late_seconds
           FROM report_callback_hourly WHERE hour >= $1 AND hour < $2 ORDER BY hour""", since, until)


async def agent_totals(conn: asyncpg.Connection, since: datetime, until: datetime,
                       agent: str | None) -> list[Any]:
    return await conn.fetch(
        """SELECT agent, sum(calls)::bigint AS calls, sum(talk_seconds) AS talk_seconds FROM report_agent_hourly
           WHERE hour >= $1 AND hour < $2 AND ($3::text IS NULL OR agent = $3) GROUP BY agent""",
        since, until, agent)


async def cases_resolved(conn: asyncpg.Connection, since: datetime, until: datetime,
                         agent: str | None) -> list[Any]:
    """Resolutions by who made them (an actor `agent:<id>`, or a bare agent id from before issue 18)."""
    return await conn.fetch(
        """SELECT regexp_replace(actor, '^(agent|supervisor):', '') AS agent, count(*) AS resolved
           FROM case_events WHERE kind = 'resolved' AND at >= $1 AND at < $2
             AND ($3::text IS NULL OR regexp_replace(actor, '^(agent|supervisor):', '') = $3)
           GROUP BY 1""", since, until, agent)


async def compensation_granted(conn: asyncpg.Connection, since: datetime, until: datetime,
                               agent: str | None) -> list[Any]:
    """Compensation granted (within authority) or approved, by who granted it, per currency."""
    return await conn.fetch(
        """SELECT regexp_replace(granted_by, '^(agent|supervisor):', '') AS agent, currency,
                  count(*) AS grants, sum(amount_cents)::bigint AS cents
           FROM case_compensations WHERE state IN ('granted', 'approved') AND requested_at >= $1 AND requested_at < $2
             AND ($3::text IS NULL OR regexp_replace(granted_by, '^(agent|supervisor):', '') = $3)
           GROUP BY 1, 2""", since, until, agent)
