"""SIPp (Debian's sip-tester) with the tests/sipp/ scenarios: callers, agent and customer phones.

`start_sipp()` starts one SIPp in the background, `SippProcess.wait()` gives its `SippResult`;
`start_caller()` is a caller dialling the hotline and sending DTMF (RFC 4733 or SIP INFO).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ivrserver.devstack.asterisk import HOTLINE
from ivrserver.devstack.pidfiles import PidFiles
from ivrserver.devstack.ports import MEDIA_PORT_RANGE, StackPorts, port_free
from ivrserver.devstack.process import REPO_DIR, DevStackError
from ivrserver.devstack.rtp import dtmf_pcaps

SIPP_DIR = REPO_DIR / "tests" / "sipp"

# SIPp processes we started, by the UDP port they hold: a new SIPp on a port still held by the
# last one fails with errno 98, so start_sipp() waits for the previous holder to exit first.
_SIPP_BY_PORT: dict[int, asyncio.subprocess.Process] = {}
# The media ports (-mp, four from there) handed to each SIPp we started, until it exits: a SIPp
# binds them some milliseconds after it starts, so a check that they are free does not see the
# previous phone's yet — two phones started one after the other could get overlapping blocks, and
# the second died at start ("Unable to bind video RTP socket ... errno = 98").
MEDIA_PORTS = 4
_MEDIA_BY_PORT: dict[int, asyncio.subprocess.Process | None] = {}   # None: handed out, not started yet


OUTPUT = "screen.txt"  # SIPp's stdout + stderr, in its working directory


def _read_output(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:
        return ""


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
    pids: PidFiles | None = field(default=None, repr=False)
    _result: SippResult | None = field(default=None, repr=False)

    @property
    def pid_name(self) -> str:
        return f"sipp-{self.local_port}"

    async def wait(self) -> SippResult:
        if self._result is not None:
            return self._result
        try:
            await asyncio.wait_for(self.process.wait(), self.timeout + 10)
        except TimeoutError:
            await self.kill()
        finally:
            if _SIPP_BY_PORT.get(self.local_port) is self.process:
                del _SIPP_BY_PORT[self.local_port]
        await self._forget()
        out = await asyncio.to_thread(_read_output, self.workdir / OUTPUT)
        self._result = await asyncio.to_thread(self._collect, out)
        return self._result

    async def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()
        await self._forget()

    async def _forget(self) -> None:
        if self.pids is not None:
            await self.pids.forget(self.pid_name)
            self.pids = None

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
    """An even port with the next three free (SIPp's -mp takes audio + video RTP/RTCP), none of
    them handed to a SIPp of ours that still runs; reserved (`_MEDIA_BY_PORT`) until it exits."""
    for port in [p for p, proc in _MEDIA_BY_PORT.items() if proc is not None and proc.returncode is not None]:
        del _MEDIA_BY_PORT[port]
    taken = {p + i for p in _MEDIA_BY_PORT for i in range(MEDIA_PORTS)}
    for _ in range(200):
        port = random.randrange(*MEDIA_PORT_RANGE) & ~1
        block = range(port, port + MEDIA_PORTS)
        if taken.isdisjoint(block) and all(port_free(p) for p in block):
            _MEDIA_BY_PORT[port] = None
            return port
    raise DevStackError("no free media port for SIPp")


async def start_sipp(scenario: str | Path, *, local_port: int, remote: str | None = None,
                     service: str | None = None, calls: int = 1,
                     variables: Mapping[str, str | int] | None = None,
                     keys: Mapping[str, str | int] | None = None, duration_ms: int | None = None,
                     files: Mapping[str, bytes] | None = None, timeout: float = 30.0,
                     extra_args: Iterable[str] = (), pids: PidFiles | None = None,
                     what: str = "") -> SippProcess:
    """Start SIPp in the background (`-nostdin`, never `-bg`, so its exit code is ours).

    scenario: a file in tests/sipp (`"caller"`, `"agent.xml"`) or a path.
    remote: "127.0.0.1:5060" for a UAC; None for a UAS. service: the Request-URI user (-s).
    variables: `-set name value` (scenario globals); keys: `-key name value` ([name] in messages).
    duration_ms: `-d` (default length of a plain <pause/>). files: written into SIPp's working
    directory first (e.g. `dtmf_pcaps("12")` for caller.xml). timeout: SIPp's global -timeout,
    after which the run counts as failed. pids: record the process there as `sipp-<local_port>`
    (`what` says which phone), so that the next `make run` can stop it if this one is killed.
    """
    path = _scenario_path(scenario)
    exe = shutil.which("sipp")
    if exe is None:
        raise DevStackError("sipp is not installed (apt-get install sip-tester)")
    previous = _SIPP_BY_PORT.get(local_port)
    if previous is not None and previous.returncode is None:
        await asyncio.wait_for(previous.wait(), timeout + 10)
    deadline = time.monotonic() + 5
    while not port_free(local_port):
        if time.monotonic() > deadline:
            raise DevStackError(f"UDP port {local_port} stays busy: another SIPp still holds it?")
        await asyncio.sleep(0.05)
    workdir = await asyncio.to_thread(_sipp_workdir, files or {})
    media = _free_media_port()
    argv = [exe, "-sf", str(path), "-i", "127.0.0.1", "-p", str(local_port),
            "-mp", str(media), "-m", str(calls), "-nostdin",
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
    # SIPp's screen goes to a file of its working directory, not a pipe: a pipe nobody reads until
    # the end would block a long-lived phone once full, and would kill it (SIGPIPE) when the
    # process that started it dies (a `make run` killed with -9 leaves its phones running)
    try:
        with (workdir / OUTPUT).open("wb") as screen:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=workdir, stdin=asyncio.subprocess.DEVNULL, stdout=screen,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except BaseException:
        _MEDIA_BY_PORT.pop(media, None)
        raise
    _MEDIA_BY_PORT[media] = proc
    _SIPP_BY_PORT[local_port] = proc
    sipp = SippProcess(scenario=path, local_port=local_port, process=proc, workdir=workdir,
                       timeout=timeout, pids=pids)
    if pids is not None:
        await pids.record(sipp.pid_name, proc.pid, "sipp", what or f"SIPp {path.stem} on port {local_port}")
    return sipp


async def run_sipp(scenario: str | Path, **kwargs: object) -> SippResult:
    """`start_sipp(...)` and wait for it: exit code and call counts."""
    proc = await start_sipp(scenario, **kwargs)  # type: ignore[arg-type]
    return await proc.wait()



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

