"""A local telephony stack for `make run` and the integration tests: Asterisk 22, Redis, SIPp.

Pure stdlib + asyncio (no blocking call inside a coroutine). Everything listens on 127.0.0.1.

- `StackPorts`: every port of one stack; `.default()` for `make run`, `.free()` for tests.
- `render_asterisk()`: renders asterisk-config/ templates + dialplans/ivrserver.conf into an
  instance directory, so several Asterisk instances coexist (each has its own etc, run, log ...).
- `LocalAsterisk`: runs the host's /usr/sbin/asterisk if there is one, else the Debian-unstable
  chroot built by `scripts/asterisk-chroot ensure` (Debian 12 has no asterisk package).
- `LocalRedis`: a private redis-server, or the one already listening when asked to reuse it.
- `start_sipp()` / `run_sipp()`: SIPp (Debian's sip-tester) with tests/sipp/ scenarios.
- `stack()`: `async with stack() as (asterisk, redis):` — what `make run` and other tools use.

CLI: `python -m ivrserver.devstack up` (alias `run`) keeps Redis + Asterisk up in the foreground
until Ctrl-C/SIGTERM; `python -m ivrserver.devstack call --digits 1,2` places one SIPp call to
the hotline and exits with SIPp's status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ivrserver import config
from ivrserver.config import Settings

REPO_DIR = Path(__file__).resolve().parent.parent
CONFIG_TEMPLATES = REPO_DIR / "asterisk-config"
DIALPLAN = REPO_DIR / "dialplans" / "ivrserver.conf"
SIPP_DIR = REPO_DIR / "tests" / "sipp"
CHROOT_SCRIPT = REPO_DIR / "scripts" / "asterisk-chroot"
HOST_ASTERISK = Path("/usr/sbin/asterisk")

HOTLINE = "1860"
AGENT_NUMBERS = tuple(range(1001, 1011))
DEFAULT_AMI_SECRET = "ivrserver"

_PLACEHOLDER = re.compile(r"\{\{([a-z0-9_]+)\}\}")
# An AMI secret is written into manager.conf: no comment char, no whitespace, printable ASCII.
_SAFE_SECRET = re.compile(r"[!-:<-~]{1,128}")
# Ports for StackPorts.free() blocks and for SIPp media sockets: above the RTP range
# (10000-29999), below the kernel's ephemeral range (32768+) so that outgoing sockets of other
# programs do not take them; two separate ranges so a SIPp media socket never takes the port of
# another stack's (not yet started) phone.
_FREE_BLOCK_RANGE = (30000, 32000)
_MEDIA_PORT_RANGE = (32000, 32760)


class DevStackError(RuntimeError):
    """A component of the local stack did not start, stop or answer as expected."""


# --------------------------------------------------------------------------------------- ports


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing holds `port` on `host`, for UDP and for TCP."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


@dataclass(frozen=True)
class StackPorts:
    """Every address of one stack (all on 127.0.0.1 except agi_host, which is the FastAGI target)."""

    sip_port: int            # Asterisk's pjsip UDP transport
    caller_port: int         # SIPp caller, endpoint `callers` (RFC 4733 DTMF)
    caller_info_port: int    # SIPp caller, endpoint `callers-info` (SIP INFO DTMF)
    agent_base_port: int     # agent1001 listens here, agent1002 on +1 ... agent1010 on +9
    customer_port: int       # SIPp UAS playing the customers' phones (trunk `customers`)
    ami_port: int            # Asterisk Manager Interface (TCP)
    agi_host: str            # where Asterisk connects for FastAGI (ivrserver)
    agi_port: int
    rtp_start: int = 10000
    rtp_end: int = 29999

    @classmethod
    def default(cls) -> StackPorts:
        """The fixed ports of `make run` (SIP 5060, AMI 5038, FastAGI 4573)."""
        return cls(sip_port=5060, caller_port=5061, caller_info_port=5062, agent_base_port=5071,
                   customer_port=5090, ami_port=5038, agi_host="127.0.0.1", agi_port=4573)

    @classmethod
    def free(cls, *, attempts: int = 200) -> StackPorts:
        """16 consecutive ports, all free for UDP and TCP right now, chosen at random.

        Layout from the block's base b: sip b, callers b+1, callers-info b+2, customer b+3,
        AMI b+4, FastAGI b+5, agents b+6..b+15.
        """
        low, high = _FREE_BLOCK_RANGE
        for _ in range(attempts):
            base = random.randrange(low, high - 16)
            if all(_port_free(p) for p in range(base, base + 16)):
                return cls(sip_port=base, caller_port=base + 1, caller_info_port=base + 2,
                           customer_port=base + 3, ami_port=base + 4, agi_host="127.0.0.1",
                           agi_port=base + 5, agent_base_port=base + 6)
        raise DevStackError(f"no block of 16 free ports found in {low}-{high}")

    def agent_port(self, agent: int | str) -> int:
        """Port of an agent phone: `agent_port(1003)` or `agent_port("agent1003")`."""
        number = int(str(agent).removeprefix("PJSIP/").removeprefix("agent"))
        if number not in AGENT_NUMBERS:
            raise ValueError(f"no agent {agent!r}: agents are agent1001..agent1010")
        return self.agent_base_port + number - AGENT_NUMBERS[0]


# ------------------------------------------------------------------------------------ rendering


def _module_dir(root: Path) -> str:
    """Asterisk's module directory as seen from inside `root` (multiarch: /usr/lib/<triplet>/...)."""
    found = sorted(root.glob("usr/lib/*/asterisk/modules"))
    if found:
        return "/" + str(found[0].relative_to(root))
    return "/usr/lib/asterisk/modules"


def render_template(text: str, values: Mapping[str, object], name: str = "<template>") -> str:
    """Replace every `{{name}}`; a placeholder without a value is an error (never left as is).

    `{{…}}` is used because `${…}` is Asterisk's own variable syntax.
    """

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise DevStackError(f"{name}: no value for placeholder {{{{{key}}}}}")
        return str(values[key])

    return _PLACEHOLDER.sub(substitute, text)


def render_asterisk(instance_dir: Path, ports: StackPorts, ami_secret: str, *,
                    root: Path = Path("/"), hotline: str = HOTLINE) -> Path:
    """Write a complete Asterisk configuration into `instance_dir`; return its asterisk.conf.

    `instance_dir` must lie inside `root` (the chroot, or / for a host install): the paths
    written into the files are those Asterisk sees, i.e. relative to `root`.
    """
    if not _SAFE_SECRET.fullmatch(ami_secret):
        raise DevStackError("AMI secret must be 1-128 printable ASCII characters without ';' or spaces")
    if not hotline.isdigit():
        raise DevStackError(f"hotline must be digits, got {hotline!r}")
    instance_dir = instance_dir.resolve()
    root = root.resolve()
    try:
        inside = "/" + str(instance_dir.relative_to(root)).lstrip("/")
    except ValueError as exc:
        raise DevStackError(f"{instance_dir} is not inside the Asterisk root {root}") from exc
    for sub in ("etc", "run", "log", "spool", "db", "cache", "lib"):
        (instance_dir / sub).mkdir(parents=True, exist_ok=True)
    values: dict[str, object] = {
        "instance": inside,
        "moddir": _module_dir(root),
        "sip_port": ports.sip_port,
        "caller_port": ports.caller_port,
        "caller_info_port": ports.caller_info_port,
        "customer_port": ports.customer_port,
        "ami_port": ports.ami_port,
        "ami_secret": ami_secret,
        "agi_host": ports.agi_host,
        "agi_port": ports.agi_port,
        "rtp_start": ports.rtp_start,
        "rtp_end": ports.rtp_end,
        "hotline": hotline,
    }
    for number in AGENT_NUMBERS:
        values[f"agent{number}_port"] = ports.agent_port(number)
    etc = instance_dir / "etc"
    for template in sorted(CONFIG_TEMPLATES.glob("*.conf")):
        text = render_template(template.read_text(), values, template.name)
        (etc / template.name).write_text(text)
    shutil.copyfile(DIALPLAN, etc / DIALPLAN.name)
    return etc / "asterisk.conf"


# ------------------------------------------------------------------------------------- asterisk


async def _run(argv: Sequence[str], *, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run a command to completion without blocking the loop; kill it on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DevStackError(f"timed out after {timeout:.0f} s: {' '.join(argv)}") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def asterisk_root() -> Path:
    """`/` when Asterisk is installed on the host, else the chroot (built or restored on demand)."""
    if await asyncio.to_thread(HOST_ASTERISK.exists):
        return Path("/")
    code, out, err = await _run([str(CHROOT_SCRIPT), "ensure"], timeout=900)
    if code != 0 or not out.strip():
        raise DevStackError(f"scripts/asterisk-chroot ensure failed ({code}): {err.strip()}")
    root = Path(out.strip().splitlines()[-1])
    if not (root / "usr/sbin/asterisk").exists():
        raise DevStackError(f"no /usr/sbin/asterisk inside {root}")
    return root


class LocalAsterisk:
    """One Asterisk process with its own rendered configuration.

    ```
    asterisk = LocalAsterisk(StackPorts.free())
    await asterisk.start()          # renders, starts, waits for FullyBooted
    print(await asterisk.cli("queue show ivr-vip"))
    await asterisk.stop()           # `core stop now`, kill after a grace period
    asterisk.remove()               # delete the instance directory
    ```
    """

    def __init__(self, ports: StackPorts, *, ami_secret: str | None = None, name: str | None = None,
                 hotline: str = HOTLINE, root: Path | None = None) -> None:
        self.ports = ports
        self.ami_secret = ami_secret or secrets.token_hex(12)
        self.hotline = hotline
        self.name = name or f"ast-{os.getpid()}-{secrets.token_hex(3)}"
        self.root = root
        self.instance_dir: Path | None = None
        self.boot_log = ""      # messages.log as it was right after FullyBooted
        self.boot_seconds = 0.0
        self._proc: asyncio.subprocess.Process | None = None
        self._console: Path | None = None

    # -- paths ------------------------------------------------------------------------------
    def _require_instance(self) -> Path:
        if self.instance_dir is None:
            raise DevStackError("LocalAsterisk has not been started")
        return self.instance_dir

    @property
    def etc_dir(self) -> Path:
        """Host path of the rendered configuration (e.g. for `ivrserver doctor`)."""
        return self._require_instance() / "etc"

    @property
    def logs(self) -> Path:
        """Host path of messages.log (notices, warnings, errors)."""
        return self._require_instance() / "log" / "messages.log"

    @property
    def full_log(self) -> Path:
        """Host path of full.log (+ verbose 3 and DTMF: what each call did)."""
        return self._require_instance() / "log" / "full.log"

    @property
    def sounds_dir(self) -> Path:
        assert self.root is not None
        return self.root / "usr/share/asterisk/sounds"

    def _inside(self, path: Path) -> str:
        assert self.root is not None
        return "/" + str(path.resolve().relative_to(self.root.resolve())).lstrip("/")

    def _argv(self, *args: str) -> list[str]:
        assert self.root is not None
        conf = self._inside(self.etc_dir / "asterisk.conf")
        prefix = [] if self.root == Path("/") else ["chroot", str(self.root)]
        return [*prefix, "/usr/sbin/asterisk", "-C", conf, *args]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, timeout: float = 30.0) -> None:
        """Render the configuration (first start only), start Asterisk, wait until fully booted."""
        if self.running:
            return
        if self.root is None:
            self.root = await asterisk_root()
        if self.instance_dir is None:
            self.instance_dir = self.root / "run" / "ivrserver" / self.name
            await asyncio.to_thread(self._render, self.instance_dir, self.root)
        self._console = self._require_instance() / "log" / "console.log"
        started = time.monotonic()
        with self._console.open("ab") as console:
            # -f: stay in the foreground (our child, so we own its lifetime); no -c: no console.
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv("-f"), stdin=asyncio.subprocess.DEVNULL, stdout=console, stderr=console,
                start_new_session=True)
        try:
            await self._wait_booted(started + timeout)
        except BaseException:
            await self.stop()
            raise
        self.boot_seconds = time.monotonic() - started
        self.boot_log = await asyncio.to_thread(self._read_log)

    def _render(self, instance_dir: Path, root: Path) -> None:
        if instance_dir.exists():
            shutil.rmtree(instance_dir)
        render_asterisk(instance_dir, self.ports, self.ami_secret, root=root, hotline=self.hotline)

    def _read_log(self) -> str:
        return self.logs.read_text(errors="replace") if self.logs.exists() else ""

    async def _wait_booted(self, deadline: float) -> None:
        ctl = self._require_instance() / "run" / "asterisk.ctl"
        while not ctl.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise DevStackError(f"Asterisk did not open its control socket; see {self._console}")
            await asyncio.sleep(0.02)
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DevStackError(f"Asterisk did not finish booting; see {self._console}")
            code, out, _ = await _run(self._argv("-rx", "core waitfullybooted"), timeout=remaining)
            if code == 0 and "fully booted" in out.lower():
                return
            await asyncio.sleep(0.05)

    def _check_alive(self) -> None:
        if self._proc is None or self._proc.returncode is not None:
            tail = self._console.read_text(errors="replace")[-2000:] if self._console else ""
            raise DevStackError(f"Asterisk exited during start-up:\n{tail}")

    async def cli(self, command: str, timeout: float = 10.0) -> str:
        """Run one CLI command (`asterisk -rx`) and return its output."""
        if not self.running:
            raise DevStackError("Asterisk is not running")
        code, out, err = await _run(self._argv("-rx", command), timeout=timeout)
        if code != 0:
            raise DevStackError(f"asterisk -rx {command!r} failed ({code}): {err.strip() or out.strip()}")
        return out

    async def hangup_all(self, timeout: float = 5.0) -> None:
        """Hang up every channel and wait until none is left (a clean slate between tests)."""
        await self.cli("channel request hangup all")
        deadline = time.monotonic() + timeout
        while True:
            count = await self.active_channels()
            if count == 0:
                return
            if time.monotonic() > deadline:
                raise DevStackError(f"{count} channels still up after `channel request hangup all`")
            await asyncio.sleep(0.05)

    async def set_paused(self, agent: int | str, paused: bool) -> None:
        """Pause (or unpause) agent<N> in every queue, as ivrserver does over AMI (QueuePause)."""
        number = self.ports.agent_port(agent) - self.ports.agent_base_port + AGENT_NUMBERS[0]
        await self.cli(f"queue {'pause' if paused else 'unpause'} member PJSIP/agent{number}")

    async def active_channels(self) -> int:
        out = await self.cli("core show channels count")
        match = re.search(r"(\d+) active channels?", out)
        if match is None:
            raise DevStackError(f"unexpected `core show channels count` output: {out!r}")
        return int(match.group(1))

    async def wait(self) -> int:
        """Until the Asterisk process exits (crash or `core stop`); its exit status."""
        if self._proc is None:
            raise DevStackError("Asterisk is not running")
        return await self._proc.wait()

    async def stop(self, grace: float = 10.0) -> None:
        """`core stop now`, then SIGKILL if Asterisk is still there after `grace` seconds."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(DevStackError):
                await _run(self._argv("-rx", "core stop now"), timeout=grace)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._proc = None

    async def restart(self, timeout: float = 30.0) -> None:
        """Stop and start again with the same configuration and ports."""
        await self.stop()
        await self.start(timeout)

    def remove(self) -> None:
        """Delete the instance directory (configuration, logs, astdb). Asterisk must be stopped."""
        if self.running:
            raise DevStackError("stop Asterisk before removing its instance directory")
        if self.instance_dir is not None:
            shutil.rmtree(self.instance_dir, ignore_errors=True)

    async def __aenter__(self) -> LocalAsterisk:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        self.remove()


# ---------------------------------------------------------------------------------------- redis


async def _listening(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class LocalRedis:
    """A private redis-server (no persistence) or, with `reuse=True`, one already listening."""

    def __init__(self, port: int | None = None, *, reuse: bool = False, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.reuse = reuse
        self.external = False
        self._proc: asyncio.subprocess.Process | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> None:
        if self.reuse and self.port is not None and await _listening(self.host, self.port):
            self.external = True
            return
        exe = shutil.which("redis-server")
        if exe is None:
            raise DevStackError("redis-server is not installed (apt-get install redis-server)")
        if self.port is None:
            self.port = StackPorts.free().sip_port
        self._dir = await asyncio.to_thread(tempfile.mkdtemp, "", "ivrserver-redis-")
        self._proc = await asyncio.create_subprocess_exec(
            exe, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
            "--dir", self._dir, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not await _listening(self.host, self.port):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                await self.stop()
                raise DevStackError(f"redis-server did not start on port {self.port}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._proc is not None:
            if self._proc.returncode is None:
                self._proc.terminate()
                try:
                    await asyncio.wait_for(self._proc.wait(), 10)
                except TimeoutError:
                    self._proc.kill()
                    await self._proc.wait()
            self._proc = None
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None

    async def __aenter__(self) -> LocalRedis:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ----------------------------------------------------------------------------------------- sipp

# SIPp processes we started, by the UDP port they hold: a new SIPp on a port still held by the
# last one fails with errno 98, so start_sipp() waits for the previous holder to exit first.
_SIPP_BY_PORT: dict[int, asyncio.subprocess.Process] = {}


@dataclass(frozen=True)
class SippResult:
    """Outcome of one SIPp run. SIPp exits 0 when every call succeeded, 1 when one failed."""

    returncode: int
    successful: int
    failed: int
    output: str                 # SIPp's stdout + stderr (final screen, errors)
    errors: str = ""            # SIPp's -trace_err log: the unexpected messages
    logs: str = ""              # <log> actions of the scenario (-trace_logs)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful > 0

    def describe(self) -> str:
        return (f"sipp exit {self.returncode}, {self.successful} ok, {self.failed} failed\n"
                f"{self.output[-3000:]}\n{self.errors[-3000:]}\n{self.logs[-2000:]}")


@dataclass
class SippProcess:
    """A running SIPp; `await wait()` for its result."""

    scenario: Path
    local_port: int
    process: asyncio.subprocess.Process
    workdir: Path
    timeout: float
    _result: SippResult | None = field(default=None, repr=False)

    async def wait(self) -> SippResult:
        if self._result is not None:
            return self._result
        try:
            out, _ = await asyncio.wait_for(self.process.communicate(), self.timeout + 10)
        except TimeoutError:
            await self.kill()
            out = b""
        finally:
            if _SIPP_BY_PORT.get(self.local_port) is self.process:
                del _SIPP_BY_PORT[self.local_port]
        self._result = await asyncio.to_thread(self._collect, out.decode(errors="replace"))
        return self._result

    async def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()

    def _collect(self, output: str) -> SippResult:
        successful = failed = 0
        stat_files = sorted(self.workdir.glob("*.csv"))
        if stat_files:
            rows = list(csv.DictReader(stat_files[0].read_text(errors="replace").splitlines(),
                                       delimiter=";"))
            if rows:
                successful = int(rows[-1].get("SuccessfulCall(C)") or 0)
                failed = int(rows[-1].get("FailedCall(C)") or 0)

        def read(pattern: str) -> str:
            return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob(pattern)))

        code = self.process.returncode if self.process.returncode is not None else -9
        errors, logs = read("*_errors.log"), read("*_logs.log")
        shutil.rmtree(self.workdir, ignore_errors=True)
        return SippResult(returncode=code, successful=successful, failed=failed, output=output,
                          errors=errors, logs=logs)


def _scenario_path(scenario: str | Path) -> Path:
    path = Path(scenario)
    if not path.suffix:
        path = path.with_suffix(".xml")
    if not path.is_absolute() and not path.exists():
        path = SIPP_DIR / path
    if not path.exists():
        raise DevStackError(f"no SIPp scenario {scenario}")
    return path.resolve()


def _sipp_workdir(files: Mapping[str, bytes]) -> Path:
    """A fresh working directory for one SIPp run (its traces land there), holding `files`."""
    workdir = Path(tempfile.mkdtemp(prefix="ivrserver-sipp-"))
    for name, content in files.items():
        (workdir / Path(name).name).write_bytes(content)
    return workdir


def _free_media_port() -> int:
    """An even port with the next three free (SIPp's -mp takes audio + video RTP/RTCP)."""
    for _ in range(200):
        port = random.randrange(*_MEDIA_PORT_RANGE) & ~1
        if all(_port_free(p) for p in range(port, port + 4)):
            return port
    raise DevStackError("no free media port for SIPp")


async def start_sipp(scenario: str | Path, *, local_port: int, remote: str | None = None,
                     service: str | None = None, calls: int = 1,
                     variables: Mapping[str, str | int] | None = None,
                     keys: Mapping[str, str | int] | None = None, duration_ms: int | None = None,
                     files: Mapping[str, bytes] | None = None, timeout: float = 30.0,
                     extra_args: Iterable[str] = ()) -> SippProcess:
    """Start SIPp in the background (`-nostdin`, never `-bg`, so its exit code is ours).

    scenario: a file in tests/sipp (`"caller"`, `"agent.xml"`) or a path.
    remote: "127.0.0.1:5060" for a UAC; None for a UAS. service: the Request-URI user (-s).
    variables: `-set name value` (scenario globals); keys: `-key name value` ([name] in messages).
    duration_ms: `-d` (default length of a plain <pause/>). files: written into SIPp's working
    directory first (e.g. `dtmf_pcaps("12")` for caller.xml). timeout: SIPp's global -timeout,
    after which the run counts as failed.
    """
    path = _scenario_path(scenario)
    exe = shutil.which("sipp")
    if exe is None:
        raise DevStackError("sipp is not installed (apt-get install sip-tester)")
    previous = _SIPP_BY_PORT.get(local_port)
    if previous is not None and previous.returncode is None:
        await asyncio.wait_for(previous.wait(), timeout + 10)
    deadline = time.monotonic() + 5
    while not _port_free(local_port):
        if time.monotonic() > deadline:
            raise DevStackError(f"UDP port {local_port} stays busy: another SIPp still holds it?")
        await asyncio.sleep(0.05)
    workdir = await asyncio.to_thread(_sipp_workdir, files or {})
    argv = [exe, "-sf", str(path), "-i", "127.0.0.1", "-p", str(local_port),
            "-mp", str(_free_media_port()), "-m", str(calls), "-nostdin",
            "-timeout", f"{max(1, int(timeout))}s", "-timeout_error",
            "-trace_stat", "-stf", str(workdir / "stats.csv"), "-trace_err", "-trace_logs"]
    if service is not None:
        argv += ["-s", service]
    if duration_ms is not None:
        argv += ["-d", str(duration_ms)]
    for name, value in (variables or {}).items():
        argv += ["-set", name, str(value)]
    for name, value in (keys or {}).items():
        argv += ["-key", name, str(value)]
    argv += list(extra_args)
    if remote is not None:
        argv.append(remote)
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=workdir, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    _SIPP_BY_PORT[local_port] = proc
    return SippProcess(scenario=path, local_port=local_port, process=proc, workdir=workdir,
                       timeout=timeout)


async def run_sipp(scenario: str | Path, **kwargs: object) -> SippResult:
    """`start_sipp(...)` and wait for it: exit code and call counts."""
    proc = await start_sipp(scenario, **kwargs)  # type: ignore[arg-type]
    return await proc.wait()


DTMF_PCAP_DIR = Path("/usr/share/sip-tester")
DTMF_POSITIONS = 16     # tests/sipp/caller.xml replays dtmf_1.pcap .. dtmf_16.pcap
_DTMF_NAMES = {**{d: d for d in "0123456789"}, "*": "star", "#": "pound"}


def dtmf_pcaps(digits: str, source: Path = DTMF_PCAP_DIR) -> dict[str, bytes]:
    """The dtmf_1.pcap .. dtmf_16.pcap files tests/sipp/caller.xml replays for RFC 4733 DTMF.

    sip-tester's dtmf_2833_<digit>.pcap files come from one recording: their RTP sequence numbers
    and timestamps are those of that recording, so "2" replayed after "4" goes back in sequence
    and Asterisk drops it. Here digit i gets sequence numbers and a timestamp after digit i-1's.
    Positions past len(digits) are filled with "0" (never played, but SIPp loads every file).
    """
    if len(digits) > DTMF_POSITIONS or any(d not in _DTMF_NAMES for d in digits):
        raise ValueError(f"at most {DTMF_POSITIONS} DTMF digits from 0-9 * #, got {digits!r}")
    files: dict[str, bytes] = {}
    for index, digit in enumerate(digits.ljust(DTMF_POSITIONS, "0")):
        pcap = (source / f"dtmf_2833_{_DTMF_NAMES[digit]}.pcap").read_bytes()
        files[f"dtmf_{index + 1}.pcap"] = _renumber_rtp(pcap, seq_base=1000 + 32 * index,
                                                        timestamp=160_000 + 16_000 * index)
    return files


def _renumber_rtp(pcap: bytes, *, seq_base: int, timestamp: int) -> bytes:
    """Rewrite RTP sequence numbers (keeping their spacing) and the timestamp in an Ethernet pcap."""
    if pcap[:4] != b"\xd4\xc3\xb2\xa1" or int.from_bytes(pcap[20:24], "little") != 1:
        raise DevStackError("expected a little-endian Ethernet pcap")
    out = bytearray(pcap)
    offset, first_seq = 24, None
    while offset + 16 <= len(out):
        length = int.from_bytes(out[offset + 8:offset + 12], "little")
        frame = offset + 16
        ip = frame + 14
        udp = ip + (out[ip] & 0x0F) * 4
        rtp = udp + 8
        seq = int.from_bytes(out[rtp + 2:rtp + 4], "big")
        first_seq = seq if first_seq is None else first_seq
        out[rtp + 2:rtp + 4] = ((seq - first_seq + seq_base) & 0xFFFF).to_bytes(2, "big")
        out[rtp + 4:rtp + 8] = timestamp.to_bytes(4, "big")
        out[udp + 6:udp + 8] = b"\x00\x00"   # UDP checksum: "none" (it no longer matches)
        offset = frame + length
    return bytes(out)


def caller_variables(digits: str, *, number: str = "5551234", mode: str = "rfc4733",
                     hold_ms: int = 0) -> dict[str, str | int]:
    """`-set` variables of tests/sipp/caller.xml.

    digits: DTMF to send after the call is answered, e.g. "12#" ("" = none).
    number: the caller's number (From user -> agi_callerid). mode: "rfc4733" or "info" (the
    latter needs the `callers-info` endpoint, i.e. SIPp on caller_info_port).
    hold_ms: 0 = wait for Asterisk's BYE (up to the SIPp timeout); >0 = hang up after that long.
    """
    if mode not in ("rfc4733", "info"):
        raise ValueError("mode must be 'rfc4733' or 'info'")
    if not re.fullmatch(r"[0-9*#]*", digits):
        raise ValueError(f"DTMF digits must be 0-9, * or #, got {digits!r}")
    if not number.isdigit():
        raise ValueError(f"caller number must be digits, got {number!r}")
    # "#" cannot travel through SIPp's command line parsing reliably: spell it out.
    spelled = digits.replace("*", "s").replace("#", "p")
    return {"digits": spelled or "-", "from_user": number, "mode": mode, "hold_ms": hold_ms}


async def start_caller(ports: StackPorts, digits: str = "", *, mode: str = "rfc4733",
                       number: str = "5551234", hold_ms: int = 0, dial: str = HOTLINE,
                       timeout: float = 30.0) -> SippProcess:
    """A SIPp caller (tests/sipp/caller.xml) dialling `dial` and sending `digits` as DTMF.

    mode "rfc4733" calls from ports.caller_port (endpoint `callers`), "info" from
    ports.caller_info_port (endpoint `callers-info`, SIP INFO DTMF).
    """
    port = ports.caller_info_port if mode == "info" else ports.caller_port
    return await start_sipp(
        "caller", local_port=port, remote=f"127.0.0.1:{ports.sip_port}", service=dial,
        variables=caller_variables(digits, number=number, mode=mode, hold_ms=hold_ms),
        files=await asyncio.to_thread(dtmf_pcaps, digits), timeout=timeout)


# ---------------------------------------------------------------------------------------- stack


@contextlib.asynccontextmanager
async def stack(ports: StackPorts | None = None, *, ami_secret: str = DEFAULT_AMI_SECRET,
                redis_port: int | None = 6379, reuse_redis: bool = True,
                name: str | None = None) -> AsyncIterator[tuple[LocalAsterisk, LocalRedis]]:
    """Redis + Asterisk, up for the duration of the block; stopped and cleaned up afterwards.

    Defaults are `make run`'s: StackPorts.default(), AMI secret "ivrserver", Redis on 6379
    (reused if something already listens there). Start ivrserver itself inside the block.
    """
    redis = LocalRedis(redis_port, reuse=reuse_redis)
    asterisk = LocalAsterisk(ports or StackPorts.default(), ami_secret=ami_secret,
                             name=name or f"devstack-{os.getpid()}")
    await redis.start()
    try:
        await asterisk.start()
        try:
            yield asterisk, redis
        finally:
            await asterisk.stop()
            asterisk.remove()
    finally:
        await redis.stop()


# ------------------------------------------------------------------------------------------ CLI


def _describe(asterisk: LocalAsterisk, redis: LocalRedis) -> str:
    p = asterisk.ports
    agents = f"agent1001..agent1010 at 127.0.0.1:{p.agent_port(1001)}..{p.agent_port(1010)}"
    return "\n".join([
        f"Asterisk up in {asterisk.boot_seconds:.1f} s (config {asterisk.etc_dir}, logs {asterisk.full_log})",
        f"  SIP       udp 127.0.0.1:{p.sip_port}  — dial {asterisk.hotline} from 127.0.0.1:{p.caller_port}"
        f" (RFC 4733 DTMF) or 127.0.0.1:{p.caller_info_port} (SIP INFO DTMF)",
        f"  agents    {agents}",
        f"  customers trunk to 127.0.0.1:{p.customer_port}",
        f"  AMI       127.0.0.1:{p.ami_port} user ivrserver",
        f"  FastAGI   Asterisk connects to {p.agi_host}:{p.agi_port} (start ivrserver there; "
        "without it calls fall back to the general queue)",
        f"  Redis     {redis.url}{' (already running, reused)' if redis.external else ''}",
        "Place a test call:  python -m ivrserver.devstack call --digits 1",
        "Ctrl-C stops everything.",
    ])


async def _up(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with stack(ami_secret=args.ami_secret, redis_port=args.redis_port) as (asterisk, redis):
        print(_describe(asterisk, redis), flush=True)
        waiter = asyncio.create_task(stop.wait())
        watcher = asyncio.create_task(asterisk.wait())
        done, pending = await asyncio.wait([waiter, watcher], return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if watcher in done:
            print("Asterisk exited unexpectedly; see", asterisk.full_log, file=sys.stderr)
            return 1
        print("stopping ...", flush=True)
    return 0


def stack_settings(asterisk: LocalAsterisk, redis_url: str, config_file: str | None = None) -> Settings:
    """ivrserver settings for a local stack: the user's settings (or the defaults, which are
    `make run`'s ports) with this stack's Redis, AMI, FastAGI and Asterisk paths, and the demo
    agents (passwords = their ids) unless the settings name an agents file."""
    base = config.load(config_file)
    agents = base.routing.agents_file
    if agents == config.RoutingSettings().agents_file:
        agents = str(REPO_DIR / "scripts" / "demo-agents.yaml")
    return dataclasses.replace(
        base,
        redis=dataclasses.replace(base.redis, url=redis_url),
        ami=dataclasses.replace(base.ami, host="127.0.0.1", port=asterisk.ports.ami_port, secret=asterisk.ami_secret),
        agi=dataclasses.replace(base.agi, host=asterisk.ports.agi_host, port=asterisk.ports.agi_port),
        asterisk=dataclasses.replace(base.asterisk, config_dir=str(asterisk.etc_dir),
                                     sounds_dir=str(asterisk.sounds_dir)),
        routing=dataclasses.replace(base.routing, agents_file=agents),
    )


async def _seed_demo(redis_url: str) -> None:
    """Demo customers (VIP with an account manager, a repeat caller, self-service balance ...)."""
    demo = str(REPO_DIR / "scripts" / "demo-customers.yaml")
    code, out, err = await _run([sys.executable, "-m", "ivrserver", "customers", "import", demo,
                                 "--redis-url", redis_url])
    print((out or err).strip().splitlines()[-1] if (out or err).strip() else f"demo import exit {code}")


async def _run_all(args: argparse.Namespace) -> int:
    """`make run`: Redis + Asterisk + agent phones + ivrserver, until Ctrl-C."""
    from ivrserver import logs
    from ivrserver.app import IvrServer

    logs.setup("INFO")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with stack(ami_secret=args.ami_secret, redis_port=args.redis_port) as (asterisk, redis):
        await _seed_demo(redis.url)
        phones = [await start_sipp("agent", local_port=asterisk.ports.agent_port(n), calls=100000,
                                   variables={"ring_ms": 2000, "hold_ms": 15000}, timeout=86400)
                  for n in AGENT_NUMBERS]
        server = IvrServer(stack_settings(asterisk, redis.url, args.config))
        ready = asyncio.Event()
        serving = asyncio.create_task(server.run(ready))
        try:
            await asyncio.wait_for(ready.wait(), 30)
            print(_describe(asterisk, redis), flush=True)
            print(f"ivrserver  web http://{server.settings.web.host}:{server.web_port}/ (agent page; log in as "
                  f"agent1001 / agent1001), FastAGI {server.settings.agi.host}:{server.fastagi.port}\n"
                  f"Agent phones (SIPp) answer every call after 2 s and talk 15 s.\n"
                  f"Try: make call            (unknown caller, presses 1: balance → asks for the account)\n"
                  f"     make call CALLER=15550001   (VIP: straight to account manager agent1001)", flush=True)
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
    return 0


async def _call(args: argparse.Namespace) -> int:
    digits = args.digits.replace(",", "").replace(" ", "")
    caller = await start_caller(StackPorts.default(), digits, mode="info" if args.info else "rfc4733",
                                number=args.caller, hold_ms=args.hold_ms, dial=args.number,
                                timeout=args.timeout)
    result = await caller.wait()
    print(result.describe() if not result.ok else
          f"call to {args.number} from {args.caller} completed (digits {digits or 'none'})")
    return result.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ivrserver.devstack", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start Redis + Asterisk with the default ports until Ctrl-C"),
                       ("run", "`make run`: Redis + Asterisk + agent phones + ivrserver until Ctrl-C")):
        up = sub.add_parser(name, help=text)
        up.add_argument("--ami-secret", default=os.environ.get("IVRSERVER_AMI__SECRET", DEFAULT_AMI_SECRET))
        up.add_argument("--redis-port", type=int, default=6379)
        up.add_argument("-c", "--config", default=os.environ.get("IVRSERVER_CONFIG"),
                        help="ivrserver settings file (ports of Asterisk/Redis come from the stack)")
    call = sub.add_parser("call", help="place one SIPp call to the hotline of a running `up`")
    call.add_argument("--digits", default="1", help="DTMF to send, e.g. 1,2 or 12# (default 1)")
    call.add_argument("--caller", default="5551234", help="caller number (From user)")
    call.add_argument("--number", default=HOTLINE, help="number to dial (default the hotline)")
    call.add_argument("--info", action="store_true", help="send DTMF as SIP INFO instead of RFC 4733")
    call.add_argument("--hold-ms", type=int, default=10000,
                      help="hang up this long after the last digit unless Asterisk hangs up first "
                           "(default 10000; 0 = wait for Asterisk's BYE until --timeout)")
    call.add_argument("--timeout", type=float, default=60.0)
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


if __name__ == "__main__":
    raise SystemExit(main())
