"""`ivrserver callbacks list | add | reschedule | cancel` against the shared Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from ivrserver.commands import load_settings
from ivrserver.domain.callbacks import Callback, CallbackState, InvalidTransition, RequestInvalid, to_dict
from ivrserver.services import work_calendar
from ivrserver.services.callbacks import (
    CallbackBusy,
    CallbackNotFound,
    CallbackService,
    for_command,
    policy_from_settings,
)

TIME_HELP = "epoch seconds, '+30m' / '+2h' / '+1d', or ISO 8601 with offset (2025-05-01T18:00+08:00)"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    # Where to connect, accepted before and after the action (`callbacks --prefix x list` and
    # `callbacks list --prefix x`). SUPPRESS: no default, because a sub-parser's defaults overwrite
    # the values already parsed, and `ivrserver -c FILE callbacks list` would lose FILE.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--redis-url", help="Redis URL (default: redis.url from the configuration)")
    common.add_argument("--prefix", help="Redis key prefix (default: redis.prefix from the configuration)")
    common.add_argument("-c", "--config", help="configuration file (default: ivrserver -c, else $IVRSERVER_CONFIG)")
    parser = subparsers.add_parser("callbacks", parents=[common],
                                   help="list, add, reschedule or cancel scheduled callbacks")
    sub = parser.add_subparsers(dest="callbacks_command", required=True)

    p = sub.add_parser("list", parents=[common], help="list callbacks, newest first")
    p.add_argument("--state", choices=[s.value for s in CallbackState])
    p.add_argument("--agent")
    p.add_argument("--customer")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run_list)

    p = sub.add_parser("add", parents=[common], help="request a callback")
    p.add_argument("--customer", required=True)
    p.add_argument("--number", required=True)
    p.add_argument("--at", help=TIME_HELP)
    p.add_argument("--earliest", help=TIME_HELP)
    p.add_argument("--latest", help=TIME_HELP)
    p.add_argument("--agent", help="preferred agent id")
    p.add_argument("--tier")
    p.add_argument("--reason")
    p.add_argument("--case")
    p.add_argument("--context", help="what the agent should see")
    p.add_argument("--mode", choices=["agent_first", "customer_first"])
    p.add_argument("--timezone", help="the customer's IANA time zone, e.g. Asia/Shanghai")
    p.set_defaults(func=run_add)

    p = sub.add_parser("reschedule", parents=[common], help="move a callback to a new time or window")
    p.add_argument("id")
    p.add_argument("--at", help=TIME_HELP)
    p.add_argument("--earliest", help=TIME_HELP)
    p.add_argument("--latest", help=TIME_HELP)
    p.set_defaults(func=run_reschedule)

    p = sub.add_parser("cancel", parents=[common], help="cancel a callback")
    p.add_argument("id")
    p.add_argument("--reason", default="cancelled")
    p.set_defaults(func=run_cancel)


def _time(value: str | None) -> Any:
    """CLI times: digits are epoch seconds, anything else goes to the validator as text."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _fmt(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _line(cb: Callback) -> str:
    return (f"{cb.id}  {cb.state.value:<10} {cb.customer_id:<12} {cb.number:<16} due {_fmt(cb.due_at)}  "
            f"window {_fmt(cb.earliest)} .. {_fmt(cb.latest)}  agent {cb.preferred_agent or '-'}  "
            f"attempts {cb.attempts}{'  ' + cb.final_reason if cb.final_reason else ''}")


def _run(args: argparse.Namespace, body: Callable[[CallbackService], Awaitable[int]]) -> int:
    settings = load_settings(getattr(args, "config", None))
    if settings is None:
        return 2
    url = getattr(args, "redis_url", None) or settings.redis.url
    prefix = getattr(args, "prefix", None) or settings.redis.prefix

    async def go() -> int:
        days = await asyncio.to_thread(work_calendar.for_today, settings.callbacks.calendar_country,
                                       settings.callbacks.calendar_subdivision, datetime.now(UTC).date())
        policy = policy_from_settings(settings.callbacks, phone_region=settings.phone.default_region,
                                      working_days=days)
        async with for_command(settings.redis, getattr(args, "redis_url", None), policy, prefix=prefix,
                               records=bool(settings.postgres.dsn)) as service:
            return await body(service)

    try:
        return asyncio.run(go())
    except RequestInvalid as exc:
        for field, message in exc.errors.items():
            print(f"error: {field}: {message}", file=sys.stderr)
        return 2
    except CallbackNotFound as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    except (InvalidTransition, CallbackBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise  # the reader of our output left (| head): cli.main ends quietly
    except (OSError, aioredis.ConnectionError) as exc:
        print(f"error: cannot reach Redis at {url}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # the calendar settings (callbacks.calendar_subdivision)
        print(f"error: callbacks.calendar_subdivision: {exc}", file=sys.stderr)
        return 2


def run_list(args: argparse.Namespace) -> int:
    async def body(service: CallbackService) -> int:
        items = await service.list(state=args.state, agent=args.agent, customer=args.customer,
                                   limit=args.limit)
        for cb in items:
            print(json.dumps(to_dict(cb), ensure_ascii=False) if args.json else _line(cb))
        return 0

    return _run(args, body)


def run_add(args: argparse.Namespace) -> int:
    raw = {"customer_id": args.customer, "number": args.number, "at": _time(args.at),
           "earliest": _time(args.earliest), "latest": _time(args.latest),
           "preferred_agent": args.agent, "tier": args.tier, "reason": args.reason,
           "case_id": args.case, "context": args.context, "mode": args.mode, "timezone": args.timezone}

    async def body(service: CallbackService) -> int:
        cb = await service.request({k: v for k, v in raw.items() if v is not None}, requested_by="cli")
        print(_line(cb))
        return 0

    return _run(args, body)


def run_reschedule(args: argparse.Namespace) -> int:
    raw = {"at": _time(args.at), "earliest": _time(args.earliest), "latest": _time(args.latest)}

    async def body(service: CallbackService) -> int:
        cb = await service.reschedule(args.id, {k: v for k, v in raw.items() if v is not None})
        print(_line(cb))
        return 0

    return _run(args, body)


def run_cancel(args: argparse.Namespace) -> int:
    async def body(service: CallbackService) -> int:
        cb = await service.cancel(args.id, reason=args.reason)
        print(_line(cb))
        return 0

    return _run(args, body)
