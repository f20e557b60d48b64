"""What every part of the local stack shares: the repository's paths, the error type, and running
a program to completion without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent.parent
RUN_DIR = REPO_DIR / "run"     # `make run`'s state: pid files, Redis data, settings (gitignored)


class DevStackError(RuntimeError):
    """A component of the local stack did not start, stop or answer as expected."""


async def run_command(argv: Sequence[str], *, timeout: float = 30.0) -> tuple[int, str, str]:
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

async def listening(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True

