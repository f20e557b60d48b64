"""Asterisk 22 for the local stack: configuration rendering and one `LocalAsterisk` process.

- `render_asterisk()`: renders asterisk-config/ templates + dialplans/ivrserver.conf into an
  instance directory, so several Asterisk instances coexist (each has its own etc, run, log ...).
- `LocalAsterisk`: runs the host's /usr/sbin/asterisk if there is one, else the Debian-unstable
  chroot built by `scripts/asterisk-chroot ensure` (Debian 12 has no asterisk package).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from ivrserver.devstack.pidfiles import PidFiles
from ivrserver.devstack.ports import AGENT_NUMBERS, StackPorts
from ivrserver.devstack.process import REPO_DIR, DevStackError, run_command

CONFIG_TEMPLATES = REPO_DIR / "asterisk-config"
DIALPLAN = REPO_DIR / "dialplans" / "ivrserver.conf"
CHROOT_SCRIPT = REPO_DIR / "scripts" / "asterisk-chroot"
HOST_ASTERISK = Path("/usr/sbin/asterisk")

HOTLINE = "1860"
DEFAULT_AMI_SECRET = "ivrserver"

_PLACEHOLDER = re.compile(r"\{\{([a-z0-9_]+)\}\}")
# An AMI secret is written into manager.conf: no comment char, no whitespace, printable ASCII.
_SAFE_SECRET = re.compile(r"[!-:<-~]{1,128}")


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



async def asterisk_root() -> Path:
    """`/` when Asterisk is installed on the host, else the chroot (built or restored on demand)."""
    if await asyncio.to_thread(HOST_ASTERISK.exists):
        return Path("/")
    code, out, err = await run_command([str(CHROOT_SCRIPT), "ensure"], timeout=900)
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
                 hotline: str = HOTLINE, root: Path | None = None, pids: PidFiles | None = None) -> None:
        """pids: record the running process there (`make run`: the next start stops a leftover)."""
        self.ports = ports
        self.pids = pids
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
        """Host path of full.log (+ verbose 3: what each call did; no keypresses)."""
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
        if self.pids is not None:
            await self.pids.record("asterisk", self._proc.pid, "asterisk", f"Asterisk {self.name}")
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
            code, out, _ = await run_command(self._argv("-rx", "core waitfullybooted"), timeout=remaining)
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
        code, out, err = await run_command(self._argv("-rx", command), timeout=timeout)
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
                await run_command(self._argv("-rx", "core stop now"), timeout=grace)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._proc = None
        if self.pids is not None:
            await self.pids.forget("asterisk")

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

