"""Mass-fault detection (issue 19 §3): detection latency across instances, and the cost of counting.

    .venv/bin/python bench/incident_bench.py                       # 100 and 200 complaint calls/s, 3 instances
    .venv/bin/python bench/incident_bench.py --rates 200 --repeat 3 --cost-pairs 2
    .venv/bin/python bench/incident_bench.py --min-count 20         # the shipped min_count

Processes (all on 127.0.0.1, free ports, one private Redis from benchlib.local_redis):
  * `--instances` (3) ivrserver instances, each its OWN process: `python -m ivrserver -c <yaml> run`
    with its own settings (instance name i0, i1 ..., its own FastAGI and web ports, its own prompt
    cache — a copy of a warm cache holding the hotline and the fixed incident texts, so every run
    synthesizes the incident's announcement cold, as a fresh incident would), AMI at a closed port
    (it retries in the background, as in fastagi_bench), incidents.enabled, the shipped
    incidents.yaml except `min_count` (detector interval as shipped: 0.5 s);
  * the callers, in ANOTHER process (this script with `--callers`, uvloop): FastAGI peers speaking
    the res_agi dialogue (header block, then one reply per command, like fastagi_bench), spread
    round-robin over the instances. Complaint callers from Chaoyang (Liaoning mobile numbers,
    libphonenumber's geocoding) press 3 → 4 → 1 ("report a fault → mobile data") at `--rate` calls/s;
    probe callers from Beijing (`--probe-rate` per instance) hang up at their first prompt.
  * this orchestrator: starts and stops everything, reads CPU from /proc, Redis's INFO, the load.

Per run (servers restarted, Redis flushed): the latency from the `min_count`-th complaint (the
moment its call ended: the server closes the FastAGI connection only after the end-of-call
script that counts it answered) to the first caller, on each instance, whose first prompt was the
announcement (the moment that prompt arrived); the worst instance is "all"; Beijing callers who
got it (must be 0); complaint calls/s achieved; each server's CPU ms per call it served; Redis CPU
ms per call; the caller process's CPU; how late the callers started calls against their schedule
(the generator's own lag); caller lookups that passed redis.snapshot_timeout (those callers are
served as unknown, without incidents); the host's load average and busy share of its CPUs.

Counting cost: the same callers at `--cost-rate` with min_count out of reach (no incident), runs
alternating incidents.enabled false / true in the same sitting: server CPU ms per call, Redis CPU
ms, commands and EVALSHA per call.

No assertions: the numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from fastagi_bench import cpu_seconds, hotline_without_hours

from ivrserver.store.keys import Keys

from benchlib import REPO, free_port, local_redis, percentile

PROMPTS = ("STREAM FILE", "GET DATA")
CHAOYANG = "+861390421{:04d}"  # Chaoyang, Liaoning (libphonenumber geocoding)
BEIJING = "+861380013{:04d}"  # Beijing
NO_INCIDENT = 1_000_000  # min_count out of reach: only the counting is measured


# ------------------------------------------------------------------------------ the caller process


@dataclass
class Call:
    """One FastAGI caller: presses `keys` in turn; hangs up at the first prompt when `probe`."""

    port: int
    number: str
    keys: str = ""
    probe: bool = False
    first_prompt: str = ""
    first_at: float = 0.0
    ended_at: float = 0.0
    error: str = ""

    async def run(self, uid: str) -> None:
        try:
            await asyncio.wait_for(self._dialogue(uid), 30)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self.error = type(exc).__name__
        self.ended_at = time.monotonic()

    async def _dialogue(self, uid: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write((f"agi_network: yes\nagi_network_script: hotline\nagi_request: agi://127.0.0.1/hotline\n"
                      f"agi_channel: PJSIP/callers-{uid}\nagi_uniqueid: {uid}\nagi_callerid: {self.number}\n"
                      "agi_calleridname: Bench\n\n").encode())
        keys = iter(self.keys)
        try:
            while line := (await reader.readline()).decode().strip():
                if line.startswith(PROMPTS) and not self.first_prompt:
                    parts = line.split()
                    self.first_prompt, self.first_at = (parts[2] if len(parts) > 2 else line), time.monotonic()
                    if self.probe:
                        writer.write(b"200 result=-1 endpos=0\nHANGUP\n")
                        await writer.drain()
                        await reader.read()
                        return
                writer.write(reply(line, keys).encode())
                await writer.drain()
        finally:
            writer.close()


def reply(line: str, keys: Any) -> str:
    if line.startswith("GET DATA"):
        return f"200 result={next(keys, '')}\n"
    if line.startswith("STREAM FILE"):
        return "200 result=0 endpos=8000\n"
    if line.startswith("WAIT FOR DIGIT"):
        key = next(keys, "")
        return f"200 result={ord(key) if key else 0}\n"
    return "200 result=1\n"


async def watch_count(spec: dict[str, Any], reached: list[float]) -> None:
    """Note when the complaint counters in Redis first hold `min_count` (polled every 5 ms: the
    reference moment of the latency, whatever the servers' own delays in closing calls)."""
    if spec["min_count"] >= NO_INCIDENT:
        return
    import redis.asyncio as aioredis

    client = aioredis.from_url(spec["redis"])
    keys = Keys("ivr")
    try:
        while True:
            now = time.time()
            last = int(now // spec["bucket"])
            names = [keys.incident_count("mobile_data", "chaoyang-liaoning", b) for b in (last - 1, last)]
            if sum(int(v) for v in await client.mget(names) if v) >= spec["min_count"]:
                reached.append(time.monotonic())
                return
            await asyncio.sleep(0.005)
    finally:
        await client.aclose()


async def paced(rate: float, seconds: float, make: Any, lags: list[float]) -> list[Call]:
    """Start make(i) at `rate`/s for `seconds`; `lags` gets how late each start was."""
    calls: list[Call] = []
    if rate <= 0:
        return calls
    tasks = []
    started = time.monotonic()
    n = 0
    while (target := started + n / rate) < started + seconds:
        await asyncio.sleep(max(0.0, target - time.monotonic()))
        lags.append(time.monotonic() - target)
        call = make(n)
        calls.append(call)
        tasks.append(asyncio.create_task(call.run(f"{call.number[-4:]}-{n}-{int(started)}")))
        n += 1
    await asyncio.gather(*tasks)
    return calls


async def callers_main(spec: dict[str, Any]) -> dict[str, Any]:
    ports: list[int] = spec["ports"]
    cpu0 = time.process_time()
    baseline = []
    for k, port in enumerate(ports):  # warm-up, and what the normal menu's first prompt is
        call = Call(port, BEIJING.format(9990 + k), probe=True)
        await call.run(f"warm{k}")
        baseline.append(call.first_prompt)
    lags: list[float] = []
    reached: list[float] = []
    watcher = asyncio.create_task(watch_count(spec, reached))
    complaint, probes = await asyncio.gather(
        paced(spec["rate"], spec["seconds"],
              lambda i: Call(ports[i % len(ports)], CHAOYANG.format(i % 9000), "341"), lags),
        paced(spec["probe_rate"] * len(ports), spec["seconds"] + spec["tail"],
              lambda i: Call(ports[i % len(ports)], BEIJING.format(i % 9000), probe=True), []))
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    return {"baseline": baseline, "lags": lags, "cpu": time.process_time() - cpu0,
            "reached": reached[0] if reached else float("nan"),
            "mono_minus_wall": time.monotonic() - time.time(),
            "complaints": [[ports.index(c.port), c.first_at, c.first_prompt, c.ended_at, c.error] for c in complaint],
            "probes": [[ports.index(c.port), c.first_prompt, c.error] for c in probes]}


# ------------------------------------------------------------------------------ the orchestrator


def policy_file(folder: Path, min_count: int) -> Path:
    """The shipped incidents.yaml with only `min_count` changed."""
    lines = [f"min_count: {min_count}" if line.split(":", 1)[0] == "min_count" else line
             for line in (REPO / "ivrserver" / "defaults" / "incidents.yaml").read_text().splitlines()]
    path = folder / f"incidents-{min_count}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Instance:
    name: str
    folder: Path
    agi_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, redis_url: str, menus: Path, cache: Path, *, incidents: bool, policy: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        prompts = self.folder / "prompts"
        shutil.rmtree(prompts, ignore_errors=True)
        if cache.is_dir():
            shutil.copytree(cache, prompts)
        config = {
            "redis": {"url": redis_url},
            "ami": {"host": "127.0.0.1", "port": free_port(), "username": "ivrserver", "secret": "x"},
            "agi": {"host": "127.0.0.1", "port": self.agi_port},
            "web": {"host": "127.0.0.1", "port": free_port()},
            "menus": {"dir": str(menus), "entry": "hotline", "watch": False},
            "prompts": {"cache_dir": str(prompts)},
            "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml")},
            "incidents": {"enabled": incidents, "policy_file": str(policy)},
            "phone": {"default_region": "CN"},
            "log": {"level": "ERROR", "format": "text"},
            "instance": self.name,
        }
        path = self.folder / "ivrserver.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        with (self.folder / "ivrserver.log").open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ivrserver", "-c", str(path), "run"],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    def wait_ready(self, timeout: float = 120) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.agi_port), 0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"{self.name} did not start:\n{self.log_text()[-3000:]}") from None
                time.sleep(0.1)

    def log_text(self) -> str:
        return (self.folder / "ivrserver.log").read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU of the host (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def redis_figures(client: Any) -> tuple[float, int, int]:
    cpu, stats = client.info("cpu"), client.info("stats")
    evalsha = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    return (float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), int(stats["total_commands_processed"]),
            int(evalsha))


@dataclass
class Run:
    rate: float
    enabled: bool
    min_count: int
    result: dict[str, Any] = field(default_factory=dict)


def warm_cache(work: Path, redis_url: str, menus: Path, policy: Path) -> Path:
    """A prompt cache holding the hotline and the incident offer's fixed texts (never an incident's)."""
    one = Instance("warm", work / "warm")
    one.start(redis_url, menus, work / "none", incidents=True, policy=policy)
    try:
        one.wait_ready()
        time.sleep(3.0)  # the detector renders the fixed texts on its first look
    finally:
        one.stop()
    return one.folder / "prompts"


def sitting(run: Run, args: argparse.Namespace, work: Path, redis: Any, client: Any, cache: Path,
            menus: Path) -> None:
    client.flushall()
    policy = policy_file(work, run.min_count)
    servers = [Instance(f"i{k}", work / f"i{k}") for k in range(args.instances)]
    for s in servers:
        s.start(redis.url, menus, cache, incidents=run.enabled, policy=policy)
    try:
        for s in servers:
            s.wait_ready()
        time.sleep(1.0)  # the detectors' first look, the lease taken
        logs0 = [len(s.log_text()) for s in servers]
        cpu0, redis0, host0, load0 = [cpu_seconds(s.pid) for s in servers], redis_figures(client), host_cpu(), \
            os.getloadavg()[0]
        wall0 = time.monotonic()
        spec = {"ports": [s.agi_port for s in servers], "rate": run.rate, "seconds": args.seconds,
                "probe_rate": args.probe_rate if run.min_count < NO_INCIDENT else 0.0, "tail": 1.0,
                "redis": redis.url, "min_count": run.min_count, "bucket": yaml.safe_load(policy.read_text())["bucket"]}
        out = subprocess.run([sys.executable, __file__, "--callers", json.dumps(spec)], capture_output=True,
                             check=True, cwd=REPO)
        wall = time.monotonic() - wall0
        cpu1, redis1, host1 = [cpu_seconds(s.pid) for s in servers], redis_figures(client), host_cpu()
        res = json.loads(out.stdout)
        res.update(wall=wall, server_cpu=[b - a for a, b in zip(cpu0, cpu1, strict=True)],
                   redis_cpu=redis1[0] - redis0[0], redis_cmds=redis1[1] - redis0[1], evalsha=redis1[2] - redis0[2],
                   host_busy=(host1[0] - host0[0]) / max(1, host1[1] - host0[1]), load=(load0, os.getloadavg()[0]),
                   incidents=client.zcard(Keys("ivr").incidents_all()),
                   slow_lookups=[s.log_text()[n:].count("caller lookup took longer") for s, n in
                                 zip(servers, logs0, strict=True)])
        ids = client.zrange(Keys("ivr").incidents_all(), 0, 0)
        raw = client.get(Keys("ivr").incident(ids[0].decode())) if ids else None
        res["opened_at"] = json.loads(raw)["opened_at"] + res["mono_minus_wall"] if raw else float("nan")
        run.result = res
    finally:
        for s in servers:
            s.stop()


def detection_figures(r: dict[str, Any], min_count: int, instances: int) -> dict[str, Any]:
    base = r["baseline"]
    done = [c for c in r["complaints"] if not c[4]]
    counted = sorted(c[3] for c in done if c[2] == base[c[0]])  # heard the menu: a complaint
    ended = counted[min_count - 1] if len(counted) >= min_count else float("nan")
    nth = r.get("reached", float("nan"))  # the counters held min_count (Redis, polled every 5 ms)
    first = {}
    for k, at, prompt, _, _ in sorted(done, key=lambda c: c[1]):
        if prompt != base[k] and k not in first:
            first[k] = at
    lat = [(first[k] - nth) * 1000 if k in first else float("nan") for k in range(instances)]
    starts = sorted(c[3] for c in r["complaints"])
    per_instance = [sum(1 for c in r["complaints"] if c[0] == k) + sum(1 for p in r["probes"] if p[0] == k)
                    for k in range(instances)]
    return {"lat": lat, "first": min(lat, default=float("nan")), "all": max(lat, default=float("nan")),
            "detect": (r.get("opened_at", float("nan")) - nth) * 1000, "ended_ms": (ended - nth) * 1000,
            "beijing": sum(1 for p in r["probes"] if not p[2] and p[1] != base[p[0]]), "probes": len(r["probes"]),
            "done_rate": len(done) / max(1e-9, starts[-1] - starts[0]) if len(starts) > 1 else 0.0,
            "errors": len(r["complaints"]) - len(done) + sum(1 for p in r["probes"] if p[2]),
            "cpu_ms": [1000 * c / max(1, n) for c, n in zip(r["server_cpu"], per_instance, strict=True)],
            "calls": sum(per_instance)}


def fmt(v: float, spec: str = ".0f") -> str:
    return "–" if v != v else format(v, spec)


def row(*cells: object, width: int = 11) -> str:
    first, *rest = (str(c) for c in cells)
    return " | ".join([f"{first:<16}", *(f"{c:>{width}}" for c in rest)])


def print_detection(runs: Sequence[Run], args: argparse.Namespace) -> None:
    n = args.instances
    print(f"\nDetection latency: {n} ivrserver processes + 1 caller process + Redis on {os.cpu_count()} shared "
          f"cores; min_count {runs[0].min_count}, detector interval as shipped; {args.seconds:g} s of complaints "
          f"per run, Beijing probes {args.probe_rate:g}/s per instance; latency = the counters in Redis hold min_count "
          "→ first caller given the announcement, per instance (ms); '→ opened' = the incident's opened_at; "
          "'Nth ended' = when the caller saw the min_count-th complaint call end")
    print(row("asked calls/s", "done/s", "incidents", "Nth ended ms", "→ opened ms",
              *(f"→ i{k} ms" for k in range(n)), "→ all ms", "Beijing got", "errors", "slow lookups",
              *(f"i{k} CPU ms" for k in range(n)), "Redis ms", "callers ms",
              "start lag p99", "host busy", "load 1m"))
    for run in runs:
        r, f = run.result, detection_figures(run.result, run.min_count, n)
        print(row(f"{run.rate:g}", f"{f['done_rate']:.0f}", r["incidents"], fmt(f["ended_ms"]),
                  fmt(f["detect"]), *(fmt(x) for x in f["lat"]), fmt(f["all"]), f"{f['beijing']}/{f['probes']}",
                  f["errors"], sum(r["slow_lookups"]),
                  *(f"{x:.2f}" for x in f["cpu_ms"]), f"{1000 * r['redis_cpu'] / max(1, f['calls']):.3f}",
                  f"{1000 * r['cpu'] / max(1, f['calls']):.2f}",
                  f"{1000 * percentile(r['lags'], 99):.0f} ms", f"{100 * r['host_busy']:.0f} %",
                  f"{r['load'][0]:.1f}→{r['load'][1]:.1f}"))
    for rate in sorted({r.rate for r in runs}):
        alls = [detection_figures(r.result, r.min_count, n)["all"] for r in runs if r.rate == rate]
        alls = [a for a in alls if a == a]
        if alls:
            print(f"  {rate:g} calls/s: → all instances median {statistics.median(alls):.0f} ms, "
                  f"worst {max(alls):.0f} ms over {len(alls)} runs")


def print_cost(runs: Sequence[Run], args: argparse.Namespace) -> None:
    n = args.instances
    print(f"\nCounting cost: {args.cost_rate:g} complaint calls/s for {args.seconds:g} s over {n} instances, no "
          "incident (min_count out of reach), incidents.enabled alternating in one sitting")
    print(row("incidents", "calls", *(f"i{k} CPU ms" for k in range(n)), "mean CPU ms", "Redis ms", "Redis cmds",
              "EVALSHA", "host busy", "load 1m"))
    by: dict[bool, list[float]] = {False: [], True: []}
    for run in runs:
        r, f = run.result, detection_figures(run.result, 1, n)
        mean = statistics.fmean(f["cpu_ms"])
        by[run.enabled].append(mean)
        print(row("on" if run.enabled else "off", f["calls"], *(f"{x:.2f}" for x in f["cpu_ms"]), f"{mean:.2f}",
                  f"{1000 * r['redis_cpu'] / max(1, f['calls']):.3f}", f"{r['redis_cmds'] / max(1, f['calls']):.2f}",
                  f"{r['evalsha'] / max(1, f['calls']):.2f}", f"{100 * r['host_busy']:.0f} %",
                  f"{r['load'][0]:.1f}→{r['load'][1]:.1f}"))
    if by[False] and by[True]:
        off, on = statistics.median(by[False]), statistics.median(by[True])
        print(f"  median server CPU per call: off {off:.2f} ms, on {on:.2f} ms ({on - off:+.2f} ms, "
              f"{100 * (on - off) / off:+.1f} %)")


def orchestrate(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="incident-bench-"))
    detection: list[Run] = []
    cost: list[Run] = []
    try:
        menus = hotline_without_hours(work / "menus")
        import redis as sync_redis

        with local_redis() as redis:
            client = sync_redis.Redis.from_url(redis.url)
            print(f"== warming a prompt cache (load average {os.getloadavg()[0]:.1f}) ...", flush=True)
            cache = warm_cache(work, redis.url, menus, policy_file(work, NO_INCIDENT))
            plan = [Run(rate, True, args.min_count) for rate in args.rates for _ in range(args.repeat)]
            plan += [Run(args.cost_rate, enabled, NO_INCIDENT)
                     for i in range(args.cost_pairs) for enabled in ((False, True) if i % 2 == 0 else (True, False))]
            for run in plan:
                what = "detection" if run.min_count < NO_INCIDENT else \
                    f"cost, incidents {'on' if run.enabled else 'off'}"
                print(f"== {what}: {run.rate:g} complaint calls/s ...", flush=True)
                sitting(run, args, work, redis, client, cache, menus)
                (detection if run.min_count < NO_INCIDENT else cost).append(run)
                if run.min_count < NO_INCIDENT:
                    f = detection_figures(run.result, run.min_count, args.instances)
                    print(f"   done {f['done_rate']:.0f}/s, incidents {run.result['incidents']}, opened after "
                          f"{fmt(f['detect'])} ms, announced per instance "
                          f"{', '.join(fmt(x) for x in f['lat'])} ms, Beijing got it {f['beijing']}", flush=True)
            client.close()
        if detection:
            print_detection(detection, args)
        if cost:
            print_cost(cost, args)
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,200", help="complaint calls per second, comma-separated")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of complaint calls per run")
    parser.add_argument("--min-count", type=int, default=200,
                        help="policy min_count (shipped: 20; 200 puts the Nth complaint 1 s into a 200/s burst)")
    parser.add_argument("--probe-rate", type=float, default=3.0, help="Beijing probe calls/s per instance")
    parser.add_argument("--repeat", type=int, default=2, help="runs per rate")
    parser.add_argument("--cost-rate", type=float, default=100.0)
    parser.add_argument("--cost-pairs", type=int, default=2, help="off/on pairs of the counting-cost runs")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs)")
    parser.add_argument("--callers", help=argparse.SUPPRESS)  # internal: run as the caller process
    args = parser.parse_args(argv)
    if args.callers:
        import uvloop

        print(json.dumps(uvloop.run(callers_main(json.loads(args.callers)))))
        return 0
    args.rates = [float(r) for r in args.rates.split(",")]
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
