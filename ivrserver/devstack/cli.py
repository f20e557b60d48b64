"""`python -m ivrserver.devstack run | up | call`: the commands behind `make run` and `make call`.

`run` (`make run`) brings up, on 127.0.0.1: its own Redis (persistent, in run/redis), its own
PostgreSQL (durable, in run/postgres, port 5433 or a free one; schema migrated), Asterisk 22,
ten SIPp agent phones, a SIPp customer phone behind the `customers` trunk, and ivrserver itself,
writes the stack's effective settings to run/ivrserver.yaml, prints what to try, and stops all of
it on Ctrl-C/SIGTERM. What it starts is recorded in run/pids/: after a `kill -9` of `make run`,
the next one stops exactly those processes (still the same programs) before it starts.
`up` is the same without ivrserver and the phones. `call` (`make call`) places one SIPp call
to the hotline of a running `run` and prints what became of it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ivrserver import config
from ivrserver.devstack.asterisk import DEFAULT_AMI_SECRET, HOTLINE, LocalAsterisk
from ivrserver.devstack.calls import place_call
from ivrserver.devstack.demo import demo_facts, seed_demo
from ivrserver.devstack.pidfiles import PidFiles
from ivrserver.devstack.ports import AGENT_NUMBERS, StackPorts, free_port, port_free
from ivrserver.devstack.postgres import DEFAULT_POSTGRES_PORT, DevPostgres
from ivrserver.devstack.process import RUN_DIR, DevStackError
from ivrserver.devstack.redis import LocalRedis
from ivrserver.devstack.sipp import SippProcess, start_sipp
from ivrserver.devstack.stack import stack, stack_settings, write_settings

DEFAULT_REDIS_PORT = 6380        # make run's own Redis: never the machine's 6379
PHONE_RING_MS, PHONE_TALK_MS = 2000, 15000


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """What `make run` keeps in its run directory."""

    root: Path

    @property
    def pids(self) -> PidFiles:
        return PidFiles(self.root / "pids")

    @property
    def redis_data(self) -> Path:
        return self.root / "redis"

    @property
    def postgres_data(self) -> Path:
        return self.root / "postgres"

    @property
    def settings(self) -> Path:
        return self.root / "ivrserver.yaml"

    @property
    def ports(self) -> Path:
        return self.root / "ports.json"

    def shown(self, path: Path) -> str:
        """`path` relative to the working directory when it is below it (shorter to copy)."""
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(path)


def _stack_ports(args: argparse.Namespace) -> StackPorts:
    return StackPorts.free() if args.free_ports else StackPorts.default()


def _redis_port(args: argparse.Namespace) -> tuple[int, str]:
    """make run's Redis port and a note when it is not the usual one."""
    if args.free_ports:
        return StackPorts.free().sip_port, ""
    if port_free(args.redis_port):
        return args.redis_port, ""
    port = StackPorts.free().sip_port
    return port, f" (port {args.redis_port} is taken by another program)"


def _postgres(args: argparse.Namespace, files: RunFiles, pids: PidFiles) -> DevPostgres:
    """make run's PostgreSQL: durable, in <run>/postgres, on --postgres-port (a free one if taken)."""
    return DevPostgres(files.postgres_data, None if args.free_ports else args.postgres_port, pids=pids)


async def _claim(files: RunFiles) -> PidFiles:
    pids = files.pids
    for rec in await asyncio.to_thread(pids.claim):
        print(f"stopped {rec.what} (pid {rec.pid}), left running by a previous `make run`", flush=True)
    return pids


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def describe(asterisk: LocalAsterisk, redis: LocalRedis, files: RunFiles, redis_note: str = "",
             postgres: DevPostgres | None = None) -> list[str]:
    """The stack's own lines of the banner (ports, trunk, Redis, PostgreSQL, where config and logs are)."""
    p = asterisk.ports
    keeps = (f"make run's own, append-only file (appendfsync everysec) in {files.shown(files.redis_data)}: "
             "data survives restarts" if redis.persistent else "throwaway: keeps nothing")
    return [
        f"Asterisk up in {asterisk.boot_seconds:.1f} s (config {asterisk.etc_dir}, logs {asterisk.full_log})",
        f"  SIP       udp 127.0.0.1:{p.sip_port}  — dial {asterisk.hotline} from 127.0.0.1:{p.caller_port}"
        f" (RFC 4733 DTMF) or 127.0.0.1:{p.caller_info_port} (SIP INFO DTMF)",
        f"  AMI       127.0.0.1:{p.ami_port} user ivrserver",
        f"  FastAGI   Asterisk connects to {p.agi_host}:{p.agi_port}",
        f"  Redis     {redis.url} — {keeps}{redis_note}",
        *([f"  Postgres  {postgres.dsn} — make run's own cluster in {files.shown(postgres.data_dir)} "
           f"(durable; log {files.shown(postgres.cluster.log_file)}), schema at version "
           f"{postgres.schema.version if postgres.schema else '?'}{postgres.note}"] if postgres is not None else []),
    ]


async def _up(args: argparse.Namespace) -> int:
    """Redis + Asterisk only (start ivrserver yourself), until Ctrl-C."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    files = RunFiles(Path(args.run_dir))
    pids = await _claim(files)
    port, note = _redis_port(args)
    redis = LocalRedis(port, data_dir=files.redis_data, pids=pids)
    try:
        async with _postgres(args, files, pids) as postgres, \
                stack(_stack_ports(args), ami_secret=args.ami_secret, redis=redis, name=args.name,
                      pids=pids) as (asterisk, redis):
            print("\n".join([*describe(asterisk, redis, files, note, postgres), "Ctrl-C stops everything."]),
                  flush=True)
            waiter = asyncio.create_task(stop.wait())
            watcher = asyncio.create_task(asterisk.wait())
            done, pending = await asyncio.wait([waiter, watcher], return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if watcher in done:
                print("Asterisk exited unexpectedly; see", asterisk.full_log, file=sys.stderr)
                return 1
            print("stopping ...", flush=True)
    finally:
        await asyncio.to_thread(pids.release)
    return 0


async def _start_phones(ports: StackPorts, pids: PidFiles) -> list[SippProcess]:
    phones = [await start_sipp("agent", local_port=ports.agent_port(n), calls=100000,
                               variables={"ring_ms": PHONE_RING_MS, "hold_ms": PHONE_TALK_MS}, timeout=86400,
                               pids=pids, what=f"agent phone agent{n}")
              for n in AGENT_NUMBERS]
    phones.append(await start_sipp("customer", local_port=ports.customer_port, calls=100000,
                                   variables={"ring_ms": PHONE_RING_MS, "press": "-", "hold_ms": PHONE_TALK_MS},
                                   timeout=86400, pids=pids, what="customer phone (trunk customers)"))
    return phones


def _columns(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(command) for command, _ in rows) + 2
    return [f"  {command.ljust(width)}{what}" for command, what in rows]


def banner(settings: config.Settings, web_url: str, files: RunFiles, stack_lines: list[str]) -> str:
    """What `make run` prints once everything is up; the demo facts come from the demo data and
    the routing policy in use (see demo.py), the paths from this run."""
    facts = demo_facts(settings)
    first, last = AGENT_NUMBERS[0], AGENT_NUMBERS[-1]
    login = facts.vip_agent or facts.supervisor or f"agent{first}"
    why = ("the demo VIP's call rings them first" if facts.vip_agent else "a supervisor sees every record")
    sup = (f"; supervisor {facts.supervisor} / {facts.supervisor}"
           if facts.supervisor and facts.supervisor != login else "")
    cfg = files.shown(files.settings)
    elsewhere = files.root.resolve() != RUN_DIR.resolve()
    ring_s, talk_s = PHONE_RING_MS // 1000, PHONE_TALK_MS // 1000
    return "\n".join([
        *stack_lines,
        f"  agents    agent{first}..agent{last}: SIPp phones that answer after {ring_s} s and talk {talk_s} s",
        f"  customers callbacks dial the customer as {settings.asterisk.customer_dial}: the `customers` trunk "
        "of pjsip.conf,",
        f"            here a SIPp customer phone (answers after {ring_s} s, talks {talk_s} s); in production "
        "point that endpoint at your own SIP trunk",
        f"  web       {web_url} — agent page: log in as {login} / {login} ({why}){sup}",
        f"  settings  {cfg} (this stack's effective settings; demo agents' passwords are their ids)",
        "Try:",
        *_columns([
            ("make call", "unknown caller 5551234 presses 1 (balance → asks for the account)"),
            (f"make call CALLER={facts.vip_number} DIGITS=", f"demo VIP {facts.vip_id}: {facts.vip_reason}"),
            (f".venv/bin/ivrserver -c {cfg} doctor", "checks this stack (Redis, PostgreSQL, AMI, dialplan, queues,"
                                                    " menus)"),
            (f".venv/bin/ivrserver -c {cfg} menus check", "menus against this Asterisk's sounds and queues"),
        ]),
        "Ctrl-C stops everything." + (f" Calls to this stack: `python -m ivrserver.devstack call --run-dir "
                                      f"{files.root}`" if elsewhere else ""),
    ])


async def _run_all(args: argparse.Namespace) -> int:
    """`make run`: Redis + Asterisk + agent and customer phones + ivrserver, until Ctrl-C."""
    from ivrserver import logs
    from ivrserver.app import IvrServer

    logs.setup("INFO")
    stop = asyncio.Event()
    _stop_on_signals(stop)
    files = RunFiles(Path(args.run_dir))
    pids = await _claim(files)
    port, note = _redis_port(args)
    redis = LocalRedis(port, data_dir=files.redis_data, pids=pids)
    ports = _stack_ports(args)
    try:
        async with _postgres(args, files, pids) as postgres, \
                stack(ports, ami_secret=args.ami_secret, redis=redis, name=args.name,
                      pids=pids) as (asterisk, redis):
            settings = stack_settings(asterisk, redis.url, args.config)
            settings = dataclasses.replace(settings, postgres=dataclasses.replace(settings.postgres,
                                                                                  dsn=postgres.dsn))
            if args.free_ports:     # the web port too: the block of StackPorts.free() holds the rest
                settings = dataclasses.replace(settings, web=dataclasses.replace(settings.web, port=free_port()))
            await asyncio.to_thread(write_settings, settings, files.settings)
            await asyncio.to_thread(files.ports.write_text, json.dumps(dataclasses.asdict(ports)))
            print(await seed_demo(files.settings), flush=True)
            phones = await _start_phones(ports, pids)
            server = IvrServer(settings)
            ready = asyncio.Event()
            serving = asyncio.create_task(server.run(ready))
            try:
                await asyncio.wait_for(ready.wait(), 30)
                web_url = f"http://{settings.web.host}:{server.web_port}/"
                print(banner(settings, web_url, files, describe(asterisk, redis, files, note, postgres)), flush=True)
                waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(asterisk.wait()), serving]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for task in waiters[:2]:
                    task.cancel()
            finally:
                print("stopping ...", flush=True)
                server.stopping.set()
                await asyncio.gather(serving, return_exceptions=True)
                for phone in phones:
                    await phone.kill()
    finally:
        await asyncio.to_thread(pids.release)
    return 0


async def _call(args: argparse.Namespace) -> int:
    files = RunFiles(Path(args.run_dir))
    digits = args.digits.replace(",", "").replace(" ", "")
    report = await place_call(files.settings, files.ports, digits=digits, caller=args.caller, number=args.number,
                              info=args.info, hold_ms=args.hold_ms, timeout=args.timeout)
    print(report.describe())
    return report.sipp.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ivrserver.devstack", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start Redis + Asterisk with the default ports until Ctrl-C"),
                       ("run", "`make run`: Redis + Asterisk + phones + ivrserver until Ctrl-C")):
        up = sub.add_parser(name, help=text)
        up.add_argument("--ami-secret", default=os.environ.get("IVRSERVER_AMI__SECRET", DEFAULT_AMI_SECRET))
        up.add_argument("--redis-port", type=int, default=DEFAULT_REDIS_PORT,
                        help=f"port of make run's own Redis (default {DEFAULT_REDIS_PORT}; a free one if taken)")
        up.add_argument("--postgres-port", type=int, default=DEFAULT_POSTGRES_PORT,
                        help=f"port of make run's own PostgreSQL (default {DEFAULT_POSTGRES_PORT}; "
                             "a free one if taken)")
        up.add_argument("-c", "--config", default=os.environ.get("IVRSERVER_CONFIG"),
                        help="ivrserver settings file (ports of Asterisk/Redis come from the stack)")
        up.add_argument("--run-dir", default=str(RUN_DIR), help="pid files, Redis data, settings (default run/)")
        up.add_argument("--name", default="devstack", help="Asterisk instance name (its directory in the chroot)")
        up.add_argument("--free-ports", action="store_true",
                        help="free ports instead of 5060/5038/4573/8080 (tests of make run itself)")
    call = sub.add_parser("call", help="place one SIPp call to the hotline of a running `run`")
    call.add_argument("--digits", default="1", help="DTMF to send, e.g. 1,2 or 12# (default 1)")
    call.add_argument("--caller", default="5551234", help="caller number (From user)")
    call.add_argument("--number", default=HOTLINE, help="number to dial (default the hotline)")
    call.add_argument("--info", action="store_true", help="send DTMF as SIP INFO instead of RFC 4733")
    call.add_argument("--hold-ms", type=int, default=10000,
                      help="hang up this long after the last digit unless Asterisk hangs up first "
                           "(default 10000; 0 = wait for Asterisk's BYE until --timeout)")
    call.add_argument("--timeout", type=float, default=60.0)
    call.add_argument("--run-dir", default=str(RUN_DIR), help="the run directory of the `make run` to call")
    args = parser.parse_args(argv)
    runner = {"call": _call, "up": _up, "run": _run_all}[args.command]
    try:
        if args.command != "run":
            return asyncio.run(runner(args))
        from ivrserver.app import run_on_loop

        # `make run` runs ivrserver in this process: on the event loop `ivrserver run` uses
        event_loop = config.load(args.config).event_loop
        return run_on_loop(runner(args), event_loop)
    except (DevStackError, config.ConfigError) as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 2

