"""FastAGI server over a real TCP socket.

The peer here speaks AGI the way res_agi.c does, from a script. A scripted peer is used ONLY for
protocol edges a real Asterisk cannot be made to produce on demand (a HANGUP notice between a
command and its reply, a multi-line 520, a silent peer, a port scan). Real calls through a real
Asterisk are in tests/integration.
"""

from __future__ import annotations

import asyncio

import pytest

from ivrserver.pbx.fastagi import AgiChannel, AgiError, AgiHangup, FastAgiServer

HEADERS = (
    "agi_network: yes\n"
    "agi_network_script: hotline?lang=en\n"
    "agi_request: agi://127.0.0.1/hotline?lang=en\n"
    "agi_channel: PJSIP/callers-00000001\n"
    "agi_uniqueid: 1732330000.1\n"
    "agi_callerid: 15550001\n"
    "agi_calleridname: Eve\n"
    "\n"
)


_peers: list[asyncio.StreamWriter] = []


@pytest.fixture
async def server():
    srv = FastAgiServer("127.0.0.1", 0, header_timeout=1.0, command_timeout=1.0)
    await srv.start()
    yield srv
    await srv.stop(drain_timeout=1.0)
    while _peers:
        writer = _peers.pop()
        writer.close()
        await writer.wait_closed()


async def connect(srv: FastAgiServer):
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    _peers.append(writer)
    return reader, writer


async def open_call(srv: FastAgiServer, headers: str = HEADERS):
    reader, writer = await connect(srv)
    writer.write(headers.encode())
    await writer.drain()
    return reader, writer


async def expect(reader: asyncio.StreamReader, line: bytes) -> None:
    got = await asyncio.wait_for(reader.readline(), 2)
    assert got == line


async def test_connect_and_close_does_not_hang_the_server(server: FastAgiServer) -> None:
    for _ in range(20):
        _, writer = await connect(server)
        writer.close()
    await asyncio.sleep(0.05)
    assert server.active_calls == 0
    # And the server still serves a real request afterwards.
    seen: list[str] = []

    async def handler(ch: AgiChannel) -> None:
        seen.append(ch.request.callerid)
        await ch.set_variable("IVR_ACTION", "queue")

    server.route("hotline", handler)
    reader, writer = await open_call(server)
    await expect(reader, b'SET VARIABLE "IVR_ACTION" "queue"\n')
    writer.write(b"200 result=1\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""  # handler done → server closes
    assert seen == ["15550001"]


async def test_silent_peer_is_dropped_after_header_timeout(server: FastAgiServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"agi_network: yes\n")  # never finishes the header block
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 3) == b""


async def test_hangup_notice_between_command_and_reply_keeps_replies_paired(server: FastAgiServer) -> None:
    results: list[object] = []

    async def handler(ch: AgiChannel) -> None:
        results.append(await ch.get_data("vm-press", 3000, 4))
        assert ch.hungup
        results.append(await ch.get_variable("IVR_ACTION"))  # dead-safe command still runs
        try:
            await ch.stream_file("goodbye")
        except AgiHangup:
            results.append("hangup")

    server.route("hotline", handler)
    reader, writer = await open_call(server)
    await expect(reader, b'GET DATA "vm-press" 3000 4\n')
    writer.write(b"HANGUP\n200 result=12 (timeout)\n")
    await writer.drain()
    await expect(reader, b'GET VARIABLE "IVR_ACTION"\n')
    writer.write(b"200 result=1 (queue)\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""  # STREAM FILE never sent on a dead channel
    assert results == [("12", True), "queue", "hangup"]


async def test_multiline_520_and_510_become_errors_and_next_reply_pairs(server: FastAgiServer) -> None:
    results: list[object] = []

    async def handler(ch: AgiChannel) -> None:
        for verb in ("SAY NUMBER", "NOOP"):
            try:
                await ch.send(verb) if verb == "NOOP" else await ch.say_number(42)
            except AgiError as exc:
                results.append(exc.reply.code if exc.reply else None)
        results.append(await ch.stream_file("vm-press", "0123"))

    server.route("hotline", handler)
    reader, writer = await open_call(server)
    await expect(reader, b'SAY NUMBER 42 ""\n')
    writer.write(b"520-Invalid command syntax.  Proper usage follows:\n"
                 b"Usage: SAY NUMBER <number> <escape digits>\n"
                 b"520 End of proper usage.\n")
    await writer.drain()
    await expect(reader, b"NOOP\n")
    writer.write(b"510 Invalid or unknown command\n")
    await writer.drain()
    await expect(reader, b'STREAM FILE "vm-press" "0123"\n')
    writer.write(b"200 result=50 endpos=1200\n")
    await writer.drain()
    await asyncio.wait_for(reader.read(), 2)
    assert results == [520, 510, "2"]


async def test_empty_get_data_with_timeout_keeps_the_flag(server: FastAgiServer) -> None:
    results: list[object] = []

    async def handler(ch: AgiChannel) -> None:
        results.append(await ch.get_data("vm-press", 1000, 1))

    server.route("hotline", handler)
    reader, writer = await open_call(server)
    await reader.readline()
    writer.write(b"200 result= (timeout)\n")
    await writer.drain()
    await asyncio.wait_for(reader.read(), 2)
    assert results == [("", True)]


async def test_unknown_route_and_query_string(server: FastAgiServer) -> None:
    reader, writer = await open_call(server, HEADERS.replace("hotline?lang=en", "nothere?x=1"))
    line = await asyncio.wait_for(reader.readline(), 2)
    assert line.startswith(b'VERBOSE "ivrserver: no route for script nothere"')
    writer.write(b"200 result=1\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""


async def test_command_timeout_closes_the_connection(server: FastAgiServer) -> None:
    errors: list[str] = []

    async def handler(ch: AgiChannel) -> None:
        try:
            await ch.wait_for_digit(100)
        except AgiError as exc:
            errors.append(str(exc))

    server.route("hotline", handler)
    reader, _writer = await open_call(server)
    await reader.readline()  # never answer
    assert await asyncio.wait_for(reader.read(), 3) == b""
    assert errors == ["WAIT FOR DIGIT: no reply within 1.0s"]


async def test_handler_crash_closes_call_and_server_survives(server: FastAgiServer) -> None:
    async def handler(ch: AgiChannel) -> None:
        raise RuntimeError("bug")

    server.route("hotline", handler)
    for _ in range(2):
        reader, _writer = await open_call(server)
        assert await asyncio.wait_for(reader.read(), 2) == b""
    assert server.serving


async def test_stop_drains_then_hands_calls_back(server: FastAgiServer) -> None:
    started = asyncio.Event()

    async def handler(ch: AgiChannel) -> None:
        started.set()
        await ch.wait_for_digit(60000)

    server.route("hotline", handler)
    reader, _writer = await open_call(server)
    await started.wait()
    await reader.readline()
    await server.stop(drain_timeout=0.2)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    assert server.active_calls == 0
    assert not server.serving


async def prompt_call(server: FastAgiServer, results: list[str], *, then_set: bool = False):
    """A call whose handler plays one prompt and records how it ended ("hangup" / "error"); with
    `then_set` it then sets IVR_REASON (dead-safe: sent after a hang-up too). Returns at the prompt."""

    async def handler(ch: AgiChannel) -> None:
        try:
            await ch.stream_file("vm-press", "123")
        except AgiHangup:
            results.append("hangup")
        except AgiError:
            results.append("error")
        if then_set:
            await ch.set_variable("IVR_REASON", "after")

    server.route("hotline", handler)
    reader, writer = await open_call(server)
    await expect(reader, b'STREAM FILE "vm-press" "123"\n')
    return reader, writer


@pytest.mark.parametrize(("probe_reply", "expected"), [
    (b"511 Command Not Permitted on a dead channel or intercept routine\n", "hangup"),
    (b"HANGUP\n200 result=6\n", "hangup"),
    (b"200 result=6\n", "error"),
])
async def test_minus_one_is_told_apart_by_a_channel_status_probe(server: FastAgiServer, probe_reply: bytes,
                                                                  expected: str) -> None:
    """res_agi answers -1 when the caller hangs up mid-prompt, and the HANGUP notice may come later."""
    results: list[str] = []
    reader, writer = await prompt_call(server, results)
    writer.write(b"200 result=-1 endpos=0\n")
    await writer.drain()
    await expect(reader, b"CHANNEL STATUS\n")
    writer.write(probe_reply)
    await writer.drain()
    await asyncio.wait_for(reader.read(), 2)
    assert results == [expected]


@pytest.mark.parametrize("delay", [None, 0.0, 0.03])
async def test_a_hangup_notice_right_after_minus_one_needs_no_probe(server: FastAgiServer,
                                                                     delay: float | None) -> None:
    """res_agi writes HANGUP just after the -1 reply of the prompt the hang-up cut short: in the same
    segment (None), its own segment (0) or a little later; no CHANNEL STATUS round trip then."""
    results: list[str] = []
    reader, writer = await prompt_call(server, results, then_set=True)
    if delay is None:
        writer.write(b"200 result=-1 endpos=0\nHANGUP\n")
    else:
        writer.write(b"200 result=-1 endpos=0\n")
        await writer.drain()
        await asyncio.sleep(delay)
        writer.write(b"HANGUP\n")
    await writer.drain()
    await expect(reader, b'SET VARIABLE "IVR_REASON" "after"\n')
    writer.write(b"200 result=1\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    assert results == ["hangup"]


async def test_reply_split_across_reads_and_crlf_lines(server: FastAgiServer) -> None:
    """TCP may cut a reply anywhere: lines are put back together, a CR before the LF is dropped."""
    results: list[object] = []

    async def handler(ch: AgiChannel) -> None:
        results.append(ch.request.callerid)
        results.append(await ch.get_data("vm-press", 3000, 4))
        results.append(await ch.get_variable("IVR_ACTION"))

    server.route("hotline", handler)
    reader, writer = await connect(server)
    for i in range(0, len(HEADERS), 7):
        writer.write(HEADERS[i:i + 7].replace("\n", "\r\n").encode())
        await writer.drain()
        await asyncio.sleep(0)
    await expect(reader, b'GET DATA "vm-press" 3000 4\n')
    for byte in b"200 result=42 (timeout)\r\n":
        writer.write(bytes([byte]))
        await writer.drain()
    await expect(reader, b'GET VARIABLE "IVR_ACTION"\n')
    writer.write(b"200 result=1 (queue)\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    assert results == ["15550001", ("42", True), "queue"]


async def test_overlong_line_drops_the_connection(server: FastAgiServer) -> None:
    calls: list[str] = []

    async def handler(ch: AgiChannel) -> None:
        calls.append(ch.request.callerid)

    server.route("hotline", handler)
    reader, writer = await connect(server)
    writer.write(b"agi_network_script: hotline\nagi_callerid: " + b"1" * 20000)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 3) == b""
    assert calls == []
    assert server.active_calls == 0


async def test_each_command_gets_the_whole_timeout(server: FastAgiServer) -> None:
    """The deadline follows the command in flight: a slow first reply does not shorten the second's."""
    outcome: list[object] = []
    loop = asyncio.get_running_loop()

    async def handler(ch: AgiChannel) -> None:
        outcome.append(await ch.wait_for_digit(100))
        sent = loop.time()
        try:
            await ch.wait_for_digit(100)
        except AgiError as exc:
            outcome.append(str(exc))
            outcome.append(loop.time() - sent)

    server.route("hotline", handler)
    reader, writer = await open_call(server)
    await expect(reader, b"WAIT FOR DIGIT 100\n")
    await asyncio.sleep(0.7)  # of the 1.0 s command timeout
    writer.write(b"200 result=49\n")
    await writer.drain()
    await expect(reader, b"WAIT FOR DIGIT 100\n")
    assert await asyncio.wait_for(reader.read(), 3) == b""  # never answered: timed out and closed
    assert outcome[:2] == ["1", "WAIT FOR DIGIT: no reply within 1.0s"]
    assert 0.95 <= outcome[2] < 2.5
