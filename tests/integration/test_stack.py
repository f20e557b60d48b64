"""The local telephony stack end to end: real Asterisk 22, real SIPp phones, real sockets.

What is proven here is the Asterisk side of the contract (asterisk-config/ + dialplans/): a clean
boot, the AMI account, both DTMF paths, the no-call-lost fallback, and that the dialplan routes
on the IVR_* channel variables. ivrserver's own FastAGI server is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator

import pytest

from ivrserver.devstack.asterisk import LocalAsterisk
from ivrserver.devstack.sipp import SippResult
from ivrserver.pbx import ami_events
from tests.integration.conftest import Phones

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------ fake FastAGI peer


class FakeAgi:
    """A scripted FastAGI peer: reads the request headers, sends `commands` one at a time.

    It only exists to test the dialplan in isolation (does it act on IVR_ACTION, IVR_QUEUE ...?);
    the real FastAGI server (ivrserver/pbx/fastagi.py) is tested elsewhere.
    """

    def __init__(self, commands: list[str]) -> None:
        self.commands = commands
        self.requests: list[dict[str, str]] = []
        self.replies: list[str] = []
        self.finished = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            headers: dict[str, str] = {}
            while (line := (await asyncio.wait_for(reader.readline(), 5)).decode().rstrip("\n")):
                name, _, value = line.partition(": ")
                headers[name] = value
            self.requests.append(headers)
            for command in self.commands:
                writer.write(command.encode() + b"\n")
                await writer.drain()
                reply = "HANGUP"
                while reply == "HANGUP":  # out-of-band hang-up notice, not the reply
                    reply = (await asyncio.wait_for(reader.readline(), 10)).decode().rstrip("\n")
                self.replies.append(reply)
        finally:
            writer.close()
            self.finished.set()

    def digits(self) -> str:
        """Digits returned by the WAIT FOR DIGIT replies (`200 result=<ascii code>`, 0 = none)."""
        found = ""
        for command, reply in zip(self.commands, self.replies, strict=False):
            match = re.fullmatch(r"200 result=(\d+)", reply)
            if command.startswith("WAIT FOR DIGIT") and match and int(match.group(1)) > 0:
                found += chr(int(match.group(1)))
        return found


@contextlib.asynccontextmanager
async def fake_agi(asterisk: LocalAsterisk, *commands: str) -> AsyncIterator[FakeAgi]:
    agi = FakeAgi(list(commands))
    server = await asyncio.start_server(agi.handle, asterisk.ports.agi_host, asterisk.ports.agi_port)
    try:
        yield agi
    finally:
        server.close()
        await server.wait_closed()


def route(**variables: str) -> list[str]:
    """SET VARIABLE commands leaving a routing decision, as ivrserver would."""
    return [f'SET VARIABLE {name} "{value}"' for name, value in variables.items()]


def assert_ok(result: SippResult, who: str) -> None:
    assert result.ok, f"{who}: {result.describe()}"


def assert_answered(result: SippResult, who: str) -> None:
    """An agent/customer phone that answered (not merely rang and was cancelled)."""
    assert_ok(result, who)
    assert "answered" in result.logs.split(), f"{who} never answered: {result.describe()}"


# --------------------------------------------------------------------------------------- AMI


async def ami_read(reader: asyncio.StreamReader) -> dict[str, str]:
    """One AMI message (headers up to the blank line); a repeated header's values joined by "|"."""
    message: dict[str, str] = {}
    while (line := (await asyncio.wait_for(reader.readline(), 5)).decode().rstrip("\r\n")):
        name, _, value = line.partition(": ")
        message[name] = f"{message[name]}|{value}" if name in message else value
    return message


async def ami_until(reader: asyncio.StreamReader, **match: str) -> dict[str, str]:
    """Read messages until one has every header in `match`."""
    while True:
        message = await ami_read(reader)
        if all(message.get(k) == v for k, v in match.items()):
            return message


async def ami_login(asterisk: LocalAsterisk, secret: str, events: str = "off") -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", asterisk.ports.ami_port)
    banner = (await asyncio.wait_for(reader.readline(), 5)).decode()
    assert banner.startswith("Asterisk Call Manager/"), banner
    writer.write(f"Action: Login\r\nActionID: login\r\nUsername: ivrserver\r\nSecret: {secret}\r\n"
                 f"Events: {events}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer, await ami_until(reader, ActionID="login")


async def ami_send(writer: asyncio.StreamWriter, action: str, *headers: tuple[str, str]) -> None:
    lines = [f"Action: {action}", *(f"{k}: {v}" for k, v in headers)]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()


# -------------------------------------------------------------------------------------- tests


async def test_boot_is_clean_and_fast(asterisk: LocalAsterisk) -> None:
    lines = asterisk.boot_log.splitlines()
    assert any("modules will be loaded" in line for line in lines), asterisk.boot_log
    noisy = [line for line in lines if re.search(r"\b(ERROR|WARNING)\[", line)]
    assert noisy == [], "\n".join(noisy)
    assert asterisk.boot_seconds < 10
    # The rendered topology is the one the contract describes.
    queues = await asterisk.cli("queue show")
    for name in ("ivr-vip", "ivr-general", "ivr-billing", "ivr-faults", "ivr-sales"):
        assert f"{name} has 0 calls" in queues
    endpoints = await asterisk.cli("pjsip show endpoints")
    for name in ("callers", "callers-info", "customers", "agent1001", "agent1010"):
        assert re.search(rf"Endpoint:\s+{name}\b", endpoints), name


async def test_ami_login_with_least_privilege(fresh_asterisk: LocalAsterisk) -> None:
    reader, writer, reply = await ami_login(fresh_asterisk, "wrong-secret")
    assert reply["Response"] == "Error", reply
    writer.close()

    reader, writer, reply = await ami_login(fresh_asterisk, fresh_asterisk.ami_secret, events="system")
    try:
        assert reply["Response"] == "Success", reply
        # `system` read permission: FullyBooted arrives right after login (ivrserver waits for it).
        assert (await ami_until(reader, Event="FullyBooted"))["Status"] == "Fully Booted"
        # No `command` write permission: the account cannot run CLI commands.
        await ami_send(writer, "Command", ("ActionID", "cmd"), ("Command", "core show version"))
        refused = await ami_until(reader, ActionID="cmd")
        assert refused["Response"] == "Error" and "Permission denied" in refused["Message"], refused
        await ami_send(writer, "Ping", ("ActionID", "ping"))
        assert (await ami_until(reader, ActionID="ping"))["Response"] == "Success"
    finally:
        writer.close()


async def test_no_fastagi_server_falls_back_to_general_queue(fresh_asterisk: LocalAsterisk,
                                                              phones: Phones) -> None:
    # Nothing listens on the FastAGI port: AGISTATUS=FAILURE must still reach an agent.
    with pytest.raises(OSError):
        _, w = await asyncio.open_connection(fresh_asterisk.ports.agi_host, fresh_asterisk.ports.agi_port)
        w.close()
    agent = await phones.agent(1004)
    caller = await phones.call("1")
    assert_ok(caller, "caller")
    assert_answered(await agent.wait(), "agent1004 (general queue)")


@pytest.mark.parametrize("mode", ["rfc4733", "info"])
async def test_dtmf_reaches_the_agi_script(fresh_asterisk: LocalAsterisk, phones: Phones, mode: str) -> None:
    async with fake_agi(fresh_asterisk, "WAIT FOR DIGIT 5000", "WAIT FOR DIGIT 5000",
                        *route(IVR_ACTION="hangup")) as agi:
        caller = await phones.call("42", mode=mode, number="5550100")
        await asyncio.wait_for(agi.finished.wait(), 5)
    assert_ok(caller, f"caller ({mode})")
    assert agi.digits() == "42", agi.replies
    request = agi.requests[0]
    assert request["agi_network_script"] == "hotline"
    assert request["agi_callerid"] == "5550100"
    assert request["agi_extension"] == "1860"
    assert request["agi_channel"].startswith("PJSIP/callers-info-" if mode == "info" else "PJSIP/callers-")


async def test_vip_route_with_priority_and_context_id(fresh_asterisk: LocalAsterisk, phones: Phones) -> None:
    agent = await phones.agent(1001, ring_ms=1500, hold_ms=1500)
    reader, writer, reply = await ami_login(fresh_asterisk, fresh_asterisk.ami_secret, events="call,agent")
    assert reply["Response"] == "Success", reply
    async with fake_agi(fresh_asterisk, *route(IVR_CONTEXT_ID="ctx-42", IVR_QUEUE="vip", IVR_PRIORITY="7",
                                               IVR_REASON="VIP customer", IVR_ACTION="queue")):
        caller = await phones.caller()
        # While agent1001 rings, the caller waits in ivr-vip with the priority ivrserver chose.
        waiting = await poll(fresh_asterisk, "queue show ivr-vip", r"prio: 7")
        assert "PJSIP/callers-" in waiting.string
        # Once answered, the agent leg has inherited the call-context id (for AMI channelvars).
        agent_channel = await poll(fresh_asterisk, "core show channels concise", r"PJSIP/agent1001-[0-9a-f]+")
        details = await fresh_asterisk.cli(f"core show channel {agent_channel.group(0)}")
        assert "IVR_CONTEXT_ID=ctx-42" in details, details
        assert_ok(await caller.wait(), "caller")
    assert_answered(await agent.wait(), "agent1001 (vip queue)")
    # The ivrserver AMI account sees the queue events, each carrying the context id (channelvars).
    try:
        joined = await ami_until(reader, Event="QueueCallerJoin")
        connected = await ami_until(reader, Event="AgentConnect")
    finally:
        writer.close()
    assert joined["Queue"] == "ivr-vip" and "IVR_CONTEXT_ID=ctx-42" in joined["ChanVariable"], joined
    assert connected["Interface"] == "PJSIP/agent1001", connected
    assert "IVR_CONTEXT_ID=ctx-42" in connected["DestChanVariable"], connected


async def test_invalid_decision_values_fall_back_safely(fresh_asterisk: LocalAsterisk, phones: Phones) -> None:
    # A queue name that is not a queue (and would inject options), a non-numeric priority:
    # the dialplan must use the general queue with priority 0, never the raw values.
    agent = await phones.agent(1004, ring_ms=1000)
    async with fake_agi(fresh_asterisk, *route(IVR_ACTION="queue", IVR_QUEUE="vip,t,,,,1", IVR_PRIORITY="9x")):
        caller = await phones.caller()
        waiting = await poll(fresh_asterisk, "queue show ivr-general", r"prio: 0")
        assert "PJSIP/callers-" in waiting.string
        assert_ok(await caller.wait(), "caller")
    assert_answered(await agent.wait(), "agent1004 (general queue)")


async def test_agent_action_falls_back_to_queue_when_unanswered(fresh_asterisk: LocalAsterisk,
                                                               phones: Phones) -> None:
    away = await phones.agent(1005, answer=False)
    vip = await phones.agent(1001, ring_ms=200)
    async with fake_agi(fresh_asterisk, *route(IVR_ACTION="agent", IVR_AGENT="PJSIP/agent1005",
                                               IVR_AGENT_TIMEOUT="2", IVR_QUEUE="vip")):
        started = time.monotonic()
        caller = await phones.call()
    assert_ok(caller, "caller")
    assert_ok(await away.wait(), "agent1005 (rang, cancelled after IVR_AGENT_TIMEOUT)")
    assert_answered(await vip.wait(), "agent1001 (vip queue after the fallback)")
    assert time.monotonic() - started >= 2.0


async def test_agent_action_connects_the_named_agent(fresh_asterisk: LocalAsterisk, phones: Phones) -> None:
    agent = await phones.agent(1005, ring_ms=200)
    async with fake_agi(fresh_asterisk, *route(IVR_ACTION="agent", IVR_AGENT="PJSIP/agent1005",
                                               IVR_AGENT_TIMEOUT="10", IVR_QUEUE="general")):
        caller = await phones.call()
    assert_ok(caller, "caller")
    assert_answered(await agent.wait(), "agent1005")


async def test_callback_originate_bridges_agent_and_customer(fresh_asterisk: LocalAsterisk,
                                                             phones: Phones) -> None:
    agent = await phones.agent(1002, ring_ms=200, hold_ms=1000)
    customer = await phones.customer(ring_ms=300, hold_ms=5000)
    reader, writer, reply = await ami_login(fresh_asterisk, fresh_asterisk.ami_secret, events="call,user")
    try:
        assert reply["Response"] == "Success", reply
        await ami_send(writer, "Originate", ("ActionID", "cb-1"), ("Channel", "PJSIP/agent1002"),
                       ("Context", "ivrserver-callback"), ("Exten", "s"), ("Priority", "1"),
                       ("Async", "true"), ("Timeout", "10000"), ("Variable", "CB_ID=cb-1"),
                       ("Variable", "CB_NUMBER=5551234"), ("Variable", "CB_DIAL=PJSIP/5551234@customers"))
        assert (await ami_until(reader, ActionID="cb-1", Event="OriginateResponse"))["Response"] == "Success"
        result = await ami_until(reader, Event="UserEvent", UserEvent="CallbackResult")
        assert result["CB_ID"] == "cb-1"
        assert result["Status"] == "ANSWER"
    finally:
        writer.close()
    assert_answered(await agent.wait(), "agent1002")
    assert_answered(await customer.wait(), "customer")


async def poll(asterisk: LocalAsterisk, command: str, pattern: str, timeout: float = 8.0) -> re.Match[str]:
    """Run a CLI command until its output matches `pattern` (the match's .string is the output)."""
    deadline = time.monotonic() + timeout
    while True:
        out = await asterisk.cli(command)
        match = re.search(pattern, out)
        if match:
            return match
        if time.monotonic() > deadline:
            raise AssertionError(f"`{command}` never matched {pattern!r}; last output:\n{out}")
        await asyncio.sleep(0.1)


async def test_notification_press_1_reaches_an_agent(fresh_asterisk: LocalAsterisk, phones: Phones) -> None:
    # Customer-first: the customer hears the prompt, presses 1; the `notify` AGI script routes
    # the call (here: vip queue) like a hotline call.
    agent = await phones.agent(1003, ring_ms=200, hold_ms=500)
    customer = await phones.customer(ring_ms=200, press="1", hold_ms=10000)
    reader, writer, reply = await ami_login(fresh_asterisk, fresh_asterisk.ami_secret, events="user")
    try:
        assert reply["Response"] == "Success", reply
        async with fake_agi(fresh_asterisk, *route(IVR_ACTION="queue", IVR_QUEUE="vip")) as agi:
            await ami_send(writer, "Originate", ("ActionID", "n-7"), ("Channel", "PJSIP/5551234@customers"),
                           ("Context", "ivrserver-notify"), ("Exten", "s"), ("Priority", "1"),
                           ("Async", "true"), ("Timeout", "10000"), ("Variable", "NOTIFY_ID=n-7"),
                           ("Variable", "NOTIFY_PROMPT=beep"))
            result = await ami_until(reader, Event="UserEvent", UserEvent="NotifyResult")
            assert (result["NOTIFY_ID"], result["Choice"]) == ("n-7", "1")
            await asyncio.wait_for(agi.finished.wait(), 5)
        assert agi.requests[0]["agi_network_script"] == "notify?id=n-7"
    finally:
        writer.close()
    assert_answered(await agent.wait(), "agent1003 (vip queue after the notification)")
    assert_answered(await customer.wait(), "customer")


async def test_ami_sends_only_the_events_ivrserver_parses(fresh_asterisk: LocalAsterisk, phones: Phones) -> None:
    """manager.conf's eventfilter lines: a whole queued call produces only events ivrserver parses
    (no Newstate, VarSet, Bridge*, HangupRequest ...), and action responses are not filtered."""
    agent = await phones.agent(1001, ring_ms=300, hold_ms=500)
    reader, writer, reply = await ami_login(fresh_asterisk, fresh_asterisk.ami_secret, events="system,call,agent,user")
    assert reply["Response"] == "Success", reply
    try:
        async with fake_agi(fresh_asterisk, *route(IVR_QUEUE="vip", IVR_ACTION="queue")):
            caller = await phones.caller()
            assert_ok(await caller.wait(), "caller")
        assert_answered(await agent.wait(), "agent1001 (vip queue)")
        await ami_send(writer, "QueueStatus", ("ActionID", "qs"), ("Queue", "ivr-vip"))
        events: list[dict[str, str]] = []
        while True:
            message = await asyncio.wait_for(ami_read(reader), 10)
            if message.get("Event") == "QueueStatusComplete":
                break
            if "Event" in message:
                events.append(message)
    finally:
        writer.close()
    pushed = {m["Event"] for m in events if m.get("ActionID") != "qs"}
    listed = {m["Event"] for m in events if m.get("ActionID") == "qs"}
    assert {"Newchannel", "QueueCallerJoin", "AgentCalled", "AgentConnect", "DialBegin", "Hangup"} <= pushed, pushed
    assert pushed <= ami_events.EVENT_NAMES, pushed - ami_events.EVENT_NAMES
    assert "QueueMember" in listed, listed  # the response's event list is not filtered
