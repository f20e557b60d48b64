"""AMI adapter against a scripted AMI peer replaying recorded Asterisk 22 output.

A scripted peer is used only for what a real Asterisk cannot be made to produce on demand:
a UTF-8 character split across two TCP reads, a connection that goes silent, a refused login.
Login, events and reconnect against the real Asterisk are in tests/integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ivrserver.config import AmiSettings
from ivrserver.pbx import ami_events
from ivrserver.pbx.ami import AmiClient, AmiError

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
        line = (await reader.readline()).decode().rstrip("\r\n")
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
