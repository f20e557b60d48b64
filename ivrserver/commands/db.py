"""`ivrserver db migrate|status`: the system of record's schema (PostgreSQL)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ivrserver.commands import load_settings
from ivrserver.services import record_schema


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("db", help="the PostgreSQL system of record: schema migrations")
    sub = parser.add_subparsers(dest="db_command", required=True)
    p = sub.add_parser("migrate", help="apply pending schema migrations and keep monthly partitions")
    p.add_argument("--to", type=int, metavar="VERSION", help="stop at this version (default: the newest)")
    p.set_defaults(func=run_migrate)
    p = sub.add_parser("status", help="print the schema version; exit 1 when migrations are pending")
    p.set_defaults(func=run_status)


def run_migrate(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if settings is None:
        return 2
    try:
        report = asyncio.run(record_schema.migrate_schema(settings.postgres, args.to))
    except record_schema.NotConfigured as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # unreachable server, refused role, failed migration: say which
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
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
        report = asyncio.run(record_schema.schema_status(settings.postgres))
    except record_schema.NotConfigured as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    pending = report.newest - report.version
    print(f"schema at version {report.version} of {report.newest}"
          + (f": {pending} migration(s) pending (ivrserver db migrate)" if pending else ""))
    return 1 if pending else 0
