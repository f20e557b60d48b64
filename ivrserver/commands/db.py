"""`ivrserver db migrate|status|import-redis|reroll`: the system of record (PostgreSQL)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from ivrserver.commands import load_settings
from ivrserver.services import record_schema, redis_import

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("db", help="the PostgreSQL system of record: schema migrations")
    sub = parser.add_subparsers(dest="db_command", required=True)
    p = sub.add_parser("migrate", help="apply pending schema migrations and keep monthly partitions")
    p.add_argument("--to", type=int, metavar="VERSION", help="stop at this version (default: the newest)")
    p.set_defaults(func=run_migrate)
    p = sub.add_parser("status", help="print the schema version; exit 1 when migrations are pending")
    p.set_defaults(func=run_status)
    p = sub.add_parser("import-redis", help="copy a Redis-only deployment's customers, cases, contacts, paths, "
                                            "audit and agents' preferences into PostgreSQL (repeatable: twice = once)")
    p.add_argument("--batch", type=int, default=redis_import.BATCH, help=f"records per batch (default "
                                                                          f"{redis_import.BATCH})")
    p.set_defaults(func=run_import_redis)
    p = sub.add_parser("reroll", help="recompute the reports' hourly rollups and menu statistics of a range of "
                                      "days from the raw rows still kept (after a change of how a figure is counted)")
    p.add_argument("--from", dest="since", required=True, metavar="YYYY-MM-DD", help="first day (UTC)")
    p.add_argument("--to", dest="until", metavar="YYYY-MM-DD", help="last day, included (UTC; default: today)")
    p.set_defaults(func=run_reroll)


class _Failed(Exception):
    """The use case failed; `code` is the exit status (its message is printed already)."""

    def __init__(self, code: int) -> None:
        self.code = code


def _run(coro: Coroutine[Any, Any, T], hint: str = "") -> T:
    """Run a use case; a missing dsn or schema → exit 2, any other failure (unreachable server,
    refused role, failed statement) → exit 1, said in one line."""
    try:
        return asyncio.run(coro)
    except record_schema.NotConfigured as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise _Failed(2) from exc
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        raise _Failed(1) from exc


def run_migrate(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if settings is None:
        return 2
    try:
        report = _run(record_schema.migrate_schema(settings.postgres, args.to))
    except _Failed as failed:
        return failed.code
    for name in report.applied:
        print(f"applied {name}")
    for name in report.created:
        print(f"created partition {name}")
    for name in report.dropped:
        print(f"dropped partition {name} (past retention)")
    print(f"schema at version {report.version} of {report.newest}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if settings is None:
        return 2
    try:
        report = _run(record_schema.schema_status(settings.postgres))
    except _Failed as failed:
        return failed.code
    pending = report.newest - report.version
    print(f"schema at version {report.version} of {report.newest}"
          + (f": {pending} migration(s) pending (ivrserver db migrate)" if pending else ""))
    return 1 if pending else 0


def run_import_redis(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if settings is None:
        return 2
    if not 1 <= args.batch <= 10_000:
        print("error: --batch must be between 1 and 10000", file=sys.stderr)
        return 2
    try:  # Redis or PostgreSQL unreachable, refused: rerunning is safe
        counts = _run(redis_import.import_redis(settings, batch=args.batch,
                                                progress=lambda text: print(text, flush=True)),
                      hint=" (nothing is lost: run it again)")
    except _Failed as failed:
        return failed.code
    if counts.partitions:
        print(f"created {len(counts.partitions)} partition(s) for older months")
    for why, n in sorted(counts.skipped.items()):
        if n:
            print(f"skipped {n} {why}(s)")
    print(f"agents' preferences: {counts.agent_prefs} imported")  # before the summary, which stays the last line
    print(f"imported {counts.customers} customer(s), {counts.cases} case(s), {counts.contacts} contact(s), "
          f"{counts.paths} path(s), {counts.audit} audit entr{'y' if counts.audit == 1 else 'ies'}")
    return 0


def _day(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)


def run_reroll(args: argparse.Namespace) -> int:
    try:
        since = _day(args.since)
        until = (_day(args.until) if args.until else datetime.now(UTC).replace(hour=0, minute=0, second=0,
                                                                                microsecond=0)) + timedelta(days=1)
    except ValueError:
        print("error: --from/--to: a day as YYYY-MM-DD", file=sys.stderr)
        return 2
    if until <= since:
        print("error: --to is before --from", file=sys.stderr)
        return 2
    settings = load_settings(args.config)
    if settings is None:
        return 2
    try:
        marks = _run(record_schema.reroll_reports(settings.postgres, since, until))
    except _Failed as failed:
        return failed.code
    print(f"marked for recomputation, {since:%Y-%m-%d} .. {until - timedelta(days=1):%Y-%m-%d} (UTC): "
          f"{marks['paths']} menu-hour(s) of IVR paths, {marks['contacts']} hour(s) of contacts, "
          f"{marks['callbacks']} hour(s) of callbacks and notices, {marks['menu_buckets']} menu statistics "
          f"bucket(s); hours with no raw rows left keep their rollups. A running ivrserver's upkeep "
          f"recomputes them (reports show pending_since until it is done).")
    return 0
