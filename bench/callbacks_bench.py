"""Callback scheduler benchmark: N callbacks due within a few minutes, claimed by 3 scheduler
processes against a private redis-server; the dial step records to a Redis list instead of calling.

    .venv/bin/python bench/callbacks_bench.py            # quick: 10,000 due within 20 s
    .venv/bin/python bench/callbacks_bench.py --full     # 100,000 due within 180 s
    .venv/bin/python bench/callbacks_bench.py --n 50000 --spread 60 --scenario kill

Scenarios: `normal` (3 instances run to the end) and `kill` (one instance SIGKILLed mid-run; its
leases expire and the others re-queue and place them). The recording dialer also writes what
Asterisk and the surviving instances' AMI observers would record of each dial, and every worker
runs the real CallbackObserver link record, so a takeover of an attempt the killed instance
marked goes through the real decision (re-dial what was never dialed, write an observed outcome,
else unknown). Reports lateness (dial time − due time) p50/p99, duplicates (an attempt or a
callback dialed more than once), losses (a callback never dialed), the takeovers by kind and
attempts that ended "unknown", and
the cost of a placement: Redis round trips the scheduler made (claims, reaps and per-job writes,
counted on the worker's client; the bench's own "dial" RPUSH uses another client and is not
counted), scheduler CPU and redis-server CPU per placement. No assertions: it prints a table.
The real-Originate part (2,000 calls through Asterisk) is separate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivrserver.domain import callbacks as cbm
from ivrserver.domain.model import ContactPreferences
from ivrserver.pbx.callback_dialer import CallbackObserver
from ivrserver.services.callbacks import (
    CallbackPlacer,
    CallbackScheduler,
    DialOutcome,
    DialResult,
    PlaceResult,
)
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.keys import Keys

from benchlib import (
    add_scheduler_options,
    count_dials,
    cpu_seconds,
    loadavg,
    percentile,
    print_columns,
    reaped_in_log,
    run_scenarios_on_local_redis,
    sigkill,
    stop_processes,
    watch_until_drained,
)

POLICY = cbm.CallbackPolicy(calling_from="00:00", calling_until="24:00")
OPEN = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")
PREFIX = "bench"


def dials_key() -> str:
    return f"{PREFIX}:bench:dials"


def stats_key() -> str:
    return f"{PREFIX}:bench:stats"


class RoundTrips:
    """Counts the round trips one client makes: each command, and each pipeline execute as one."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.counts: Counter[str] = Counter()
        self.names: dict[str, str] = {}  # script sha -> attribute name on the store
        inner = client.execute_command

        async def execute_command(*args: object, **options: object) -> object:
            self.counts[self._name(args)] += 1
            return await inner(*args, **options)

        make_pipeline = client.pipeline

        def pipeline(*args: object, **kw: object) -> object:
            pipe = make_pipeline(*args, **kw)  # type: ignore[arg-type]
            run = pipe.execute

            async def execute(*a: object, **k: object) -> object:
                names = sorted({self._name(cmd[0]) for cmd in pipe.command_stack})
                self.counts["pipeline[" + "+".join(names) + "]"] += 1
                return await run(*a, **k)

            pipe.execute = execute  # type: ignore[method-assign]
            return pipe

        client.execute_command = execute_command  # type: ignore[method-assign]
        client.pipeline = pipeline  # type: ignore[assignment,method-assign]

    def learn_scripts(self, store: object) -> None:
        for attr, value in vars(store).items():
            sha = getattr(value, "sha", None)
            if isinstance(sha, str):
                self.names[sha] = attr.lstrip("_")

    def _name(self, args: tuple[object, ...]) -> str:
        cmd = str(args[0]).upper() if args else "?"
        if cmd == "EVALSHA" and len(args) > 1:
            return "lua:" + self.names.get(str(args[1]), str(args[1])[:8])
        return cmd


# ----------------------------------------------------------------------------- worker process

async def always_free(agent: str) -> bool:
    return True


async def no_free_agents(tier: str) -> list[str]:
    return []


OBSERVE_INTERVAL = 0.25  # the workers' observer beat (callbacks.observe_interval)
OBSERVE_MARGIN = 0.5  # callbacks.observe_margin: one host, one clock


class RecordingDialer:
    """The dial step of the bench: records (channel id, instance, time) instead of calling, and
    plays Asterisk and the other instances' AMI observers: in the same transaction as the dial it
    writes what they would record of the call (CallbackStore.observe_in, the store function the
    real observer uses) — the channel up and its outcome, answered. Only the killed instance's
    own process dies: what Asterisk did and the survivors saw is not lost with it."""

    def __init__(self, redis: aioredis.Redis, name: str, dial_seconds: float = 0.0,
                 store: CallbackStore | None = None, pre_dial_seconds: float = 0.0) -> None:
        self.redis = redis
        self.name = name
        self.dial_seconds = dial_seconds  # how long the "call" takes after it left
        # from the placed marker to the Originate leaving (the AMI dialer's context writes; long
        # on a loaded host): a kill in this window leaves a marked attempt never dialed
        self.pre_dial_seconds = pre_dial_seconds
        self.store = store or CallbackStore(redis, Keys(PREFIX))

    async def originate(self, *, channel_id: str, agent_endpoint: str | None, customer_dial: str,
                        context: str, variables: dict[str, str], timeout_s: int,
                        send_by: float | None = None) -> DialResult:
        if self.pre_dial_seconds:
            await asyncio.sleep(self.pre_dial_seconds)
        if send_by is not None and time.time() > send_by:  # as the AMI dialer: too late, nothing sent
            return DialResult(DialOutcome.FAILED, reason="not sent: too late after the placed marker")
        callback_id, attempt = variables["CB_ID"], int(variables["CB_ATTEMPT"])
        # agent-first: the agent leg's OriginateResponse, then the dialplan's result (the bench's
        # call is over at once); customer-first: the customer's OriginateResponse
        seen = ["originate:answered"] + ([] if "NOTIFY_ID" in variables else ["result:answered"])
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(dials_key(), f"{channel_id} {self.name} {time.time():.6f}")
            for what in ["up", *seen]:
                await self.store.observe_in(pipe, callback_id, attempt, what)
            await pipe.execute()
        if self.dial_seconds:
            await asyncio.sleep(self.dial_seconds)
        return DialResult(DialOutcome.ANSWERED)


def start_observer(store: CallbackStore, name: str) -> asyncio.Task[None]:
    """This worker's CallbackObserver with an AMI link that never drops (the dials' observations
    come from RecordingDialer): its link record is what lets a survivor re-dial an attempt the
    killed instance marked and never dialed; the killed one's record goes stale with it."""
    observer = CallbackObserver(store, name, lambda: (True, 1), interval=OBSERVE_INTERVAL)
    return asyncio.create_task(observer.run())


TAKEOVERS = {PlaceResult.REDIALED: "re-dialed", PlaceResult.RECOVERED_OBSERVED: "observed",
             PlaceResult.RECOVERED_UNKNOWN: "unknown"}


def takeovers(results: Counter[str]) -> str:
    """The takeovers of attempts the killed instance had marked: never dialed → re-dialed /
    dialed, outcome observed → written / unknown."""
    return "/".join(str(results.get(k.value, 0)) for k in TAKEOVERS)


async def worker(url: str, name: str, lease: float, batch: int, concurrency: int, poll: float,
                 dial_seconds: float, pre_dial_seconds: float = 0.0) -> None:
    client = aioredis.Redis.from_url(url, decode_responses=True, max_connections=concurrency + 10)
    other = aioredis.Redis.from_url(url, decode_responses=True, max_connections=concurrency + 10)
    trips = RoundTrips(client)
    store = CallbackStore(client, Keys(PREFIX))
    trips.learn_scripts(store)

    placer = CallbackPlacer(store, RecordingDialer(other, name, dial_seconds, pre_dial_seconds=pre_dial_seconds),
                            POLICY, free_agents=no_free_agents,
                            is_free=always_free, lease_seconds=lease, instance=name,
                            observe_interval=OBSERVE_INTERVAL, observe_margin=OBSERVE_MARGIN)
    scheduler = CallbackScheduler(store, placer, instance=name, poll_interval=poll, lease_seconds=lease,
                                  batch=batch, concurrency=concurrency)
    observer = start_observer(CallbackStore(other, Keys(PREFIX)), name)  # on the uncounted client

    cpu0 = time.process_time()  # imports and start-up excluded

    async def report() -> None:  # what this worker cost so far, for the parent (uncounted client)
        while True:
            stats = {"cpu": time.process_time() - cpu0, "results": dict(scheduler.results), "trips": dict(trips.counts)}
            await other.hset(stats_key(), name, json.dumps(stats))
            await asyncio.sleep(0.2)

    reporter = asyncio.create_task(report())
    try:
        await scheduler.run()
    finally:
        reporter.cancel()
        observer.cancel()


# ----------------------------------------------------------------------------- parent

async def seed(client: aioredis.Redis, n: int, start: float, spread: float) -> dict[str, float]:
    keys = Keys(PREFIX)
    due: dict[str, float] = {}
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        at = start + spread * i / max(1, n - 1)
        cb = cbm.Callback(id=f"cb{i:07d}", customer_id=f"c{i}", number=f"555{i:07d}", earliest=at,
                          latest=at + 7200, created_at=now, tier="vip", preferred_agent="agent1001",
                          state=cbm.CallbackState.SCHEDULED, due_at=at, preferences=OPEN)
        raw = json.dumps(cbm.to_dict(cb), separators=(",", ":"), sort_keys=True)
        pipe.set(keys.callback(cb.id), raw)
        pipe.zadd(keys.callback_index(), {cb.id: now + i * 1e-6})
        pipe.zadd(keys.callbacks_due(), {cb.id: at})
        due[cb.id] = at
        if len(pipe) >= 3000:
            await pipe.execute()
    await pipe.execute()
    return due


def spawn_worker(url: str, name: str, args: argparse.Namespace, log_path: str) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, __file__, "--worker", "--redis-url", url, "--name", name, "--lease", str(args.lease),
             "--batch", str(args.batch), "--concurrency", str(args.concurrency), "--poll", str(args.poll),
             "--dial-ms", str(args.dial_ms), "--pre-dial-ms", str(args.pre_dial_ms)],
            stdout=log, stderr=subprocess.STDOUT)


@dataclass
class Report:
    scenario: str
    n: int
    wall: float = 0.0
    dials: int = 0
    dup_attempts: int = 0
    dup_callbacks: int = 0
    lost: int = 0
    unknown: int = 0
    connected: int = 0
    results: Counter[str] = field(default_factory=Counter)
    late: list[float] = field(default_factory=list)
    per_instance: dict[str, int] = field(default_factory=dict)
    killed_at: float | None = None
    reaped: int = 0
    late_killed: list[float] = field(default_factory=list)
    trips: Counter[str] = field(default_factory=Counter)
    worker_cpu: float = 0.0
    redis_cpu: float = 0.0
    loadavg: str = ""


async def run_scenario(url: str, scenario: str, args: argparse.Namespace, workdir: str, redis_pid: int) -> Report:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    await client.flushall()
    t_seed = time.time()
    start = t_seed + args.lead
    due = await seed(client, args.n, start, args.spread)
    print(f"[{scenario}] seeded {args.n} callbacks in {time.time() - t_seed:.1f}s; due from "
          f"+{start - time.time():.1f}s over {args.spread:g}s", flush=True)
    procs = {name: spawn_worker(url, name, args, os.path.join(workdir, f"{scenario}-{name}.log"))
             for name in ("A", "B", "C")[: args.instances]}
    report = Report(scenario, args.n)
    report.loadavg = loadavg()
    redis_cpu0 = cpu_seconds(redis_pid)
    store = CallbackStore(client, Keys(PREFIX))

    async def kill() -> str:
        victim = list(procs)[-1]
        sigkill(procs[victim])
        return f"instance {victim} ({(await store.counts())['leased']} leases outstanding)"

    try:
        report.killed_at = await watch_until_drained(scenario, store.counts, start=start, spread=args.spread,
                                                     deadline=start + args.spread + args.lease + 120, kill=kill)
        await asyncio.sleep(0.5)  # let the workers write their last stats
    finally:
        stop_processes(procs.values())
    report.wall = time.time() - start
    report.redis_cpu = cpu_seconds(redis_pid) - redis_cpu0
    report.loadavg += " → " + loadavg()
    for raw_stats in (await client.hgetall(stats_key())).values():
        stats = json.loads(raw_stats)
        report.worker_cpu += stats["cpu"]
        report.trips.update(stats["trips"])
        report.results.update(stats["results"])
    report.reaped = sum(reaped_in_log(os.path.join(workdir, f"{scenario}-{name}.log")) for name in procs)

    dialed = count_dials(await client.lrange(dials_key(), 0, -1))
    first_dial, report.per_instance, report.dials = dialed.first_dial, dialed.per_instance, dialed.dials
    report.dup_attempts, report.dup_callbacks = dialed.dup_channels, dialed.dup_calls
    report.lost = sum(1 for cb_id in due if cb_id not in first_dial)
    ids = list(due)
    for i in range(0, len(ids), 2000):
        for cb in await store.get_many(ids[i:i + 2000]):
            if cb is None:
                continue
            if cb.state in (cbm.CallbackState.CONNECTED, cbm.CallbackState.DONE):
                report.connected += 1
            elif cb.final_reason == "outcome_unknown":
                report.unknown += 1
    for cb_id, t in first_dial.items():
        late = t - due[cb_id]
        report.late.append(late)
        if report.killed_at is not None and late > args.lease * 0.5:
            report.late_killed.append(late)
    await client.aclose()
    return report


def print_table(reports: list[Report], args: argparse.Namespace) -> None:
    cols = ["scenario", "callbacks", "dials", "dup attempts", "dup callbacks", "lost", "unknown",
            "answered", "reaped", "takeovers redial/observed/unknown", "late p50", "late p99", "late max",
            "per instance"]
    rows = []
    for r in reports:
        rows.append([r.scenario, str(r.n), str(r.dials), str(r.dup_attempts), str(r.dup_callbacks), str(r.lost),
                     str(r.unknown), str(r.connected), str(r.reaped), takeovers(r.results),
                     f"{percentile(r.late, 50) * 1000:.0f} ms",
                     f"{percentile(r.late, 99) * 1000:.0f} ms", f"{max(r.late, default=float('nan')) * 1000:.0f} ms",
                     " ".join(f"{k}={v}" for k, v in sorted(r.per_instance.items()))])
    print()
    print(f"callbacks bench: {args.n} due within {args.spread:g}s, {args.instances} scheduler processes, "
          f"dial {args.dial_ms:g} ms (marker → dial {args.pre_dial_ms:g} ms), lease {args.lease:g}s, "
          f"batch {args.batch}, concurrency {args.concurrency}, poll {args.poll:g}s")
    print_columns(cols, rows)
    print()
    print("cost per placement (per dial recorded; the killed instance's last 0.2 s of counts are missing):")
    for r in reports:
        per = max(1, r.dials)
        total = sum(r.trips.values())
        parts = ", ".join(f"{k} {v / per:.3f}" for k, v in r.trips.most_common())
        print(f"  {r.scenario}: {total / per:.2f} Redis round trips ({parts}); scheduler CPU "
              f"{r.worker_cpu / per * 1000:.2f} ms, redis-server CPU {r.redis_cpu / per * 1000:.3f} ms; "
              f"loadavg {r.loadavg}")
    for r in reports:
        if r.killed_at is not None:
            print(f"{r.scenario}: {len(r.late_killed)} callbacks were late by more than half a lease "
                  f"(held by the killed instance until its lease expired); lateness excluding them "
                  f"p99 = {percentile([x for x in r.late if x <= args.lease * 0.5], 99) * 1000:.0f} ms")
    print("reaped = jobs whose lease expired (holder killed) and were re-queued by another instance")
    print("takeovers = attempts the killed instance had marked, taken over by a survivor: never dialed → "
          "re-dialed (same ChannelId) / dialed, its outcome as the observers recorded it → written / "
          "unknown (the takeover could not tell)")
    print("unknown = final state failed/outcome_unknown: a takeover that could not tell whether the call "
          "happened (never re-dialed)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="100,000 callbacks due within 180 s")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--spread", type=float, default=None, help="seconds over which callbacks fall due")
    parser.add_argument("--lead", type=float, default=None, help="seconds from seeding to the first due")
    add_scheduler_options(parser)
    parser.add_argument("--dial-ms", type=float, default=0.0,
                        help="simulated call duration after the dial is recorded (keeps leases held)")
    parser.add_argument("--pre-dial-ms", type=float, default=0.0,
                        help="simulated time from the placed marker to the dial (a loaded host's; widens the "
                             "window in which a kill leaves a marked attempt never dialed)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        logging.basicConfig(level=logging.WARNING)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(worker(args.redis_url, args.name, args.lease, args.batch, args.concurrency, args.poll,
                               args.dial_ms / 1000, args.pre_dial_ms / 1000))
        return 0
    args.n = args.n or (100_000 if args.full else 10_000)
    args.spread = args.spread or (180.0 if args.full else 20.0)
    args.lead = args.lead if args.lead is not None else 3.0 + args.n / 4000  # seeding time
    run_scenarios_on_local_redis(args, "callbacks-bench-", run_scenario, print_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
