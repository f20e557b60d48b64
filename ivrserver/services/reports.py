"""Supervisors' reports (issue 20 §2): read the hourly rollups (record/reports.py), shape them
(domain/reports.py) into JSON tables and one CSV table per request.

Every report answers {"report", "from", "to", "timezone", "filters", "pending_since", "tables":
{name: {"columns": [...], "rows": [...]}}, ...extras}; `pending_since` is the oldest hour of the
range the upkeep has not recomputed yet (null: complete). Wrap-up time is not measured per call:
ivrserver's agents are in wrap-up for exactly `wrap_up_seconds` after every answered call (Asterisk's
queue wrapuptime; the desk has no "ready early"), so it is calls × that setting.

Tables hold machine values, in JSON and in CSV alike (the columns: domain/reports.COLUMNS): counts,
seconds, shares 0..1, ISO days, ids (`callback`/`notice`, a policy's name, `*` for all), and the
compensation granted per currency in minor units (`compensation_CNY_cents`). The page shows them in
the reader's language and locale (static/reports.js); a program reads them as they are.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ivrserver.domain import menu_stats as ms
from ivrserver.domain import reports as rp
from ivrserver.record import reports as rec
from ivrserver.record import rollup

if TYPE_CHECKING:
    import asyncpg

    from ivrserver.config import ReportSettings

Table = dict[str, Any]


class ReportsUnavailable(Exception):
    """No system of record configured (postgres.dsn) or it cannot be reached now."""


def _table(columns: Sequence[str], rows: list[dict[str, Any]]) -> Table:
    return {"columns": list(columns), "rows": rows}


def _rate(part: int, whole: int) -> float | None:
    r = rp.share(part, whole)
    return None if r is None else round(r, 4)


class ReportService:
    def __init__(self, pool: Callable[[], asyncpg.Pool | None], settings: ReportSettings, *,
                 wrap_up_seconds: float) -> None:
        self._pool = pool
        self.settings = settings
        self.wrap_up_seconds = wrap_up_seconds

    def parse(self, report: str, params: Mapping[str, str]) -> rp.Query:
        return rp.parse_query(report, params, tz=self.settings.timezone, max_days=self.settings.max_days)

    async def run(self, q: rp.Query) -> dict[str, Any]:
        pool = self._pool()
        if pool is None:
            raise ReportsUnavailable("reports need the system of record: set postgres.dsn")
        try:
            async with pool.acquire() as conn:
                body = await _BUILDERS[q.report](self, conn, q)
                pending = await rec.pending_since(conn, q.range.since, q.range.until)
        except (OSError, TimeoutError) as exc:
            raise ReportsUnavailable(f"the system of record cannot be reached ({type(exc).__name__})") from exc
        return {"report": q.report, "from": q.range.first.isoformat(), "to": q.range.last.isoformat(),
                "timezone": q.range.tz, "filters": dict(q.filters),
                "pending_since": pending.isoformat() if pending else None, **body}

    @staticmethod
    def csv(q: rp.Query, body: Mapping[str, Any]) -> str:
        table = body["tables"][q.table]
        return rp.csv_table(table["columns"], table["rows"])

    # -- IVR funnel ------------------------------------------------------------------------------------

    async def _ivr(self, conn: asyncpg.Connection, q: rp.Query) -> dict[str, Any]:
        import json

        menus: dict[str, rp.Funnel] = defaultdict(rp.Funnel)
        for r in await rec.ivr_hours(conn, q.range.since, q.range.until, q.filters.get("menu")):
            menus[r["menu"]].merge(rp.Funnel.from_dict(json.loads(r["funnel"])))
        policy = ms.POLICIES[self.settings.ordering_policy]
        nodes, exits, depth, order = [], [], [], []
        for menu in sorted(menus):
            f = menus[menu]
            nodes += [{"menu": menu, **row} for row in rp.funnel_nodes(f)]
            exits.append({"menu": menu, "calls": f.calls, **{c: f.exits[c] for c in rp.EXIT_CATEGORIES},
                          "self_service_share": _rate(f.self_served, f.self_served + f.human),
                          "average_seconds": round(f.seconds / (f.calls - f.exits[rp.UNFINISHED]), 1)
                          if f.calls > f.exits[rp.UNFINISHED] else None})
            depth += [{"menu": menu, **row} for row in rp.abandon_by_depth(f)]
            # the suggested option order, as `menus stats` makes it (its 15-minute rollups)
            stats = ms.summarize(menu, await rollup.stats(conn, menu, q.range.since, q.range.until), policy)
            for sug in stats.suggestions:
                moved = policy.order(list(sug.current))  # the option (by its key now) for each slot
                for pos, (key, does) in enumerate(sug.suggested):
                    rank = sug.current.index(moved[pos])
                    order.append({"menu": menu, "node": sug.node, "policy": sug.policy, "key": key, "does": does,
                                  "now_key": moved[pos], "busiest_rank": rank + 1, "calls": sug.counts[rank]})
        cols = rp.COLUMNS["ivr"]
        return {"target": self.settings.self_service_target, "policy": {"name": policy.name,
                                                                        "description": policy.description},
                "tables": {"nodes": _table(cols["nodes"], nodes), "exits": _table(cols["exits"], exits),
                           "depth": _table(cols["depth"], depth), "order": _table(cols["order"], order)}}

    # -- self-service share ----------------------------------------------------------------------------

    async def _selfservice(self, conn: asyncpg.Connection, q: rp.Query) -> dict[str, Any]:
        tz, target = q.range.tz, self.settings.self_service_target
        days: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        menus: dict[str, Counter[str]] = defaultdict(Counter)
        for r in await rec.selfservice_hours(conn, q.range.since, q.range.until, q.filters.get("menu")):
            day = rp.local_day(r["hour"], tz).isoformat()
            for c in (days[(day, "*")], days[(day, r["menu"])], menus[r["menu"]]):
                c["calls"] += r["calls"]
                c["self_served"] += r["self_served"]
                c["human"] += r["human"]

        def row(c: Counter[str]) -> dict[str, Any]:
            s = _rate(c["self_served"], c["self_served"] + c["human"])
            return {"calls": c["calls"], "self_served": c["self_served"], "human": c["human"], "share": s,
                    "target": target, "below_target": None if s is None else s < target}

        day_rows = [{"day": d.isoformat(), "menu": m, **row(days[(d.isoformat(), m)])}
                    for d in q.range.days for m in ["*", *sorted(menus)] if (d.isoformat(), m) in days]
        total: Counter[str] = Counter()
        for c in menus.values():
            total.update(c)
        menu_rows = [{"menu": m, **row(c)} for m, c in sorted(menus.items())] + [{"menu": "*", **row(total)}]
        cols = rp.COLUMNS["selfservice"]
        return {"target": target, "tables": {"days": _table(cols["days"], day_rows),
                                             "menus": _table(cols["menus"], menu_rows)}}

    # -- queues ----------------------------------------------------------------------------------------

    def _queue_row(self, c: dict[str, Any]) -> dict[str, Any]:
        sl = self.settings.service_level_seconds
        wa, wb = c["wa"], c["wb"]
        return {"offered": c["offered"], "answered": c["answered"], "abandoned": c["abandoned"],
                "abandon_rate": _rate(c["abandoned"], c["offered"]),
                "service_level": None if not c["answered"] + c["abandoned"]
                else round(rp.service_level(wa, c["abandoned"], sl) or 0.0, 4),
                "service_level_seconds": sl,
                "wait_average": round(c["wait"] / c["answered"], 1) if c["answered"] else None,
                "wait_p50": rp.percentile(wa, 0.5), "wait_p90": rp.percentile(wa, 0.9),
                "wait_p99": rp.percentile(wa, 0.99), "abandoned_wait_p50": rp.percentile(wb, 0.5),
                "talk_average": round(c["talk"] / c["answered"], 1) if c["answered"] else None}

    async def _queues(self, conn: asyncpg.Connection, q: rp.Query) -> dict[str, Any]:
        tz = q.range.tz

        def fresh() -> dict[str, Any]:
            return {"offered": 0, "answered": 0, "abandoned": 0, "wait": 0.0, "talk": 0.0, "wa": [], "wb": []}

        queues: dict[str, dict[str, Any]] = defaultdict(fresh)
        hours: dict[tuple[str, int], dict[str, Any]] = defaultdict(fresh)
        days: dict[tuple[str, str], dict[str, Any]] = defaultdict(fresh)
        for r in await rec.queue_hours(conn, q.range.since, q.range.until, q.filters.get("queue")):
            keys = (queues[r["queue"]], queues["*"], hours[(r["queue"], rp.local_hour(r["hour"], tz))],
                    hours[("*", rp.local_hour(r["hour"], tz))],
                    days[(rp.local_day(r["hour"], tz).isoformat(), r["queue"])])
            for c in keys:
                c["offered"] += r["offered"]
                c["answered"] += r["answered"]
                c["abandoned"] += r["abandoned"]
                c["wait"] += r["wait_seconds"]
                c["talk"] += r["talk_seconds"]
                c["wa"] = rp.add_hist(c["wa"], r["wait_answered"])
                c["wb"] = rp.add_hist(c["wb"], r["wait_abandoned"])
        cols = rp.COLUMNS["queues"]
        names = sorted(n for n in queues if n != "*") + (["*"] if queues else [])
        return {"service_level_seconds": self.settings.service_level_seconds, "wait_edges": list(rp.WAIT_EDGES),
                "tables": {
                    "queues": _table(cols["queues"], [{"queue": n, **self._queue_row(queues[n])} for n in names]),
                    "hours": _table(cols["hours"],
                                    [{"queue": n, "hour": h, **self._queue_row(hours[(n, h)])}
                                     for n in names for h in range(24) if (n, h) in hours]),
                    "days": _table(cols["days"], [{"day": d, "queue": n, **self._queue_row(c)}
                                                  for (d, n), c in sorted(days.items())])}}

    # -- repeat calls / first-contact resolution -------------------------------------------------------

    async def _repeats(self, conn: asyncpg.Connection, q: rp.Query) -> dict[str, Any]:
        fields = rp.REPEAT_FIELDS
        reasons: dict[str, Counter[str]] = defaultdict(Counter)
        days: dict[str, Counter[str]] = defaultdict(Counter)
        for r in await rec.repeat_hours(conn, q.range.since, q.range.until, q.filters.get("queue")):
            for c in (reasons[r["reason"]], reasons["*"], days[rp.local_day(r["hour"], q.range.tz).isoformat()]):
                for f in fields:
                    c[f] += r[f]

        def row(c: Counter[str]) -> dict[str, Any]:
            return {**{f: c[f] for f in fields}, "repeat_rate_24h": _rate(c["repeat_24h"], c["calls"]),
                    "repeat_rate_7d": _rate(c["repeat_7d"], c["calls"]),
                    "first_contact_resolution": None if not c["calls"] else round(1 - c["same_7d"] / c["calls"], 4),
                    "story_carried_share": _rate(c["story_carried"], c["repeat_answered"])}

        cols = rp.COLUMNS["repeats"]
        names = sorted(n for n in reasons if n != "*") + (["*"] if reasons else [])
        return {"tables": {"reasons": _table(cols["reasons"], [{"reason": n, **row(reasons[n])} for n in names]),
                           "days": _table(cols["days"], [{"day": d, **row(c)} for d, c in sorted(days.items())])}}

    # -- callbacks and notices -------------------------------------------------------------------------

    async def _callbacks(self, conn: asyncpg.Connection, q: rp.Query) -> dict[str, Any]:
        fields = rp.CALLBACK_FIELDS

        def fresh() -> dict[str, Any]:
            return {"c": Counter(), "late": [], "late_seconds": 0.0}

        kinds: dict[str, dict[str, Any]] = defaultdict(fresh)
        days: dict[tuple[str, str], dict[str, Any]] = defaultdict(fresh)
        for r in await rec.callback_hours(conn, q.range.since, q.range.until):
            for acc in (kinds[r["kind"]], days[(rp.local_day(r["hour"], q.range.tz).isoformat(), r["kind"])]):
                for f in fields:
                    acc["c"][f] += r[f]
                acc["late"] = rp.add_hist(acc["late"], r["lateness"])
                acc["late_seconds"] += r["late_seconds"]

        def row(acc: dict[str, Any]) -> dict[str, Any]:
            c, late = acc["c"], acc["late"]
            return {**{f: c[f] for f in fields}, "answer_rate": _rate(c["answered"], c["placed"]),
                    "late_average": round(acc["late_seconds"] / sum(late), 1) if sum(late) else None,
                    "late_p50": rp.percentile(late, 0.5, rp.LATE_EDGES),
                    "late_p90": rp.percentile(late, 0.9, rp.LATE_EDGES)}

        cols = rp.COLUMNS["callbacks"]
        return {"late_edges": list(rp.LATE_EDGES), "tables": {
            "kinds": _table(cols["kinds"], [{"kind": k, **row(a)} for k, a in sorted(kinds.items())]),
            "days": _table(cols["days"], [{"day": d, "kind": k, **row(a)} for (d, k), a in sorted(days.items())])}}

    # -- agents ----------------------------------------------------------------------------------------

    async def _agents(self, conn: asyncpg.Connection, q: rp.Query) -> dict[str, Any]:
        since, until, agent = q.range.since, q.range.until, q.filters.get("agent")
        rows: dict[str, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "talk_seconds": 0.0, "cases_resolved": 0,
                                                               "compensation_grants": 0})
        for r in await rec.agent_totals(conn, since, until, agent):
            rows[r["agent"]]["calls"] = int(r["calls"])
            rows[r["agent"]]["talk_seconds"] = round(float(r["talk_seconds"]), 1)
        for r in await rec.cases_resolved(conn, since, until, agent):
            rows[r["agent"]]["cases_resolved"] = int(r["resolved"])
        currencies: set[str] = set()
        for r in await rec.compensation_granted(conn, since, until, agent):
            row = rows[r["agent"]]
            row["compensation_grants"] += int(r["grants"])
            column = rp.compensation_column(r["currency"])
            row[column] = row.get(column, 0) + int(r["cents"])
            currencies.add(column)
        out = []
        for name, row in sorted(rows.items()):
            calls = row["calls"]
            out.append({"agent": name, **row, "talk_average": round(row["talk_seconds"] / calls, 1) if calls else None,
                        "wrap_up_seconds": round(calls * self.wrap_up_seconds, 1)})
        cols = [*rp.COLUMNS["agents"]["agents"], *sorted(currencies)]
        return {"wrap_up_seconds_per_call": self.wrap_up_seconds, "tables": {"agents": _table(cols, out)}}


_BUILDERS = {"ivr": ReportService._ivr, "selfservice": ReportService._selfservice, "queues": ReportService._queues,
             "repeats": ReportService._repeats, "callbacks": ReportService._callbacks,
             "agents": ReportService._agents}
