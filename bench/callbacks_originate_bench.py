"""Callbacks placed for real: N callbacks through AMI Originate on a real Asterisk 22, claimed and
dialed by 3 ivrserver scheduler processes sharing one Redis.

    .venv/bin/python bench/callbacks_originate_bench.py            # quick: 200 due within 15 s
    .venv/bin/python bench/callbacks_originate_bench.py --full     # 2,000 due within 60 s
    .venv/bin/python bench/callbacks_originate_bench.py --n 500 --spread 20 --scenario kill

What runs (nothing of ivrserver's callback path is replaced):
- a private redis-server (devstack.redis.LocalRedis) and a private Asterisk (devstack.asterisk.LocalAsterisk:
  the repository's rendered configuration and dialplan);
- 3 worker processes, each the real CallbackScheduler + CallbackPlacer + AmiCallbackDialer on its
  own AMI session (ivrserver.pbx.ami.AmiClient), as IvrServer wires them;
- the phones are Local channels that answer. The bench adds, in the instance's rendered etc dir
  only (never asterisk-config/ or dialplans/), a file included by extensions.conf with:
    [bench-agent]     the agent's phone: Answer(), stays up until the callback leg hangs up;
    [bench-customer]  the customer's phone: Answer(), talks --talk seconds, hangs up;
    [bench-callback]  dialplans/ivrserver.conf's [ivrserver-callback] verbatim except its name and
                      the CB_DIAL check, which accepts `Local/<digits>@bench-customer` instead of
                      `PJSIP/<digits>@<trunk>` (same CB_ID validation, Dial, `h` → UserEvent
                      CallbackResult);
  and `dialplan reload`s. Placer: agent endpoint `Local/s@bench-agent`, customer dial
  `Local/{number}@bench-customer`, callback context `bench-callback`; ChannelId = "<id>-<attempt>".

Measured by a separate raw AMI listener (Asterisk's own event Timestamps):
- lateness = Newchannel of the attempt's agent leg (Uniqueid = ChannelId) − due time; also the
  placed-marker time (the placer's clock just before Originate) − due;
- duplicates = a callback with more than one agent leg, or more than one customer leg
  (`Local/<number>@bench-customer-…;1`), or more than one CallbackResult ANSWER;
- losses = a callback whose customer was never rung (no customer leg);
- unknown = dialed by the killed instance, which died before the outcome: the survivors re-queue
  the lease, find the placed marker and never re-dial (final state failed/outcome_unknown).

Scenarios: `normal` (3 instances to the end), `kill` (one SIGKILLed at 40 % of the spread).
Prints a table; no assertions (timing depends on the machine). Targets (issue 7): lateness p99
under 1 s, 0 duplicates, 0 losses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivrserver.config import AmiSettings
from ivrserver.devstack.asterisk import DIALPLAN, LocalAsterisk
from ivrserver.devstack.ports import StackPorts
from ivrserver.devstack.redis import LocalRedis
from ivrserver.domain import callbacks as cbm
from ivrserver.domain.model import ContactPreferences
from ivrserver.pbx.ami import AmiClient
from ivrserver.pbx.callback_dialer import AmiCallbackDialer
from ivrserver.services.callbacks import CallbackPlacer, CallbackScheduler
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.keys import Keys

from benchlib import (
    add_scheduler_options,
    percentile,
    print_columns,
    reaped_in_log,
    scenarios,
    stop_processes,
    watch_until_drained,
)

PREFIX = "obench"
POLICY = cbm.CallbackPolicy(calling_from="00:00", calling_until="24:00")
OPEN = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")
AGENT_ENDPOINT = "Local/s@bench-agent"
CUSTOMER_DIAL = "Local/{number}@bench-customer"
REAL_DIAL_CHECK = '${REGEX("^PJSIP/[+]?[0-9]+@[A-Za-z0-9_.-]+$" ${CB_DIAL})}'
BENCH_DIAL_CHECK = '${REGEX("^Local/[0-9]+@bench-customer$" ${CB_DIAL})}'
AGENT_LEG = re.compile(r"^(cb\d+)-(\d+)$")
CUSTOMER_LEG = re.compile(r"^Local/(\d+)@bench-customer-[0-9a-f]+;1$")


# ----------------------------------------------------------------------------- dialplan

def bench_dialplan(talk_seconds: float) -> str:
    """[bench-callback] from the real [ivrserver-callback], plus the two answering 'phones'."""
    text = DIALPLAN.read_text()
    start = text.index("[ivrserver-callback]")
    end = text.index("\n; ----", start)
    section = text[start:end]
    if section.count(REAL_DIAL_CHECK) != 1:
        raise SystemExit(f"{DIALPLAN}: [ivrserver-callback] no longer checks CB_DIAL as the bench expects")
    callback = section.replace("[ivrserver-callback]", "[bench-callback]").replace(REAL_DIAL_CHECK, BENCH_DIAL_CHECK)
    return (f"; written by bench/callbacks_originate_bench.py into this instance only\n{callback}\n"
            "[bench-agent]\n"
            "exten => s,1,Answer()\n"
            " same => n,Wait(120)\n"
            " same => n,Hangup(16)\n\n"
            "[bench-customer]\n"
            "exten => _X.,1,Answer()\n"
            f" same => n,Wait({talk_seconds:g})\n"
            " same => n,Hangup(16)\n")


async def install_dialplan(asterisk: LocalAsterisk, talk_seconds: float) -> None:
    etc = asterisk.etc_dir
    (etc / "bench-callbacks.conf").write_text(bench_dialplan(talk_seconds))
    ext = etc / "extensions.conf"
    if "bench-callbacks.conf" not in ext.read_text():
        with ext.open("a") as f:
            f.write("\n#include bench-callbacks.conf\n")
    await asterisk.cli("dialplan reload")
    shown = await asterisk.cli("dialplan show bench-callback")
    if "CB_DIAL" not in shown or "bench-customer" not in shown:
        raise SystemExit(f"bench dialplan not loaded:\n{shown}")


# ----------------------------------------------------------------------------- worker process

async def worker(args: argparse.Namespace) -> None:
    ami = AmiClient(AmiSettings(host="127.0.0.1", port=args.ami_port, secret=args.ami_secret,
                                action_timeout=10.0, ping_interval=2.0, silence_timeout=15.0,
                                reconnect_max_delay=1.0))
    await ami.start()
    if not await ami.wait_logged_in(10):
        raise SystemExit(f"{args.name}: AMI login failed: {ami.login_error}")
    client = aioredis.Redis.from_url(args.redis_url, decode_responses=True, max_connections=args.concurrency + 20)
    keys = Keys(PREFIX)
    store = CallbackStore(client, keys)
    dialer = AmiCallbackDialer(ami, client, keys, store, customer_ring_seconds=10, max_talk_seconds=120)

    async def free_agents(tier: str) -> list[str]:
        return ["bench-agent"]  # an unlimited pool of answering Local "agents"

    async def is_free(agent: str) -> bool:
        return True

    placer = CallbackPlacer(store, dialer, POLICY, free_agents=free_agents, is_free=is_free,
                            endpoint_of=lambda agent: AGENT_ENDPOINT, customer_dial=CUSTOMER_DIAL,
                            callback_context="bench-callback", agent_ring_seconds=10,
                            lease_seconds=args.lease, instance=args.name)
    scheduler = CallbackScheduler(store, placer, instance=args.name, poll_interval=args.poll,
                                  lease_seconds=args.lease, batch=args.batch, concurrency=args.concurrency)
    await client.set(f"{PREFIX}:bench:ready:{args.name}", "1")
    async def feed_dialer() -> None:
        """What the app's event fan-out does for the dialer: every AMI event to `on_event`, in place."""
        while True:
            dialer.on_event(await ami.events.get())

    async with asyncio.TaskGroup() as tg:
        tg.create_task(feed_dialer())
        tg.create_task(scheduler.run())


# ----------------------------------------------------------------------------- raw AMI witness

@dataclass
class Witness:
    """Every Newchannel and CallbackResult Asterisk emitted, with Asterisk's own timestamps."""

    agent_legs: dict[str, list[tuple[str, float]]] = field(default_factory=lambda: defaultdict(list))
    customer_legs: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    events: int = 0


async def listen(port: int, secret: str, witness: Witness, ready: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()  # "Asterisk Call Manager/..."
    writer.write(f"Action: Login\r\nUsername: ivrserver\r\nSecret: {secret}\r\nEvents: call,user\r\n\r\n".encode())
    await writer.drain()
    try:
        while True:
            block = await reader.readuntil(b"\r\n\r\n")
            headers: dict[str, str] = {}
            for line in block.decode(errors="replace").split("\r\n"):
                name, sep, value = line.partition(": ")
                if sep:
                    headers.setdefault(name, value)
            if headers.get("Response") == "Success" and "Authentication accepted" in headers.get("Message", ""):
                ready.set()
            event = headers.get("Event")
            if event is None:
                continue
            witness.events += 1
            if event == "Newchannel":
                uid, channel = headers.get("Uniqueid", ""), headers.get("Channel", "")
                if m := AGENT_LEG.match(uid):
                    witness.agent_legs[m.group(1)].append((m.group(2), float(headers.get("Timestamp", "nan"))))
                elif m := CUSTOMER_LEG.match(channel):
                    witness.customer_legs[m.group(1)] += 1
            elif event == "UserEvent" and headers.get("UserEvent") == "CallbackResult":
                status = headers.get("Status", "")
                witness.results[status] += 1
                if status == "ANSWER":
                    witness.answers[headers.get("CB_ID", "")] += 1
    finally:
        writer.close()


# ----------------------------------------------------------------------------- parent

def seed_records(n: int, start: float, spread: float, now: float) -> list[cbm.Callback]:
    out = []
    for i in range(n):
        at = start + spread * i / max(1, n - 1)
        out.append(cbm.Callback(id=f"cb{i:07d}", customer_id=f"c{i}", number=f"555{i:07d}", earliest=at,
                                latest=at + 7200, created_at=now, state=cbm.CallbackState.SCHEDULED, due_at=at,
                                preferences=OPEN, reason="bench", updated_at=now))
    return out


async def seed(client: aioredis.Redis, records: list[cbm.Callback]) -> None:
    keys = Keys(PREFIX)
    pipe = client.pipeline(transaction=False)
    for cb in records:
        pipe.set(keys.callback(cb.id), json.dumps(cbm.to_dict(cb), separators=(",", ":"), sort_keys=True))
        pipe.zadd(keys.callback_index(), {cb.id: cb.created_at})
        pipe.zadd(keys.callbacks_due(), {cb.id: cb.due_at or cb.earliest})
        if len(pipe) >= 3000:
            await pipe.execute()
    await pipe.execute()


def spawn_worker(name: str, args: argparse.Namespace, redis_url: str, asterisk: LocalAsterisk,
                 log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, __file__, "--worker", "--name", name, "--redis-url", redis_url,
             "--ami-port", str(asterisk.ports.ami_port), "--ami-secret", asterisk.ami_secret,
             "--lease", str(args.lease), "--poll", str(args.poll), "--batch", str(args.batch),
             "--concurrency", str(args.concurrency)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@dataclass
class Report:
    scenario: str
    n: int
    wall: float = 0.0
    agent_legs: int = 0
    customer_legs: int = 0
    dup_agent: int = 0
    dup_customer: int = 0
    dup_answer: int = 0
    never_dialed: int = 0
    lost: int = 0
    unknown: int = 0
    states: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    late: list[float] = field(default_factory=list)
    late_marker: list[float] = field(default_factory=list)
    per_instance: Counter[str] = field(default_factory=Counter)
    killed: str = ""
    reaped: int = 0
    held_by_killed: int = 0


async def run_scenario(scenario: str, args: argparse.Namespace, asterisk: LocalAsterisk, redis_url: str,
                       workdir: Path) -> Report:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.flushall()
    keys = Keys(PREFIX)
    store = CallbackStore(client, keys)
    witness = Witness()
    logged_in = asyncio.Event()
    listener = asyncio.create_task(listen(asterisk.ports.ami_port, asterisk.ami_secret, witness, logged_in))
    await asyncio.wait_for(logged_in.wait(), 10)
    names = [f"w{i + 1}" for i in range(args.instances)]
    logs = {name: workdir / f"{scenario}-{name}.log" for name in names}
    procs = {name: spawn_worker(name, args, redis_url, asterisk, logs[name]) for name in names}
    report = Report(scenario, args.n)
    try:
        deadline = time.monotonic() + 30
        while len(await client.keys(f"{PREFIX}:bench:ready:*")) < len(names):
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise SystemExit(f"workers {dead or names} did not start:\n" +
                                 "\n".join(logs[n].read_text(errors="replace")[-2000:] for n in names))
            await asyncio.sleep(0.1)
        now = time.time()
        start = now + args.lead
        records = seed_records(args.n, start, args.spread, now)
        due = {cb.id: cb.due_at or cb.earliest for cb in records}
        number_of = {cb.id: cb.number for cb in records}
        await seed(client, records)
        print(f"[{scenario}] {args.n} callbacks due from +{start - time.time():.1f}s over {args.spread:g}s, "
              f"{len(names)} instances", flush=True)

        async def kill() -> str:
            victim = names[-1]
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            report.killed = victim
            info = await client.hgetall(f"{PREFIX}:callbacks:leaseinfo")
            report.held_by_killed = sum(1 for v in info.values() if v.endswith(f" {victim}"))
            return f"{victim} holding {report.held_by_killed} leases"

        async def no_channels() -> bool:
            return await asterisk.active_channels() == 0

        await watch_until_drained(scenario, store.counts, start=start, spread=args.spread,
                                  deadline=start + args.spread + args.lease + 90, kill=kill, done=no_channels)
        await asyncio.sleep(1.0)  # the last events reach the listener
        report.wall = time.time() - start
    finally:
        stop_processes(procs.values())
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await listener
    report.reaped = sum(reaped_in_log(logs[name]) for name in names)
    report.results = witness.results
    for cb_id, at in due.items():
        legs = witness.agent_legs.get(cb_id, [])
        report.agent_legs += len(legs)
        rung = witness.customer_legs.get(number_of[cb_id], 0)
        report.customer_legs += rung
        report.dup_agent += len(legs) > 1
        report.dup_customer += rung > 1
        report.dup_answer += witness.answers.get(cb_id, 0) > 1
        report.never_dialed += not legs
        report.lost += rung == 0
        if legs:
            report.late.append(min(t for _, t in legs) - at)
    for i in range(0, len(records), 2000):
        batch = [cb.id for cb in records[i:i + 2000]]
        for cb in await store.get_many(batch):
            if cb is None:
                continue
            report.states[cb.state.value] += 1
            report.unknown += cb.final_reason == "outcome_unknown"
        pipe = client.pipeline(transaction=False)
        for cb_id in batch:
            pipe.get(keys.callback_placed(cb_id, 1))
        for cb_id, holder in zip(batch, await pipe.execute(), strict=True):
            if holder:
                name, _token, t = holder.split(" ")
                report.per_instance[name] += 1
                report.late_marker.append(float(t) - due[cb_id])
    await client.aclose()
    return report


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def print_table(reports: list[Report], args: argparse.Namespace) -> None:
    cols = ["scenario", "callbacks", "agent legs", "customer legs", "dup", "lost", "unknown", "late p50",
            "late p99", "late max", "marker p99", "states", "per instance"]
    rows = []
    for r in reports:
        dup = r.dup_agent + r.dup_customer + r.dup_answer
        rows.append([r.scenario + (f" (-{r.killed})" if r.killed else ""), str(r.n), str(r.agent_legs),
                     str(r.customer_legs), str(dup), str(r.lost), str(r.unknown), ms(percentile(r.late, 50)),
                     ms(percentile(r.late, 99)), ms(max(r.late, default=float("nan"))),
                     ms(percentile(r.late_marker, 99)),
                     " ".join(f"{k}={v}" for k, v in sorted(r.states.items())),
                     " ".join(f"{k}={v}" for k, v in sorted(r.per_instance.items()))])
    print()
    print(f"callbacks placed through AMI Originate: {args.n} due within {args.spread:g}s, {args.instances} "
          f"instances, lease {args.lease:g}s, poll {args.poll:g}s, customer talks {args.talk:g}s")
    print_columns(cols, rows)
    print()
    for r in reports:
        print(f"{r.scenario}: dup = {r.dup_agent} callbacks with >1 agent leg + {r.dup_customer} with >1 customer "
              f"leg + {r.dup_answer} with >1 ANSWER; never dialed {r.never_dialed}; CallbackResult "
              f"{dict(sorted(r.results.items()))}; wall {r.wall:.1f}s")
        if r.killed:
            ok = [x for x in r.late if x <= args.lease * 0.5]
            print(f"{r.scenario}: {r.held_by_killed} leases held by {r.killed} when killed, {r.reaped} re-queued "
                  f"by the others; {len(r.late) - len(ok)} callbacks later than half a lease; lateness of "
                  f"the rest p99 {ms(percentile(ok, 99))}")
    print("late = Asterisk's Newchannel of the agent leg − due; marker = placer's clock before Originate − due")
    print("lost = customer never rung; unknown = dialed by the killed instance, outcome lost, never re-dialed")


async def parent(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="callbacks-originate-bench-"))
    redis = LocalRedis()
    asterisk = LocalAsterisk(StackPorts.free(), name=f"obench-{os.getpid()}")
    await redis.start()
    try:
        t0 = time.monotonic()
        await asterisk.start()
        await install_dialplan(asterisk, args.talk)
        print(f"Asterisk up in {time.monotonic() - t0:.1f}s ({asterisk.instance_dir}); redis {redis.url}", flush=True)
        reports = []
        for scenario in scenarios(args.scenario):
            reports.append(await run_scenario(scenario, args, asterisk, redis.url, workdir))
            await asterisk.hangup_all(timeout=30)
        print_table(reports, args)
    finally:
        await asterisk.stop()
        if args.keep:
            print(f"kept: {asterisk.instance_dir} and worker logs in {workdir}")
        else:
            asterisk.remove()
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        await redis.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="2,000 callbacks due within 60 s")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--spread", type=float, default=None, help="seconds over which the callbacks fall due")
    parser.add_argument("--lead", type=float, default=2.0, help="seconds from seeding to the first due time")
    add_scheduler_options(parser, lease=3.0, batch=50)
    parser.add_argument("--talk", type=float, default=1.0, help="seconds the customer talks before hanging up")
    parser.add_argument("--keep", action="store_true", help="keep the Asterisk instance dir and worker logs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--ami-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ami-secret", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(worker(args))
        return 0
    args.n = args.n or (2000 if args.full else 200)
    args.spread = args.spread or (60.0 if args.full else 15.0)
    asyncio.run(parent(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
