"""Mass-fault detection (issue 19): detection latency and the call-path cost of counting.

    .venv/bin/python bench/incident_bench.py              # quick: 200 complaint calls/s, 3 instances
    .venv/bin/python bench/incident_bench.py --rate 100 --instances 2 --cost-seconds 5

Three real IvrServer instances in this process (their FastAGI servers, hotline handler, snapshot,
menu engine, end-of-call script, incident detector under its lease and announcement rendering with
espeak-ng), one private Redis; the callers are in-process FastAGI peers talking the way res_agi.c
does (headers, then a reply to each command), spread round-robin over the instances.

1. Detection latency. Callers from one city (Chaoyang, Liaoning mobile numbers) walk
   "3 report a fault → 4 → 1 mobile data" at `--rate` calls/s. A probe caller from the same city
   calls every 20 ms (round-robin over the instances) and notes its first prompt. The latency is
   from the moment the `min_count`-th complaint was counted (its end-of-call write answered) to
   the first probe whose first prompt is the announcement (any instance), and to the moment every
   instance plays it. A probe from Beijing must keep hearing the normal menu.
2. Counting cost: the same complaint load for `--cost-seconds` on one instance with
   incidents.enabled false (before) and true (after): this process's CPU per call (generator
   included, the same in both) and Redis's CPU per call (INFO used_cpu_*), and Redis commands per call.

No assertions: the numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from fastagi_bench import hotline_without_hours

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.devstack.redis import LocalRedis

from benchlib import REPO, free_port, percentile

PROMPTS = ("STREAM FILE", "GET DATA")
CHAOYANG = "+861390421{:04d}"  # Chaoyang, Liaoning (libphonenumber geocoding)
BEIJING = "+861380013{:04d}"  # Beijing


def policy_file(folder: Path, min_count: int, interval: float) -> Path:
    text = (REPO / "ivrserver" / "defaults" / "incidents.yaml").read_text()
    lines = []
    for line in text.splitlines():
        key = line.split(":", 1)[0]
        if key == "min_count":
            line = f"min_count: {min_count}"
        elif key == "interval":
            line = f"interval: {interval}"
        elif key == "window":
            line = "window: 60"
        elif key == "bucket":
            line = "bucket: 5"
        lines.append(line)
    path = folder / "incidents.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def settings(redis_url: str, work: Path, instance: str, *, incidents: bool, policy: Path) -> config.Settings:
    return config.from_mapping({
        "redis": {"url": redis_url},
        "ami": {"port": free_port(), "reconnect_max_delay": 5.0},
        "agi": {"port": free_port()},
        "web": {"port": free_port()},
        "asterisk": {"config_dir": "/nonexistent", "sounds_dir": "/nonexistent"},
        "menus": {"dir": str(work / "menus"), "watch": False},
        "prompts": {"cache_dir": str(work / "prompts")},
        "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml")},
        "callbacks": {"enabled": False},
        "incidents": {"enabled": incidents, "policy_file": str(policy)},
        "phone": {"default_region": "CN"},
        "log": {"level": "ERROR"},
        "instance": instance,
        "event_loop": "asyncio",
    })


@dataclass
class Call:
    """One FastAGI caller: presses `keys` in turn at each prompt; hangs up at the first prompt
    when `probe` (noting what it was)."""

    port: int
    number: str
    keys: str = ""
    probe: bool = False
    first_prompt: str = ""
    commands: list[str] = field(default_factory=list)

    async def run(self, uid: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write((f"agi_network: yes\nagi_network_script: hotline\nagi_request: agi://127.0.0.1/hotline\n"
                      f"agi_channel: PJSIP/callers-{uid}\nagi_uniqueid: {uid}\nagi_callerid: {self.number}\n"
                      "agi_calleridname: Bench\n\n").encode())
        keys = iter(self.keys)
        try:
            while True:
                line = (await asyncio.wait_for(reader.readline(), 20)).decode().strip()
                if not line:
                    return
                self.commands.append(line)
                if line.startswith(PROMPTS) and not self.first_prompt:
                    self.first_prompt = line.split()[2] if len(line.split()) > 2 else line
                    if self.probe:
                        writer.write(b"200 result=-1\nHANGUP\n")
                        await writer.drain()
                        await asyncio.wait_for(reader.read(), 20)
                        return
                if line.startswith("GET DATA"):
                    writer.write(f"200 result={next(keys, '')}\n".encode())
                elif line.startswith("STREAM FILE"):
                    writer.write(b"200 result=0 endpos=8000\n")
                elif line.startswith("WAIT FOR DIGIT"):
                    key = next(keys, "")
                    writer.write(f"200 result={ord(key) if key else 0}\n".encode())
                else:
                    writer.write(b"200 result=1\n")
                await writer.drain()
        finally:
            writer.close()


async def start(s: config.Settings) -> tuple[IvrServer, asyncio.Task[None]]:
    srv = IvrServer(s)
    ready = asyncio.Event()
    task = asyncio.create_task(srv.run(ready))
    await asyncio.wait_for(ready.wait(), 300)
    return srv, task


async def stop(servers: list[tuple[IvrServer, asyncio.Task[None]]]) -> None:
    for srv, _ in servers:
        srv.stopping.set()
    await asyncio.gather(*(asyncio.wait_for(t, 60) for _, t in servers), return_exceptions=True)


async def complaints(ports: list[int], rate: float, seconds: float, counted: list[float]) -> int:
    """Complaint calls at `rate`/s for `seconds`; `counted` gets each call's end (its write answered)."""
    n = 0
    tasks: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    port_cycle = itertools.cycle(ports)

    async def one(i: int, port: int) -> None:
        await Call(port, CHAOYANG.format(i % 9000), "341").run(f"c{i}")
        counted.append(time.monotonic())

    while time.monotonic() - started < seconds:
        target = started + n / rate
        await asyncio.sleep(max(0.0, target - time.monotonic()))
        task = asyncio.create_task(one(n, next(port_cycle)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    await asyncio.gather(*tasks, return_exceptions=True)
    return n


async def detection(args: argparse.Namespace, redis_url: str, work: Path) -> dict[str, float]:
    policy = policy_file(work, args.min_count, args.interval)
    servers = [await start(settings(redis_url, work, f"i{k}", incidents=True, policy=policy))
               for k in range(args.instances)]
    ports = [s.settings.agi.port for s, _ in servers]
    try:
        normal = Call(ports[0], BEIJING.format(1), probe=True)
        await normal.run("warm")
        baseline_prompt = normal.first_prompt
        counted: list[float] = []
        heard: dict[int, float] = {}
        beijing_heard = 0
        stop_probe = asyncio.Event()

        async def probe() -> None:
            nonlocal beijing_heard
            for i in itertools.count():
                if stop_probe.is_set():
                    return
                k = i % len(ports)
                call = Call(ports[k], CHAOYANG.format(9000 + i % 1000), probe=True)
                other = Call(ports[k], BEIJING.format(2 + i % 1000), probe=True)
                await asyncio.gather(call.run(f"p{i}"), other.run(f"q{i}"))
                at = time.monotonic()
                if call.first_prompt != baseline_prompt and k not in heard:
                    heard[k] = at
                if other.first_prompt != baseline_prompt:
                    beijing_heard += 1
                await asyncio.sleep(0.02)

        prober = asyncio.create_task(probe())
        calls = await complaints(ports, args.rate, args.seconds, counted)
        await asyncio.sleep(1.0)
        stop_probe.set()
        await prober
        counted.sort()
        nth = counted[args.min_count - 1] if len(counted) >= args.min_count else float("nan")
        first = min(heard.values()) if heard else float("nan")
        every = max(heard.values()) if len(heard) == len(ports) else float("nan")
        achieved = len(counted) / max(1e-9, counted[-1] - counted[0]) if len(counted) > 1 else 0.0
        incidents = await servers[0][0].incidents.list() if servers[0][0].incidents else []
        return {"calls": calls, "achieved_rate": achieved, "first_ms": (first - nth) * 1000,
                "every_ms": (every - nth) * 1000, "incidents": len(incidents), "beijing_heard": beijing_heard}
    finally:
        await stop(servers)


async def redis_cpu(client: aioredis.Redis) -> tuple[float, int, int]:
    """Redis CPU seconds, commands processed (scripts' own included) and EVALSHA calls so far."""
    cpu = await client.info("cpu")
    stats = await client.info("stats")
    evalsha = (await client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), int(stats["total_commands_processed"]), \
        int(evalsha)


async def cost(args: argparse.Namespace, redis_url: str, work: Path, enabled: bool) -> dict[str, float]:
    policy = policy_file(work, 10**6, args.interval)  # never raises: only the counting is measured
    client = aioredis.from_url(redis_url)
    servers = [await start(settings(redis_url, work, "cost", incidents=enabled, policy=policy))]
    try:
        await complaints([servers[0][0].settings.agi.port], args.cost_rate, 1.0, [])  # warm-up
        cpu0, (redis0, cmds0, eval0) = time.process_time(), await redis_cpu(client)
        done: list[float] = []
        calls = await complaints([servers[0][0].settings.agi.port], args.cost_rate, args.cost_seconds, done)
        cpu1, (redis1, cmds1, eval1) = time.process_time(), await redis_cpu(client)
        return {"calls": calls, "cpu_ms": (cpu1 - cpu0) * 1000 / calls, "redis_ms": (redis1 - redis0) * 1000 / calls,
                "commands": (cmds1 - cmds0) / calls, "evalsha": (eval1 - eval0) / calls}
    finally:
        await stop(servers)
        await client.aclose()


def row(*cells: object) -> str:
    first, *rest = (str(c) for c in cells)
    return " | ".join([f"{first:<24}", *(f"{c:>15}" for c in rest)])


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="incident-bench-") as tmp:
        work = Path(tmp)
        hotline_without_hours(work / "menus")
        async with LocalRedis() as redis:
            runs = []
            for i in range(args.repeat):
                client = aioredis.from_url(redis.url)
                await client.flushall()
                await client.aclose()
                runs.append(await detection(args, redis.url, work))
                print(f"run {i + 1}: {runs[-1]}", file=sys.stderr)
            before = await cost(args, redis.url, work, False)
            after = await cost(args, redis.url, work, True)
    firsts = [r["first_ms"] for r in runs]
    print(f"\nDetection latency: {args.rate:g} complaint calls/s asked, {args.instances} instances, "
          f"min_count {args.min_count}, detector interval {args.interval:g} s ({args.repeat} runs)")
    print(row("run", "calls/s done", "incidents", "Nth → 1st (ms)", "Nth → all (ms)", "Beijing heard"))
    for i, r in enumerate(runs, 1):
        print(row(f"run {i}", f"{r['achieved_rate']:.0f}", int(r["incidents"]), f"{r['first_ms']:.0f}",
                  f"{r['every_ms']:.0f}", int(r["beijing_heard"])))
    if len(firsts) > 1:
        print(row("median / p100", "", "", f"{statistics.median(firsts):.0f}", f"{percentile(firsts, 100):.0f}", ""))
    print(f"\nCounting cost on the call path ({args.cost_rate:g} complaint calls/s for {args.cost_seconds:g} s, "
          "one instance; process CPU includes the in-process callers, the same in both)")
    print(row("", "calls", "CPU ms/call", "Redis ms/call", "Redis cmds/call", "EVALSHA/call"))
    for name, r in (("incidents off (before)", before), ("incidents on (after)", after)):
        print(row(name, int(r["calls"]), f"{r['cpu_ms']:.3f}", f"{r['redis_ms']:.4f}", f"{r['commands']:.2f}",
                  f"{r['evalsha']:.2f}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="complaint calls per second")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="how long the burst lasts")
    parser.add_argument("--min-count", type=int, default=100, help="policy min_count (ratio stays 5)")
    parser.add_argument("--interval", type=float, default=0.5, help="detector interval (policy)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cost-rate", type=float, default=100.0)
    parser.add_argument("--cost-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
