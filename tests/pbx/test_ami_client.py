"""AMI adapter against a scripted AMI peer replaying recorded Asterisk 22 output.

A scripted peer is used only for what a real Asterisk cannot be made to produce on demand:
a UTF-8 character split across two TCP reads, a connection that goes silent, a refused login.
Login, events and reconnect against the real Asterisk are in tests/integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from panoramisk.message import Message

from ivrserver.config import AmiSettings
from ivrserver.pbx import ami_events
from ivrserver.pbx.ami import AmiClient, AmiError, parse_headers

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
# Recorded from Asterisk 22.10 (manager_channels.c / app_queue.c), IDs shortened.
AGENT_CALLED = (
    "Event: AgentCalled\r\nPrivilege: agent,all\r\nChannel: PJSIP/callers-00000001\r\n"
    "ChannelState: 6\r\nChannelStateDesc: Up\r\nCallerIDNum: 15550001\r\nCallerIDName: José Müller\r\n"
    "Context: ivrserver-route\r\nExten: queue\r\nPriority: 3\r\nUniqueid: 1732330000.1\r\n"
    "Linkedid: 1732330000.1\r\nChanVariable: IVR_CONTEXT_ID=c-4f2a\r\nChanVariable: CB_ID=\r\n"
    "DestChannel: PJSIP/agent1001-00000002\r\nDestUniqueid: 1732330000.2\r\nDestLinkedid: 1732330000.1\r\n"
    "Queue: vip\r\nMemberName: agent1001\r\nInterface: PJSIP/agent1001\r\n\r\n"
).encode()


class Peer:
    """A one-shot TCP server that runs `script(reader, writer)` for each connection."""

    def __init__(self, script: Callable) -> None:
        self.script = script
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self.writers.append(writer)
            await self.script(reader, writer)

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def read_action(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if not raw:
            raise EOFError("the client closed the connection")
        line = raw.decode().rstrip("\r\n")
        if not line:
            if headers:
                return headers
            continue
        k, _, v = line.partition(": ")
        headers[k] = v


def settings(port: int, **kw) -> AmiSettings:
    return AmiSettings(host="127.0.0.1", port=port, ping_interval=0.2, silence_timeout=0.6,
                       action_timeout=1.0, **kw)


async def login_ok(reader, writer) -> dict[str, str]:
    writer.write(BANNER)
    action = await read_action(reader)
    writer.write(f"Response: Success\r\nActionID: {action['ActionID']}\r\nMessage: Authentication accepted\r\n\r\n"
                 .encode())
    await writer.drain()
    return action


async def test_events_are_typed_and_utf8_split_across_reads_survives() -> None:
    async def script(reader, writer):
        action = await login_ok(reader, writer)
        assert action["Events"] == "call,agent,user,system"
        cut = AGENT_CALLED.index("é".encode()) + 1  # split inside the two-byte 'é'
        writer.write(AGENT_CALLED[:cut])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(AGENT_CALLED[cut:])
        writer.write(b"Event: VarSet\r\nChannel: x\r\n\r\n")  # unused type: ignored
        writer.write(b"Event: Hangup\r\nChannel: PJSIP/x-1\r\n\r\n")  # no Uniqueid: rejected, not crashing
        await writer.drain()
        await asyncio.sleep(5)

    peer = Peer(script)
    port = await peer.start()
    client = AmiClient(settings(port))
    await client.start()
    try:
        assert await client.wait_logged_in(2)
        event = await asyncio.wait_for(client.events.get(), 2)
        assert isinstance(event, ami_events.AgentCalled)
        assert event.caller_id_name == "José Müller"
        assert (event.linkedid, event.context_id, event.member_name) == ("1732330000.1", "c-4f2a", "agent1001")
        assert event.dest_channel == "PJSIP/agent1001-00000002"
        await asyncio.sleep(0.1)
        assert client.events.empty()
    finally:
        await client.close()
        await peer.stop()


@pytest.mark.parametrize("raw", [
    AGENT_CALLED.decode().strip(),
    "Event: Hangup\r\nPrivilege: call,all\r\nChannel: PJSIP/callers-00000001\r\nUniqueid: 1.1\r\nLinkedid: 1.1\r\n"
    "Cause: 16\r\nCause-txt: Normal Clearing",
    "Event: UserEvent\r\nUserEvent: CallbackResult\r\nCB_ID: cb-1\r\nStatus: ANSWER\r\nResult: \"quoted\" ",
    "Event: X\r\nno colon here\r\nA: 1\r\nA: 2\r\nA: 3\r\nB: x: y\r\nEmpty: ",
])
def test_event_headers_are_parsed_as_panoramisk_parses_them(raw: str) -> None:
    """The fast path for unsolicited events must read exactly what panoramisk's Message would."""
    theirs = {k: v for k, v in Message.from_line(raw).items() if k != "content"}  # Message adds the body
    assert parse_headers(raw) == theirs


async def test_events_and_action_replies_interleaved_reach_their_destinations() -> None:
    """An action's event list (events with its ActionID) resolves the action, unsolicited events
    between them go to `events`, in any split of the stream; Shutdown makes the client reconnect."""
    unsolicited = (b"Event: Newchannel\r\nChannel: PJSIP/callers-00000009\r\nCallerIDNum: 15550009\r\n"
                   b"Uniqueid: 9.9\r\nLinkedid: 9.9\r\n\r\n")

    async def script(reader, writer):
        await login_ok(reader, writer)
        if peer.connections > 1:
            await asyncio.sleep(5)  # the reconnection after Shutdown: logged in is all it needs
            return
        while (action := await read_action(reader))["Action"] != "QueueStatus":  # answer the pinger meanwhile
            writer.write(f"Response: Success\r\nActionID: {action['ActionID']}\r\nPing: Pong\r\n\r\n".encode())
        aid = action["ActionID"]
        stream = (f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\nMessage: Queue status\r\n\r\n"
                  f"Event: QueueMember\r\nActionID: {aid}\r\nQueue: vip\r\nName: agent1001\r\n"
                  f"Interface: PJSIP/agent1001\r\nStatus: 1\r\nPaused: 0\r\n\r\n").encode() + unsolicited + (
                  f"Event: QueueStatusComplete\r\nActionID: {aid}\r\nEventList: Complete\r\nListItems: 1\r\n\r\n"
                  ).encode() + AGENT_CALLED
        for i in range(0, len(stream), 37):  # every message split somewhere
            writer.write(stream[i:i + 37])
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.write(b"Event: Shutdown\r\nPrivilege: system,all\r\nShutdown: Uncleanly\r\nRestart: True\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    peer = Peer(script)
    port = await peer.start()
    # no watchdog within the test: the reconnection can only come from the Shutdown event
    client = AmiClient(AmiSettings(host="127.0.0.1", port=port, ping_interval=10, silence_timeout=30,
                                   action_timeout=1.0))
    await client.start()
    try:
        assert await client.wait_logged_in(2)
        reply = await client.action("QueueStatus", timeout=2)
        assert [m.get("Event") for m in reply[1:]] == ["QueueMember", "QueueStatusComplete"]
        first = await asyncio.wait_for(client.events.get(), 2)
        second = await asyncio.wait_for(client.events.get(), 2)
        assert isinstance(first, ami_events.Newchannel) and first.caller_id_num == "15550009"
        assert isinstance(second, ami_events.AgentCalled) and second.caller_id_name == "José Müller"
        for _ in range(100):
            if peer.connections >= 2:
                break
            await asyncio.sleep(0.05)
        assert peer.connections >= 2  # Shutdown closed the connection; panoramisk reconnected
    finally:
        await client.close()
        await peer.stop()


async def test_silent_connection_is_closed_and_reconnects() -> None:
    async def script(reader, writer):
        await login_ok(reader, writer)
        await asyncio.sleep(10)  # says nothing more, not even to pings

    peer = Peer(script)
    port = await peer.start()
    client = AmiClient(settings(port))
    await client.start()
    try:
        assert await client.wait_logged_in(2)
        # ~2 s normally (0.6 s of silence + reconnect delay); generous bound for a loaded machine
        for _ in range(200):
            if peer.connections >= 2:
                break
            await asyncio.sleep(0.1)
        assert peer.connections >= 2
    finally:
        await client.close()
        await peer.stop()


async def test_refused_login_is_reported() -> None:
    async def script(reader, writer):
        writer.write(BANNER)
        action = await read_action(reader)
        writer.write(f"Response: Error\r\nActionID: {action['ActionID']}\r\nMessage: Authentication failed\r\n\r\n"
                     .encode())
        await writer.drain()
        await asyncio.sleep(5)

    peer = Peer(script)
    port = await peer.start()
    client = AmiClient(settings(port))
    await client.start()
    try:
        assert not await client.wait_logged_in(2)
        assert client.login_error == "Authentication failed"
        with pytest.raises(AmiError, match="not connected"):
            await client.action("Ping")
    finally:
        await client.close()
        await peer.stop()


async def test_header_injection_and_action_timeout() -> None:
    async def script(reader, writer):
        await login_ok(reader, writer)
        await read_action(reader)  # swallow, never answer
        await asyncio.sleep(5)

    peer = Peer(script)
    port = await peer.start()
    client = AmiClient(settings(port, ))
    await client.start()
    try:
        assert await client.wait_logged_in(2)
        with pytest.raises(AmiError, match="CR/LF"):
            await client.action("Originate", {"Channel": "PJSIP/x\r\nAction: Command"})
        with pytest.raises(AmiError, match="comma"):
            await client.originate(channel="Local/1@x", context="c", exten="s", channel_id="cb-1",
                                   variables={"CB_NUMBER": "1,2"})
        with pytest.raises(AmiError, match="no response"):
            await client.action("CoreStatus")
    finally:
        await client.close()
        await peer.stop()
