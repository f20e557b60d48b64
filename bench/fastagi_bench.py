"""FastAGI load generator: the hotline menu on ivrserver vs panoramisk's FastAGI vs process-per-call AGI.

    .venv/bin/python bench/fastagi_bench.py            # quick (what `make bench` runs)
    .venv/bin/python bench/fastagi_bench.py --full     # the issue's figures (500 concurrent calls)
    .venv/bin/python bench/fastagi_bench.py --concurrency 300 --prompt-ms 800 --only ivrserver,panoramisk
    .venv/bin/python bench/fastagi_bench.py --trace    # print one call's AGI dialogue per implementation

The generator plays Asterisk: for every call it opens a FastAGI connection, sends the header block
res_agi.c sends (agi_network, agi_network_script, agi_request, agi_channel, ... agi_threadid, blank
line) and answers every command the way Asterisk does: STREAM FILE → `200 result=0 endpos=N` or
the ASCII code of a key the scripted caller pressed during the prompt, GET DATA → `200 result=<digits>`
or `200 result= (timeout)`, WAIT FOR DIGIT, SAY NUMBER/DIGITS/DATE, SET VARIABLE → `200 result=1`,
CHANNEL STATUS, GET VARIABLE, VERBOSE ...; a caller who hangs up during a prompt gets
`200 result=-1 endpos=N` then the out-of-band `HANGUP`, and every later command that Asterisk does
not run on a dead channel gets 511. Like Asterisk it keeps the connection until the AGI side
closes it (after IVR_ACTION is set, or after the hang-up).

Scripted callers (the same seeded list for every implementation) walk the hotline:
  * 60%: keys 3 then 1 — "report a fault" → queue `faults` (IVR_ACTION=queue, IVR_QUEUE=faults);
  * 40%: key 1 from a known number — the balance is read out (SAY NUMBER must carry the caller's
    seeded balance), then the caller hangs up during the next menu.
Each caller listens to 0-3 prompts before pressing (or waits for WAIT FOR DIGIT).

Implementations, each in its OWN process (so its RSS is its own), on the same private Redis:
  ivrserver   `python -m ivrserver run -c <generated yaml>`: the real IvrServer with the real hotline
              handler (Redis snapshot, routing, menu engine, path recording, call context, contact
              history). menus.dir is a copy of menus/hotline.yaml without business hours; AMI points
              at a closed port (the server retries in the background, as it would with Asterisk down).
  panoramisk  panoramisk 1.4 `panoramisk.fast_agi.Application` + an async handler running the same
              menu walk (one Redis lookup of the caller's balance; same commands in the same order).
  pyst2       process per call: a bridge accepts each FastAGI connection and fork/execs
              `python bench/pyst2_style_agi.py` with the socket as its stdin/stdout — the way Asterisk
              runs a classic AGI (pipes) — which uses pyst2 0.5.1's `asterisk.agi.AGI`.

Two phases per implementation:
  paced      `--concurrency` calls in flight, every prompt "plays" for prompt-ms (±50%, shorter when
             the caller presses during it): per-command latency (generator side: from writing a
             reply, or the header block, to receiving the next command) and memory per concurrent
             call (peak RSS during the phase minus RSS after warm-up, divided by the concurrency).
  saturated  the same concurrency with zero prompt time: calls/s (how many calls the
             implementation completes when it is the bottleneck).
No assertions: the numbers depend on the machine (and on whatever else runs on it).
Targets (issue 4): ivrserver p99 < 1 ms at 500 concurrent calls, < 100 KB per concurrent call.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchlib import free_port, local_redis, percentile  # noqa: E402

PREFIX = "ivr"
TARGET_P99_MS = 1.0
TARGET_KB_PER_CALL = 100.0
DEAD_SAFE = {"EXEC", "GET VARIABLE", "SET VARIABLE", "NOOP", "VERBOSE", "DATABASE GET", "DATABASE PUT",
             "DATABASE DEL", "GET FULL VARIABLE"}
MEDIA = {"STREAM FILE", "CONTROL STREAM FILE", "GET DATA", "WAIT FOR DIGIT", "SAY NUMBER", "SAY DIGITS",
         "SAY DATE", "SAY ALPHA", "GET OPTION"}
VERBS = sorted({*DEAD_SAFE, *MEDIA, "ANSWER", "HANGUP", "CHANNEL STATUS", "SET MUSIC", "SET CONTEXT",
                "SET EXTENSION", "SET PRIORITY", "SET CALLERID", "RECORD FILE", "GOSUB"},
               key=lambda v: -v.count(" "))


# ------------------------------------------------------------------------------------ utilities


# --pin: the system under test (server, its Redis, pyst2's AGI processes) on some CPUs, the load
# generator on the others, as if it ran on its own machine (the way load is usually generated).
SUT_CPUS: set[int] = set()


def pin_sut() -> None:
    """preexec_fn of every process of the system under test (children inherit the affinity)."""
    if SUT_CPUS:
        os.sched_setaffinity(0, SUT_CPUS)


def plan_pinning(mode: str) -> str:
    """Split the CPUs between the system under test and this generator; a line for the table."""
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "off" or len(cpus) < 2:
        return "not pinned: generator, servers and Redis share every CPU"
    generator = {cpus[-1]}
    SUT_CPUS.clear()
    SUT_CPUS.update(cpus[:-1])
    os.sched_setaffinity(0, generator)
    return (f"pinned: server + Redis on CPU {','.join(map(str, sorted(SUT_CPUS)))}, "
            f"the generator on CPU {cpus[-1]} (--pin off to share)")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS etc. of a process, in KB ({} when it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def loadavg() -> str:
    """The 1-minute load average."""
    return Path("/proc/loadavg").read_text().split()[0]


def rss_kb(pid: int) -> int:
    return proc_status(pid).get("VmRSS", 0)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """utime + stime of a process (+ cutime + cstime: its waited-for children), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def hotline_without_hours(directory: Path) -> Path:
    """menus/hotline.yaml without business hours (entry: main, no after_hours) in `directory`."""
    data = yaml.safe_load((REPO / "menus" / "hotline.yaml").read_text())
    data.pop("hours", None)
    data["entry"] = {"open": "main"}
    for node in ("after_hours", "closed_language"):  # the closed menu and its language choice
        data["nodes"].pop(node, None)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hotline.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return directory


def redis_commandstats(url: str) -> collections.Counter[str]:
    """Redis INFO commandstats: calls per command since the server started."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return collections.Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


# ---------------------------------------------------------------------------------- the callers


@dataclass(frozen=True)
class Customer:
    number: str
    balance: int


@dataclass(frozen=True)
class CallScript:
    index: int
    number: str
    keys: tuple[str, ...]        # one key per menu level
    patience: tuple[int, ...]    # interruptible prompts heard in full before pressing keys[i]
    hangup_after: int | None     # after the last key: media commands heard before hanging up
    expect: str                  # "queue:faults" or "balance:<n>"


def make_customers(n: int = 200) -> list[Customer]:
    rng = random.Random(7)
    return [Customer(number=f"1555300{i:04d}", balance=rng.randrange(0, 5000)) for i in range(n)]


def make_scripts(customers: Sequence[Customer], seed: int = 42) -> Iterator[CallScript]:
    """An endless, seeded stream of callers: the same for every implementation."""
    rng = random.Random(seed)
    index = 0
    while True:
        who = rng.choice(customers)
        patience = lambda: rng.choice((0, 0, 1, 2, 3, 9))  # noqa: E731 - 9: waits for WAIT FOR DIGIT
        if rng.random() < 0.6:
            yield CallScript(index, who.number, ("3", "1"), (patience(), patience()), None, "queue:faults")
        else:
            yield CallScript(index, who.number, ("1",), (patience(),), rng.randrange(0, 4), f"balance:{who.balance}")
        index += 1


def agi_split(line: str) -> list[str]:
    """Split a command line as res_agi.c does: whitespace separates, '"' toggles, '\\' escapes."""
    out: list[str] = []
    cur: list[str] = []
    quoted = escaped = started = False
    for ch in line:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = started = True
        elif ch == '"':
            quoted = not quoted
            started = True
        elif ch in " \t" and not quoted:
            if started:
                out.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        out.append("".join(cur))
    return out


@dataclass
class Stats:
    measure_from: float = 0.0                               # perf_counter(): latencies count from here
    latencies: list[float] = field(default_factory=list)   # seconds, reply written → next command
    first: list[float] = field(default_factory=list)       # header sent → first command
    # the same intervals ending at the kernel's receive timestamp of the command (SO_TIMESTAMPNS)
    # instead of when the generator's event loop got round to it: the server's latency without
    # the Python generator's own queueing (Asterisk runs a C thread per channel)
    wire: list[float] = field(default_factory=list)
    wire_first: list[float] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)  # monotonic time of each good call's end
    commands: int = 0
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    active: int = 0
    by_prev: collections.defaultdict[str, list[float]] = field(
        default_factory=lambda: collections.defaultdict(list))  # latency by the command answered before


_IDS = iter(range(1, 10**9))


class AgiCall(asyncio.Protocol):
    """One call as Asterisk's res_agi sees it: header block, then one reply per command."""

    def __init__(self, script: CallScript, stats: Stats, prompt_s: float, done: asyncio.Future[None],
                 trace: list[str] | None = None) -> None:
        self.script = script
        self.stats = stats
        self.prompt_s = prompt_s
        self.done = done
        self.trace = trace
        self.rng = random.Random(script.index)
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.buf = b""
        self.sent_at: float | None = None
        self.sent_wall = 0.0  # time.time() of the same write, to compare with kernel receive stamps
        self.rx_stamp: float | None = None
        self.first = True
        self.prev = "(header)"
        self.pending: asyncio.TimerHandle | None = None
        self.key = 0
        self.heard = 0           # interruptible prompts heard in full since the last key
        self.after_keys = 0      # media commands since the last key
        self.hungup = False
        self.vars: dict[str, str] = {}
        self.said: list[str] = []
        self.error = ""

    # -- transport -------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport  # a StampedTransport (write / abort / is_closing)
        n = next(_IDS)
        header = (
            "agi_network: yes\n"
            "agi_network_script: hotline\n"
            "agi_request: agi://127.0.0.1/hotline\n"
            f"agi_channel: PJSIP/callers-{n:08x}\n"
            "agi_language: en\n"
            "agi_type: PJSIP\n"
            f"agi_uniqueid: 1760000000.{n}\n"
            "agi_version: 22.5.2\n"
            f"agi_callerid: {self.script.number}\n"
            "agi_calleridname: unknown\n"
            "agi_callingpres: 0\n"
            "agi_callingani2: 0\n"
            "agi_callington: 0\n"
            "agi_callingtns: 0\n"
            "agi_dnid: 1860\n"
            "agi_rdnis: unknown\n"
            "agi_context: ivrserver-inbound\n"
            "agi_extension: 1860\n"
            "agi_priority: 5\n"
            "agi_enhanced: 0.0\n"
            "agi_accountcode: \n"
            f"agi_threadid: {140000000000 + n}\n"
            "\n")
        transport.write(header.encode())
        self.sent_at = time.perf_counter()
        self.sent_wall = time.time()

    def data_received(self, data: bytes, rx_stamp: float | None = None) -> None:
        self.rx_stamp = rx_stamp
        self.buf += data
        while b"\n" in self.buf:
            raw, self.buf = self.buf.split(b"\n", 1)
            self.on_command(raw.decode(errors="replace").rstrip("\r"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending is not None:
            self.pending.cancel()
        if not self.done.done():
            self.done.set_result(None)

    def fail(self, why: str) -> None:
        if not self.error:
            self.error = why
        if self.transport is not None:
            self.transport.abort()

    # -- commands --------------------------------------------------------------------------
    def on_command(self, line: str) -> None:
        now = time.perf_counter()
        if self.pending is not None:
            self.fail("second command while one is running")
            return
        if self.sent_at is not None and self.sent_at >= self.stats.measure_from:
            (self.stats.first if self.first else self.stats.latencies).append(now - self.sent_at)
            self.stats.by_prev[self.prev].append(now - self.sent_at)
            if self.rx_stamp is not None:
                (self.stats.wire_first if self.first else self.stats.wire).append(
                    max(0.0, self.rx_stamp - self.sent_wall))
            self.sent_at = None
        self.first = False
        self.stats.commands += 1
        if self.trace is not None:
            self.trace.append(f">> {line}")
        reply, delay = self.respond(line)
        self.prev = " ".join(line.split()[:2]).upper()
        if delay <= 0:
            self.send(reply)
        else:
            self.pending = self.loop.call_later(delay, self.send, reply)

    def send(self, reply: str) -> None:
        self.pending = None
        if self.trace is not None:
            self.trace.append(f"<< {reply.rstrip()}")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply.encode())
            self.sent_at = time.perf_counter()
            self.sent_wall = time.time()

    def play_time(self, fraction: float = 1.0) -> float:
        return self.prompt_s * self.rng.uniform(0.5, 1.5) * fraction if self.prompt_s > 0 else 0.0

    def next_key(self) -> str | None:
        return self.script.keys[self.key] if self.key < len(self.script.keys) else None

    def hangup_now(self) -> bool:
        if self.next_key() is not None or self.script.hangup_after is None:
            return False
        if self.script.expect.startswith("balance") and not self.said:
            return False  # hangs up only after hearing the balance
        self.after_keys += 1
        return self.after_keys > self.script.hangup_after

    def respond(self, line: str) -> tuple[str, float]:
        args = agi_split(line)
        upper = [a.upper() for a in args]
        verb = next((v for v in VERBS if upper[:v.count(" ") + 1] == v.split()), "")
        rest = args[verb.count(" ") + 1:] if verb else []
        if not verb:
            return "510 Invalid or unknown command\n", 0.0
        if self.hungup and verb not in DEAD_SAFE:
            return "511 Command Not Permitted on a dead channel or intercept routine\n", 0.0
        if verb in MEDIA and self.hangup_now():
            self.hungup = True
            end = "endpos=0" if "STREAM" in verb else ""
            return f"200 result=-1 {end}".rstrip() + "\nHANGUP\n", self.play_time(0.5)
        if verb in ("STREAM FILE", "CONTROL STREAM FILE", "SAY NUMBER", "SAY DIGITS", "SAY DATE", "SAY ALPHA"):
            if verb == "SAY NUMBER" and rest:
                self.said.append(rest[0])
            escape = rest[1] if len(rest) > 1 else ""
            key = self.next_key()
            endpos = f" endpos={self.rng.randrange(4000, 24000)}" if "STREAM" in verb else ""
            if key is not None and key in escape:
                if self.heard >= self.script.patience[self.key]:
                    self.key += 1
                    self.heard = 0
                    return f"200 result={ord(key)}{endpos}\n", self.play_time(self.rng.uniform(0.2, 0.9))
                self.heard += 1
            return f"200 result=0{endpos}\n", self.play_time()
        if verb == "WAIT FOR DIGIT":
            key = self.next_key()
            if key is not None:
                self.key += 1
                self.heard = 0
                return f"200 result={ord(key)}\n", self.play_time(0.3)
            return "200 result=0\n", self.play_time()
        if verb == "GET DATA":
            key = self.next_key()
            if key is not None:
                self.key += 1
                return f"200 result={key}\n", self.play_time()
            return "200 result= (timeout)\n", self.play_time()
        if verb == "GET OPTION":
            return "200 result=0 endpos=8000\n", self.play_time()
        if verb == "SET VARIABLE":
            if len(rest) >= 2:
                self.vars[rest[0]] = rest[1]
            return "200 result=1\n", 0.0
        if verb == "GET VARIABLE":
            value = self.vars.get(rest[0] if rest else "")
            return ("200 result=0\n" if value is None else f"200 result=1 ({value})\n"), 0.0
        if verb == "CHANNEL STATUS":
            return "200 result=6\n", 0.0
        if verb == "ANSWER":
            return "200 result=0\n", 0.0
        if verb == "HANGUP":
            self.hungup = True
            return "200 result=1\nHANGUP\n", 0.0
        if verb == "GOSUB":
            return "100 result=0 Trying...\n200 result=0 Gosub complete\n", 0.0
        return ("200 result=1\n" if verb in ("VERBOSE", "SET MUSIC") else "200 result=0\n"), 0.0

    def verdict(self) -> str:
        """'' when the call went where its script says, else why not."""
        if self.error:
            return self.error
        kind, _, value = self.script.expect.partition(":")
        if kind == "queue":
            got = (self.vars.get("IVR_ACTION"), self.vars.get("IVR_QUEUE"))
            return "" if got == ("queue", value) else f"expected queue {value}, got {got}"
        if value not in self.said:
            return f"balance {value} not said (said {self.said})"
        return "" if self.hungup else "caller never got to hang up"


_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_CMSG_SPACE = socket.CMSG_SPACE(16)


class StampedTransport:
    """The part of an asyncio transport AgiCall uses, over a socket read with recvmsg() so that each
    chunk comes with the kernel's receive timestamp (SO_TIMESTAMPNS, CLOCK_REALTIME)."""

    def __init__(self, sock: socket.socket, protocol: AgiCall) -> None:
        self.sock = sock
        self.protocol = protocol
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self.loop.add_reader(sock.fileno(), self._readable)
        protocol.connection_made(self)  # type: ignore[arg-type]

    def _readable(self) -> None:
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(65536, _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        stamp = None
        for level, kind, raw in ancdata:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(raw) >= 16:
                sec, nsec = int.from_bytes(raw[:8], "little", signed=True), int.from_bytes(raw[8:16], "little")
                stamp = sec + nsec / 1e9
        self.protocol.data_received(data, stamp)

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            sent = self.sock.send(data)
        except OSError as exc:
            self._lost(exc)
            return
        if sent < len(data):  # never seen with AGI-sized writes on loopback; be correct anyway
            self.sock.setblocking(True)
            try:
                self.sock.sendall(data[sent:])
            finally:
                self.sock.setblocking(False)

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self._lost(None)

    def _lost(self, exc: Exception | None) -> None:
        if self.closing:
            return
        self.closing = True
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.protocol.connection_lost(exc)


async def open_call(port: int, protocol: AgiCall) -> StampedTransport:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return StampedTransport(sock, protocol)


async def one_call(port: int, script: CallScript, stats: Stats, prompt_s: float, timeout: float,
                   trace: list[str] | None = None) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    stats.active += 1
    try:
        try:
            proto = AgiCall(script, stats, prompt_s, done, trace)
            transport = await asyncio.wait_for(open_call(port, proto), 10)
        except (OSError, TimeoutError) as exc:
            stats.errors[f"connect: {type(exc).__name__}"] += 1
            return
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            transport.abort()
            proto.fail("call timed out")
        why = proto.verdict()
        if why:
            stats.errors[why.split(" (")[0][:60]] += 1
        else:
            stats.ok += 1
            stats.completions.append(time.monotonic())
    finally:
        stats.active -= 1


async def run_phase(port: int, scripts: Iterator[CallScript], *, concurrency: int, duration: float,
                    prompt_s: float, ramp: float, sample: Any = None,
                    measure_after: float = 0.0) -> tuple[Stats, float, float]:
    """`concurrency` callers back to back for `duration` s (calls running at the end finish);
    latencies count from `measure_after` s on. Returns (stats, start, end) in time.monotonic()."""
    stats = Stats(measure_from=time.perf_counter() + measure_after)
    start = time.monotonic()
    deadline = start + duration
    call_timeout = 60 + prompt_s * 60

    async def slot(i: int) -> None:
        await asyncio.sleep(ramp * i / concurrency)
        while time.monotonic() < deadline:
            await one_call(port, next(scripts), stats, prompt_s, call_timeout)

    sampler = asyncio.create_task(sample(stats)) if sample is not None else None
    await asyncio.gather(*(slot(i) for i in range(concurrency)))
    end = time.monotonic()
    if sampler is not None:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return stats, start, end


# ------------------------------------------------------------------------------ implementations


class Server:
    """One implementation in its own process."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.log = workdir / f"{name}.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=log, cwd=REPO,
                                         env={**os.environ, **(self.env or {})}, preexec_fn=pin_sut)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        # Every implementation prints READY when it listens (no connect-and-close probe:
        # panoramisk 1.4 spins forever on one).
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        out = b""
        while b"READY" not in out:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{self.name} did not start:\n{self.log.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(BlockingIOError):
                out += os.read(fd, 4096)
            time.sleep(0.05)

    def memory_kb(self) -> int:
        """RSS of the server process plus, for process-per-call, every running AGI process."""
        return rss_kb(self.pid) + sum(rss_kb(c) for c in children(self.pid))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_lines(self, level: str) -> int:
        try:
            return sum(1 for line in self.log.read_text(errors="replace").splitlines() if level in line)
        except OSError:
            return 0


def ivrserver_config(workdir: Path, redis_url: str, agi_port: int, *, ami_port: int, ami_secret: str = "x",
                     asterisk_etc: str | None = None, sounds_dir: str | None = None, log_level: str = "INFO",
                     name: str = "ivrserver") -> Path:
    """A config file for `python -m ivrserver run -c` (see ivrserver/config.py)."""
    menus = hotline_without_hours(workdir / "menus")
    config: dict[str, Any] = {
        "redis": {"url": redis_url, "prefix": PREFIX},
        "ami": {"host": "127.0.0.1", "port": ami_port, "username": "ivrserver", "secret": ami_secret},
        "agi": {"host": "127.0.0.1", "port": agi_port},
        "web": {"host": "127.0.0.1", "port": free_port()},
        "menus": {"dir": str(menus), "entry": "hotline"},
        "routing": {"agents_file": str(REPO / "scripts" / "demo-agents.yaml")},
        "log": {"level": log_level, "format": "text"},
    }
    asterisk: dict[str, str] = {}
    if asterisk_etc:
        asterisk["config_dir"] = asterisk_etc
    if sounds_dir:
        asterisk["sounds_dir"] = sounds_dir
    if asterisk:
        config["asterisk"] = asterisk
    else:
        # No Asterisk here: the generator answers every STREAM FILE, so the hotline's text prompts
        # are rendered into the run's own folder (the default is under Asterisk's sounds directory).
        config["prompts"] = {"cache_dir": str(workdir / "prompts")}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# Experiments (--ivr-patch): monkeypatches applied in the benchmarked ivrserver process only, to
# measure a suggested fix without editing ivrserver. Not a product change.
IVR_PATCHES = {
    # Diagnostic: time spent in the cyclic garbage collector, per generation, written to the log at exit.
    "gc-stats": (
        "import gc as _gc, time as _tm, atexit as _ae, sys as _sys\n"
        "_gs = {}\n"
        "def _gcb(phase, info):\n"
        "    if phase == 'start':\n"
        "        _gs['t'] = _tm.perf_counter()\n"
        "    else:\n"
        "        d = _tm.perf_counter() - _gs.get('t', _tm.perf_counter()); g = info['generation']\n"
        "        n, tot, mx, c = _gs.get(g, (0, 0.0, 0.0, 0))\n"
        "        _gs[g] = (n + 1, tot + d, max(mx, d), c + info['collected'])\n"
        "_gc.callbacks.append(_gcb)\n"
        "_ae.register(lambda: print('GC-STATS ' + ' '.join("
        "f'gen{g}: {n} runs {t * 1000:.0f} ms total max {m * 1000:.1f} ms, {c} objects collected'"
        " for g, (n, t, m, c) in sorted((k, v) for k, v in _gs.items() if k != 't')), file=_sys.stderr,"
        " flush=True))\n"),
    # Collector thresholds from $GC_THRESHOLD ("700,10,10" is CPython's default) for the experiment.
    "gc-threshold": (
        "import gc as _gc3, os as _os3\n"
        "_gc3.set_threshold(*(int(x) for x in _os3.environ.get('GC_THRESHOLD', '700,10,10').split(',')))\n"),
}


def make_server(name: str, workdir: Path, redis_url: str, log_level: str, patches: Sequence[str] = ()) -> Server:
    port = free_port()
    if name == "ivrserver":
        closed = free_port()  # nothing listens there: AMI keeps reconnecting in the background
        label = name + "".join(f"+{p}" for p in patches)
        config = ivrserver_config(workdir, redis_url, port, ami_port=closed, log_level=log_level, name=label)
        wrapper = ("import sys, runpy, socket, threading, time\n"
                   f"def ready():\n"
                   f"    while True:\n"
                   f"        try:\n"
                   f"            socket.create_connection(('127.0.0.1', {port}), 0.2).close(); break\n"
                   f"        except OSError: time.sleep(0.05)\n"
                   f"    print('READY', flush=True)\n"
                   f"threading.Thread(target=ready, daemon=True).start()\n"
                   + "".join(IVR_PATCHES[p] for p in patches) +
                   f"sys.argv = ['ivrserver', '-c', {str(config)!r}, 'run']\n"
                   f"runpy.run_module('ivrserver', run_name='__main__')\n")
        return Server(label, [sys.executable, "-c", wrapper], port, workdir)
    return Server(name, [sys.executable, str(Path(__file__).resolve()), "--serve", name, "--port", str(port),
                         "--redis", redis_url], port, workdir)


# ------------------------------------------------------- the baselines' menu walk (same commands)

# The hotline nodes the scripted callers visit, as ivrserver's engine plays them (menus/hotline.yaml).
MAIN_PROMPTS = ("hello", "vm-press", "digits/1", "for", "vm-youhave", "digits/dollars")
FAULTS_PROMPTS = ("vm-press", "digits/1", "for", "telephone-number", "vm-tocallback")
AFTER_BALANCE_PROMPTS = ("vm-press", "digits/1", "to-listen-to-it", "vm-press", "digits/2", "vm-goodbye")
MENU_KEYS = "0123456789*#"  # ivrserver lets every key interrupt (an invalid one gets "invalid")


class Hangup(Exception):
    pass


async def panoramisk_hotline(request: Any, redis: Any) -> None:
    """The hotline walk on panoramisk's Request: same commands, same order as ivrserver sends."""

    async def cmd(line: str) -> str:
        result = await request.send_command(line)
        if "error" in result and result.get("error") != "AGISuccess":
            raise Hangup(str(result))
        value = str((result.get("result") or ("0",))[0])
        if value == "-1":
            raise Hangup("result=-1")
        return value

    def digit(value: str) -> str | None:
        return chr(int(value)) if value not in ("", "0") else None

    async def menu(prompts: Sequence[str], keys: str) -> str | None:
        for _ in range(3):
            for prompt in prompts:
                key = digit(await cmd(f'STREAM FILE {prompt} "{keys}"'))
                if key:
                    return key
            key = digit(await cmd("WAIT FOR DIGIT 5000"))
            if key and key in keys:
                return key
            await cmd('STREAM FILE vm-pls-try-again ""')
        return None

    number = request.headers.get("agi_callerid", "")
    ids = await redis.smembers(f"{PREFIX}:phone:{number}")
    balance = None
    if len(ids) == 1:
        raw = await redis.get(f"{PREFIX}:customer:{next(iter(ids))}")
        balance = (json.loads(raw).get("attributes") or {}).get("balance") if raw else None
    context = f"c-{random.getrandbits(64):016x}"
    try:
        await cmd(f'SET VARIABLE IVR_CONTEXT_ID "{context}"')
        await cmd('SET VARIABLE IVR_REASON "no rule matched -> menu"')
        key = await menu(MAIN_PROMPTS, MENU_KEYS)
        if key == "3":
            key = await menu(FAULTS_PROMPTS, MENU_KEYS)
            if key == "1":
                await cmd('STREAM FILE one-moment-please ""')
                for name, value in (("IVR_ACTION", "queue"), ("IVR_QUEUE", "faults"), ("IVR_PRIORITY", "2"),
                                    ("IVR_REASON", "ivr:faults:1")):
                    await cmd(f'SET VARIABLE {name} "{value}"')
                return
        elif key == "1" and balance is not None:
            await cmd('STREAM FILE vm-youhave ""')
            await cmd(f'SAY NUMBER {int(balance)} ""')
            await cmd('STREAM FILE digits/dollars ""')
            await menu(AFTER_BALANCE_PROMPTS, MENU_KEYS)
        for name, value in (("IVR_ACTION", "queue"), ("IVR_QUEUE", "general"), ("IVR_PRIORITY", "0"),
                            ("IVR_REASON", "ivr:human")):
            await cmd(f'SET VARIABLE {name} "{value}"')
    except Hangup:
        return


async def serve_panoramisk(port: int, redis_url: str) -> None:
    import redis.asyncio as aioredis
    from panoramisk.fast_agi import Application

    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    app = Application()  # inside the running loop: its __init__ calls asyncio.get_event_loop()

    async def hotline(request: Any) -> None:
        await panoramisk_hotline(request, redis)

    # add_route() wraps non-coroutine endpoints with asyncio.coroutine (removed in 3.11); an
    # `async def` endpoint skips that branch, so add_route works as is on 3.11 here.
    app.add_route("hotline", hotline)
    server = await asyncio.start_server(app.handler, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    server.close()
    await redis.aclose()


def serve_pyst2(port: int, redis_url: str) -> None:
    """Process per call: fork/exec bench/pyst2_style_agi.py with the connection as stdin/stdout."""
    script = str(BENCH / "pyst2_style_agi.py")
    env = {**os.environ, "BENCH_REDIS_URL": redis_url, "BENCH_PREFIX": PREFIX}
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.settimeout(0.2)
    running: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    print("READY", flush=True)
    while not stopping:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            conn = None
        except InterruptedError:
            continue
        if conn is not None:
            with conn:
                running.append(subprocess.Popen([sys.executable, script], stdin=conn, stdout=conn,
                                                stderr=subprocess.DEVNULL, env=env, close_fds=True))
        running = [p for p in running if p.poll() is None]
    for p in running:
        p.kill()
        p.wait()


# ----------------------------------------------------------------------------------------- main


@dataclass
class Row:
    name: str
    concurrency: int
    paced_calls_s: float
    max_calls_s: float
    p50_ms: float
    p99_ms: float
    first_p99_ms: float
    wire_p50_ms: float
    wire_p99_ms: float
    wire_first_p99_ms: float
    kb_per_call: float
    errors: int
    cmds_per_call: float
    server_cpu_ms_per_call: float
    redis_per_call: float
    samples: int
    error_kinds: dict[str, int]


async def seed(redis_url: str, customers: Sequence[Customer]) -> None:
    import redis.asyncio as aioredis

    from ivrserver.domain.model import Customer as IvrCustomer
    from ivrserver.store.customers import save_customer
    from ivrserver.store.keys import Keys

    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    keys = Keys(PREFIX)
    for i, c in enumerate(customers):
        await save_customer(redis, keys, IvrCustomer(id=f"bench-{i}", name=f"Bench Caller {i}", phones=(c.number,),
                                                     attributes={"balance": str(c.balance)}))
    await redis.aclose()


async def bench_one(server: Server, customers: Sequence[Customer], args: argparse.Namespace,
                    concurrency: int) -> Row:
    # warm-up: lazy imports, caches, Redis connection pool (not measured)
    warm = make_scripts(customers, seed=1)
    await run_phase(server.port, warm, concurrency=min(20, concurrency), duration=1.0, prompt_s=0.0, ramp=0.2)
    await asyncio.sleep(0.5)
    idle = server.memory_kb()
    peak = idle

    async def sample(_stats: Stats) -> None:
        nonlocal peak
        while True:
            await asyncio.sleep(0.25)
            peak = max(peak, await asyncio.to_thread(server.memory_kb))

    prompt_s = args.prompt_ms / 1000
    # Calls start spread over one call's length, so arrivals come at the steady-state rate
    # (concurrency / call length) instead of a burst; latency is measured after that ramp.
    ramp = args.ramp_seconds if args.ramp_seconds is not None else 8 * prompt_s
    profiler = start_profiler(server, args, ramp)
    redis0 = redis_commandstats(args.redis_url)
    cpu0 = cpu_seconds(server.pid, with_children=True)
    paced, start, end = await run_phase(server.port, make_scripts(customers), concurrency=concurrency,
                                        duration=ramp + args.paced_seconds, prompt_s=prompt_s, ramp=ramp,
                                        sample=sample, measure_after=ramp)
    cpu_paced = cpu_seconds(server.pid, with_children=True) - cpu0
    redis_paced = redis_commandstats(args.redis_url) - redis0
    redis_paced.pop("info", None)
    if profiler is not None:
        await asyncio.to_thread(report_profile, server, profiler, args)
    await asyncio.sleep(0.3)
    sat, s_start, s_end = await run_phase(server.port, make_scripts(customers, seed=43), concurrency=concurrency,
                                          duration=args.saturated_seconds, prompt_s=0.0, ramp=0.5)
    errors = collections.Counter(paced.errors) + collections.Counter(sat.errors)
    if args.by_command:
        print(f"   {server.name}: paced per-command latency by the command answered before it (ms):")
        for prev, values in sorted(paced.by_prev.items(), key=lambda kv: -percentile(kv[1], 99)):
            print(f"     after {prev:<16} n={len(values):>6}  p50 {percentile(values, 50) * 1000:8.3f}  "
                  f"p99 {percentile(values, 99) * 1000:8.3f}  max {max(values) * 1000:8.3f}")
        print(f"   {server.name}: Redis commands in the paced phase: "
              + ", ".join(f"{k} {v}" for k, v in redis_paced.most_common()))
    paced_calls = paced.ok + sum(paced.errors.values())
    lat = paced.latencies + paced.first
    return Row(
        name=server.name, concurrency=concurrency,
        paced_calls_s=paced.ok / max(1e-9, end - start),
        max_calls_s=sat.ok / max(1e-9, s_end - s_start),
        p50_ms=percentile(lat, 50) * 1000, p99_ms=percentile(lat, 99) * 1000,
        first_p99_ms=percentile(paced.first, 99) * 1000,
        wire_p50_ms=percentile(paced.wire + paced.wire_first, 50) * 1000,
        wire_p99_ms=percentile(paced.wire + paced.wire_first, 99) * 1000,
        wire_first_p99_ms=percentile(paced.wire_first, 99) * 1000,
        kb_per_call=(peak - idle) / concurrency,
        errors=sum(errors.values()),
        cmds_per_call=paced.commands / max(1, paced_calls),
        server_cpu_ms_per_call=cpu_paced * 1000 / max(1, paced_calls),
        redis_per_call=sum(redis_paced.values()) / max(1, paced_calls),
        samples=len(lat),
        error_kinds=dict(errors))


def start_profiler(server: Server, args: argparse.Namespace, ramp: float) -> subprocess.Popen[bytes] | None:
    """py-spy (pip install py-spy; or --py-spy PATH) on the server during the paced phase."""
    if not args.profile or server.name == "pyst2":
        return None
    exe = args.py_spy or shutil.which("py-spy")
    if exe is None:
        print("   --profile: py-spy not found (pip install py-spy, or --py-spy PATH)")
        return None
    out = server.log.with_suffix(".collapsed")
    return subprocess.Popen([exe, "record", "--pid", str(server.pid), "--format", "raw", "--rate", "250",
                             "--duration", str(max(1, int(ramp + args.paced_seconds))), "--nonblocking",
                             "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Where a py-spy sample's time goes: the first pattern found decides (logging and metrics win
# wherever they are called from; otherwise the outermost ivrserver component on the stack).
PROFILE_ANYWHERE = (
    ("logging", ("Logger.", "Handler.", "TextFormatter", "JsonFormatter", "(ivrserver/logs.py")),
    ("metrics (prometheus_client)", ("MetricWrapperBase", "MutexValue", "prometheus_client")),
)
PROFILE_COMPONENTS = (
    ("AMI: reader / parser (pbx/ami.py, ami_events.py)", ("(ivrserver/pbx/ami", "panoramisk/")),
    ("AMI fan-out (app.EventFanout)", ("EventFanout.run",)),
    ("AMI consumer: agent state", ("AgentStateService.run",)),
    ("AMI consumer: contact tracker", ("ContactTracker.run",)),
    ("AMI consumer: screen-pop", ("ScreenPopService.run",)),
    ("AMI consumer: callback results", ("AmiCallbackDialer.run",)),
    ("AMI consumer: queue state", ("QueueState.run",)),
    ("call: caller snapshot (Redis)", ("HotlineService._snapshot",)),
    ("call: contact tracker report (Redis)", ("HotlineService._report",)),
    ("call: routing.route", ("RoutingService.route ",)),
    ("call: read_announcement (Redis)", ("read_announcement",)),
    ("call: IVR path record (Redis)", ("RedisPathRecorder.record",)),
    ("call: call_context.save (Redis)", ("(ivrserver/store/call_context.py",)),
    ("call: AGI SET VARIABLE", ("AgiChannel.set_variable",)),
    ("call: AGI media commands", ("AgiChannel.stream_file", "AgiChannel.wait_for_digit", "AgiChannel.say_number",
                                  "AgiChannel.get_data", "AgiChannel._failed")),
    ("call: menu engine (pure)", ("menu_engine.py",)),
    ("call: path_dicts / dataclasses.asdict", ("path_dicts", "asdict")),
    ("call: FastAGI header read", ("FastAgiServer._read_request",)),
    ("callback scheduler poll", ("CallbackScheduler",)),
    ("menu file watch", ("MenuRegistry.watch",)),
    ("redis-py: command sent in its own task (wait_for)", ("_send_packed_command",)),
)


def profile_breakdown(path: Path, top: int = 25) -> list[str]:
    """py-spy collapsed stacks → lines 'share  component' and the top self frames."""
    comp: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines() if path.exists() else ():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        own[frames[-1].split("/")[-1]] += n
        name = next((c for c, pats in PROFILE_ANYWHERE if any(p in f for f in frames for p in pats)), None)
        if name is None:
            name = next((c for f in frames for c, pats in PROFILE_COMPONENTS if any(p in f for p in pats)), None)
        if name is None:
            if any("HotlineService.handle" in f or "FastAgiServer._serve" in f for f in frames):
                name = "call: other (handler glue, FastAGI serve loop)"
            elif any("EpollSelector.select" in f for f in frames[-2:]):
                name = "idle (epoll wait)"
            else:
                name = "asyncio loop, transports, sockets (not attributable)"
        comp[name] += n
    if not total:
        return ["no samples"]
    out = [f"{total} samples; share of samples by component:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in comp.most_common()]
    out.append("top frames by own time:")
    out += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    return out


def report_profile(server: Server, profiler: subprocess.Popen[bytes], args: argparse.Namespace) -> None:
    profiler.wait(args.paced_seconds + 60)
    print(f"   profile of {server.name} during the paced phase (py-spy --format raw):")
    for line in profile_breakdown(server.log.with_suffix(".collapsed"), args.profile_top):
        print("     " + line)


def print_table(rows: Sequence[Row], args: argparse.Namespace, load: tuple[str, str]) -> None:
    print()
    print(f"FastAGI hotline benchmark ({'full' if args.full else 'quick'}) — paced: prompts {args.prompt_ms} ms "
          f"±50%, calls started over {args.ramp_label}, then {args.paced_seconds:g} s measured; saturated: no "
          f"prompt time, {args.saturated_seconds:g} s.")
    print(f"Machine: {os.cpu_count()} cores shared with other engineers' runs (load average {load[0]} at start, "
          f"{load[1]} at end); {args.pinning}.")
    width = max(14, *(len(r.name) for r in rows))
    head = (f"{'implementation':<{width}} | {'concurrent':>10} | {'calls/s':>7} | {'wire p50':>8} | "
            f"{'wire p99':>8} | {'1st wire p99':>12} || {'loop p50':>8} | {'loop p99':>8} | {'1st loop p99':>12} | "
            f"{'MB per call':>11} | {'errors':>6} | {'paced calls/s':>13} | "
            f"{'cmds/call':>9} | {'CPU ms/call':>11} | {'Redis/call':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.name:<{width}} | {r.concurrency:>10} | {r.max_calls_s:7.0f} | {r.wire_p50_ms:8.3f} | "
              f"{r.wire_p99_ms:8.3f} | {r.wire_first_p99_ms:12.3f} || {r.p50_ms:8.3f} | {r.p99_ms:8.3f} | "
              f"{r.first_p99_ms:12.3f} | {r.kb_per_call / 1024:11.3f} | {r.errors:>6} | {r.paced_calls_s:13.1f} | "
              f"{r.cmds_per_call:9.1f} | {r.server_cpu_ms_per_call:11.2f} | {r.redis_per_call:10.1f}")
    for r in rows:
        if r.name.startswith("ivrserver"):
            p99_ok = "MET" if r.wire_p99_ms < TARGET_P99_MS else "NOT MET"
            kb_ok = "MET" if r.kb_per_call < TARGET_KB_PER_CALL else "NOT MET"
            print(f"targets (ivrserver, {r.concurrency} concurrent calls): p99 < {TARGET_P99_MS:g} ms → "
                  f"wire {r.wire_p99_ms:.3f} ms {p99_ok} (generator loop {r.p99_ms:.3f} ms); "
                  f"< {TARGET_KB_PER_CALL:g} KB per concurrent call → {r.kb_per_call:.1f} KB {kb_ok}")
    for r in rows:
        if r.error_kinds:
            print(f"errors {r.name}: " + ", ".join(f"{k} ×{v}" for k, v in sorted(r.error_kinds.items())))
    print("calls/s: saturated phase. wire p50/p99: per-command latency in the paced phase after the ramp, from the "
          "generator writing a reply (or the header block) to the kernel's receive timestamp of the next command "
          "(SO_TIMESTAMPNS), i.e. the server's response time without the Python generator's own queueing; "
          "1st: header → first command alone. loop p50/p99: the same ending when the generator's event loop "
          "handled the command (includes the generator's queueing: an upper bound). "
          "MB per call: peak RSS during the paced phase minus idle RSS, / concurrency (pyst2: bridge + every AGI "
          "process). CPU ms/call: server process CPU (pyst2: bridge + its AGI processes) per call, paced phase. "
          "Redis/call: Redis commands per call (INFO commandstats).")


async def trace_calls(servers: Sequence[Server], customers: Sequence[Customer]) -> None:
    scripts = make_scripts(customers)
    picked = [next(scripts) for _ in range(6)]
    for script in (next(s for s in picked if s.expect.startswith("queue")),
                   next(s for s in picked if s.expect.startswith("balance"))):
        for server in servers:
            trace: list[str] = []
            stats = Stats()
            await one_call(server.port, script, stats, 0.0, 30, trace)
            print(f"--- {server.name}: caller {script.number} keys {'/'.join(script.keys)} patience {script.patience}"
                  f" hangup_after {script.hangup_after} → {'ok' if stats.ok else dict(stats.errors)}")
            print("\n".join(trace))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the issue's sizes: 500 concurrent calls everywhere")
    parser.add_argument("--concurrency", type=int, help="concurrent calls (quick 500, full 500)")
    parser.add_argument("--pyst2-concurrency", type=int,
                        help="concurrent calls for process-per-call (quick 100, full 500)")
    parser.add_argument("--prompt-ms", type=int, default=1000, help="how long one prompt plays in the paced phase")
    parser.add_argument("--ramp-seconds", type=float, help="spread the paced calls' starts over this long "
                        "(default 8 prompts: about one call)")
    parser.add_argument("--paced-seconds", type=float,
                        help="paced phase, measured part after the ramp (quick 4, full 30)")
    parser.add_argument("--saturated-seconds", type=float, help="saturated phase length (quick 4, full 15)")
    parser.add_argument("--only", default="ivrserver,panoramisk,pyst2",
                        help="comma-separated implementations; ivrserver+PATCH+PATCH for an --ivr-patch variant")
    parser.add_argument("--log-level", default="INFO", help="ivrserver log level (default INFO, as in production)")
    parser.add_argument("--ivr-patch", help="experiment: comma-separated monkeypatches of the ivrserver process "
                        f"({', '.join(IVR_PATCHES)}); measures a suggested fix, not the product")
    parser.add_argument("--trace", action="store_true", help="print one call of each kind per implementation")
    parser.add_argument("--profile", action="store_true", help="py-spy the asyncio servers during the paced phase")
    parser.add_argument("--py-spy", help="path of the py-spy executable (default: on PATH)")
    parser.add_argument("--profile-top", type=int, default=25, help="frames to print per profile table")
    parser.add_argument("--by-command", action="store_true", help="latency breakdown by the previous command")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--pin", choices=("auto", "off"), default="auto",
                        help="auto: the generator on the last CPU, the servers and Redis on the others")
    parser.add_argument("--serve", choices=("panoramisk", "pyst2"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve == "panoramisk":
        asyncio.run(serve_panoramisk(args.port, args.redis))
        return 0
    if args.serve == "pyst2":
        serve_pyst2(args.port, args.redis)
        return 0
    full = args.full
    args.concurrency = args.concurrency or 500
    args.pyst2_concurrency = args.pyst2_concurrency or (500 if full else 100)
    args.paced_seconds = args.paced_seconds or (30.0 if full else 4.0)
    args.saturated_seconds = args.saturated_seconds or (15.0 if full else 4.0)
    ramp = args.ramp_seconds if args.ramp_seconds is not None else 8 * args.prompt_ms / 1000
    args.ramp_label = f"{ramp:g} s"
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    args.pinning = plan_pinning(args.pin)
    workdir = Path(tempfile.mkdtemp(prefix="fastagi-bench-"))
    redis_stack = contextlib.ExitStack()
    redis = redis_stack.enter_context(local_redis(cpus=SUT_CPUS))  # with the server under --pin
    args.redis_url = redis.url
    rows: list[Row] = []
    load_start = loadavg()
    customers = make_customers()
    try:
        asyncio.run(seed(redis.url, customers))
        patches = [p for p in (args.ivr_patch or "").split(",") if p]
        # "--only ivrserver,ivrserver+agi-timeout-cm" compares variants in the same run
        servers = [make_server(n.split("+")[0], workdir, redis.url, args.log_level, n.split("+")[1:] or patches)
                   for n in names]
        if args.trace:
            for s in servers:
                s.start()
            try:
                asyncio.run(trace_calls(servers, customers))
            finally:
                for s in servers:
                    s.stop()
            return 0
        for server in servers:
            concurrency = args.pyst2_concurrency if server.name == "pyst2" else args.concurrency
            print(f"== {server.name}: {concurrency} concurrent calls ...", flush=True)
            server.start()
            try:
                rows.append(asyncio.run(bench_one(server, customers, args, concurrency)))
            finally:
                server.stop()
            if server.name.startswith("ivrserver"):
                for line in server.log.read_text(errors="replace").splitlines():
                    if line.startswith("GC-STATS"):
                        print("   " + line)
                print(f"   ivrserver log: {server.log_lines(' ERROR ')} ERROR lines, "
                      f"{server.log_lines('WARNING')} WARNING lines", flush=True)
        print_table(rows, args, (load_start, loadavg()))
    finally:
        redis_stack.close()
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
