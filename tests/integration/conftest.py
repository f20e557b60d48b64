"""Integration fixtures: one real Asterisk 22 per test session, real SIPp phones per test.

- `asterisk` (session): LocalAsterisk on StackPorts.free(), configuration rendered into its own
  instance directory inside the chroot; stopped and removed at the end of the session.
- `fresh_asterisk` (function): the same Asterisk after `channel request hangup all` and with no
  channel left — each test starts from an idle PBX, as wazo-calld's integration tests do.
- `phones` (function): starts SIPp callers, agents and customers on the stack's ports and kills
  whatever is still running when the test ends.

Every queue member starts paused, and `phones.agent(N)` unpauses agentN only while its SIPp phone
runs: a queue that rang members with no phone behind them would leave pjsip retransmitting those
INVITEs for 32 s (timer B; no CANCEL is possible before a provisional response), and a later
test's SIPp on that port would pick the stale INVITE up as its call.

A missing Asterisk chroot or sipp fails the tests loudly; nothing is skipped.
IVRSERVER_KEEP_ASTERISK=1 keeps the instance directory (rendered configuration, full.log);
IVRSERVER_SIP_TRACE=1 also writes every SIP message into full.log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from ivrserver.devstack.asterisk import HOTLINE, LocalAsterisk
from ivrserver.devstack.ports import AGENT_NUMBERS, StackPorts
from ivrserver.devstack.process import DevStackError
from ivrserver.devstack.sipp import SippProcess, SippResult, start_caller, start_sipp


@contextlib.asynccontextmanager
async def local_asterisk(name: str) -> AsyncIterator[LocalAsterisk]:
    """A started Asterisk on free ports with every queue member paused; stopped and removed after."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed: `make test` installs the sip-tester package")
    pbx = LocalAsterisk(StackPorts.free(), name=name)
    try:
        await pbx.start()
    except DevStackError as exc:
        pytest.fail(f"Asterisk did not start: {exc}")
    for number in AGENT_NUMBERS:
        await pbx.set_paused(number, True)
    if os.environ.get("IVRSERVER_SIP_TRACE"):  # every SIP message into full.log
        await pbx.cli("pjsip set logger on")
    try:
        yield pbx
    finally:
        await pbx.stop()
        if os.environ.get("IVRSERVER_KEEP_ASTERISK"):  # keep configuration + logs for a post-mortem
            print(f"\nAsterisk instance kept in {pbx.instance_dir}")
        else:
            pbx.remove()


async def idle(pbx: LocalAsterisk) -> LocalAsterisk:
    """`pbx` with every channel hung up (and gone): each test starts from an idle PBX."""
    if not pbx.running:
        pytest.fail(f"Asterisk is no longer running; see {pbx.full_log}")
    await pbx.hangup_all()
    return pbx


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def asterisk() -> AsyncIterator[LocalAsterisk]:
    async with local_asterisk(f"pytest-{os.getpid()}") as pbx:
        yield pbx


@pytest.fixture
async def fresh_asterisk(asterisk: LocalAsterisk) -> LocalAsterisk:
    """The session's Asterisk with every channel hung up (and gone) before the test."""
    return await idle(asterisk)


class Phones:
    """SIPp phones on the ports of one stack. Every process started is reaped at teardown."""

    def __init__(self, asterisk: LocalAsterisk) -> None:
        self.asterisk = asterisk
        self.ports = asterisk.ports
        self._started: list[SippProcess] = []
        self._unpaused: list[int] = []

    async def _start(self, scenario: str, **kwargs: object) -> SippProcess:
        proc = await start_sipp(scenario, **kwargs)  # type: ignore[arg-type]
        self._started.append(proc)
        return proc

    async def agent(self, number: int, *, answer: bool = True, ring_ms: int = 300,
                    hold_ms: int = 1000, timeout: float = 20.0) -> SippProcess:
        """Agent phone agent<number> (1001..1010), unpaused in its queues while the test runs:
        answers after ring_ms, or never (answer=False)."""
        if answer:
            phone = await self._start("agent", local_port=self.ports.agent_port(number),
                                      variables={"ring_ms": ring_ms, "hold_ms": hold_ms}, timeout=timeout)
        else:
            phone = await self._start("agent_noanswer", local_port=self.ports.agent_port(number),
                                      timeout=timeout)
        await self.asterisk.set_paused(number, False)
        self._unpaused.append(number)
        return phone

    async def customer(self, *, ring_ms: int = 300, press: str = "-", hold_ms: int = 1000,
                       timeout: float = 20.0, calls: int = 1) -> SippProcess:
        """The customers' phone (trunk `customers`), answering `calls` calls (every number the
        trunk dials reaches it)."""
        return await self._start("customer", local_port=self.ports.customer_port,
                                 variables={"ring_ms": ring_ms, "press": press, "hold_ms": hold_ms},
                                 timeout=timeout, calls=calls)

    async def caller(self, digits: str = "", *, mode: str = "rfc4733", number: str = "5551234",
                     hold_ms: int = 0, dial: str = HOTLINE, timeout: float = 20.0) -> SippProcess:
        """A caller dialling `dial` and sending `digits` (RFC 4733 or SIP INFO)."""
        proc = await start_caller(self.ports, digits, mode=mode, number=number, hold_ms=hold_ms,
                                  dial=dial, timeout=timeout)
        self._started.append(proc)
        return proc

    async def call(self, digits: str = "", **kwargs: object) -> SippResult:
        """Place a call and wait until it ends."""
        return await (await self.caller(digits, **kwargs)).wait()  # type: ignore[arg-type]

    async def close(self) -> None:
        for number in self._unpaused:
            await self.asterisk.set_paused(number, True)
        for proc in self._started:
            await proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def phones_on(pbx: LocalAsterisk) -> AsyncIterator[Phones]:
    phones = Phones(pbx)
    try:
        yield phones
    finally:
        await phones.close()


@pytest.fixture
async def phones(fresh_asterisk: LocalAsterisk) -> AsyncIterator[Phones]:
    async with phones_on(fresh_asterisk) as p:
        yield p
