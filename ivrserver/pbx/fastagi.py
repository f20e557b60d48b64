"""FastAGI server on an asyncio.Protocol, and the one-command-at-a-time channel object.

panoramisk's FastAGI server is not used: it spins on connect-and-close, mis-pairs replies after
HANGUP and loses the GET DATA timeout flag (see shared/asterisk-facts.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from ivrserver.logs import call_id_var
from ivrserver.metrics import Metrics
from ivrserver.pbx import agi_wire
from ivrserver.pbx.agi_wire import AgiReply, AgiRequest

log = logging.getLogger("ivrserver.fastagi")

MAX_HEADERS = 200
# Commands Asterisk still runs on a hung-up channel; anything else gets 511 after HANGUP.
DEAD_SAFE = {"EXEC", "GET VARIABLE", "SET VARIABLE", "NOOP", "VERBOSE", "DATABASE GET", "DATABASE PUT",
             "DATABASE DEL", "GET FULL VARIABLE"}


class AgiError(Exception):
    """A command failed: 510/511/520 reply or result=-1 on a live channel."""

    def __init__(self, message: str, reply: AgiReply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class AgiHangup(AgiError):
    """The caller hung up (or the connection closed): stop the script."""


HANGUP_NOTICE_WAIT = 0.1  # seconds to wait for res_agi's HANGUP after a result=-1 reply
_LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Za-z0-9]{1,20})?$")
Handler = Callable[["AgiChannel"], Awaitable[None]]


class AgiConnection(asyncio.Protocol):
    """One FastAGI socket as complete lines in and commands out.

    An asyncio.Protocol rather than StreamReader/StreamWriter: a reply usually arrives in one read,
    and its line is then taken without a readuntil scan, a drain() or a Future of its own; the
    command timeout is one lazily re-armed timer per connection instead of a timer per command
    (asyncio.timeout is ~4 µs per command on uvloop; bench/fastagi_bench.py --full: ~3 % more
    calls/s saturated).
    """

    def __init__(self, on_connect: Callable[[AgiConnection], None], limit: int = agi_wire.MAX_LINE * 2) -> None:
        self._on_connect = on_connect
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._partial = b""
        self._lines: collections.deque[bytes] = collections.deque()
        self._buffered = 0  # bytes in _lines: reading pauses above the limit (nothing asked for them)
        self._reading_paused = False
        self._eof = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._deadline = 0.0  # of the command in flight; 0 = none
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        if self._partial:
            data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._lines.append(line)
            self._buffered += len(line) + 1
        if len(self._partial) > self._limit:
            self._error = agi_wire.AgiProtocolError("line too long")
            self._partial = b""
        elif self._buffered > self._limit and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._cancel_timer()
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- used by the server and AgiChannel ----------------------------------------------------
    async def readline(self) -> bytes | None:
        """The next line without its LF (CR stripped too), None at end of stream.

        Raises AgiProtocolError for a line over the limit or cut off by the end of the stream,
        TimeoutError when the command in flight passed its deadline."""
        while not self._lines:
            if self._error is not None:
                raise self._error
            if self._expired:
                raise TimeoutError
            if self._eof:
                if self._partial:
                    self._partial = b""
                    raise agi_wire.AgiProtocolError("line truncated by the end of the stream")
                return None
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._take_line()

    def _take_line(self) -> bytes:
        line = self._take()
        return line[:-1] if line.endswith(b"\r") else line

    def _take(self) -> bytes:
        line = self._lines.popleft()
        self._buffered -= len(line) + 1
        if self._reading_paused and self._buffered <= self._limit // 2:
            self._reading_paused = False
            self._transport.resume_reading()  # type: ignore[union-attr]
        return line

    def buffered_line(self) -> bytes | None:
        """The next line if one is already complete (as `readline` returns it), else None: the
        header block arrives in one read, and its ~20 lines need no coroutine each."""
        return self._take_line() if self._lines else None

    async def hangup_notice(self, wait: float) -> bool:
        """With no command in flight: whether the next line, within `wait` seconds, is the
        out-of-band `HANGUP` (taken) — or the stream ended. Any other line stays for `readline`."""
        if not self._lines and not self._eof and self._error is None:
            self._waiter = self._loop.create_future()
            timer = self._loop.call_later(wait, self._wake)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        if not self._lines:
            return self._eof
        if self._lines[0].rstrip(b"\r") != b"HANGUP":
            return False
        self._take()
        return True

    async def write(self, data: bytes, timeout: float) -> None:
        """Send a command whose reply must start within `timeout` seconds (see `done`)."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("connection closed")
        self._transport.write(data)
        self._deadline = self._loop.time() + timeout
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)
        if self._write_paused:
            self._drained = self._loop.create_future()
            await self._drained
            if self._transport.is_closing():
                raise ConnectionResetError("connection closed")

    def done(self) -> None:
        """The reply to the command in flight was read: its deadline no longer applies."""
        self._deadline = 0.0

    def close(self) -> None:
        self._cancel_timer()
        if self._transport is not None:
            self._transport.close()

    # -- internals -------------------------------------------------------------------------
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _check_deadline(self) -> None:
        # One timer per connection: re-armed for the command in flight instead of one per command.
        self._timer = None
        if not self._deadline:
            return
        if self._loop.time() >= self._deadline:
            self._expired = True
            self._wake()
        else:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class AgiChannel:
    """One FastAGI call. Commands are serialised: AGI allows one in flight per connection."""

    def __init__(self, request: AgiRequest, connection: AgiConnection, command_timeout: float,
                 metrics: Metrics | None = None) -> None:
        self.request = request
        self.call_id = request.uniqueid or uuid.uuid4().hex
        self.hungup = False
        self._conn = connection
        self._lock = asyncio.Lock()
        self._timeout = command_timeout
        self._metrics = metrics
        self._closed = False

    async def _read_line(self) -> str:
        raw = await self._conn.readline()
        if raw is None:
            self._closed = True
            raise AgiHangup("connection closed by Asterisk")
        return raw.decode("utf-8", errors="replace")

    async def _read_reply(self) -> AgiReply:
        while True:
            line = await self._read_line()
            if line == "HANGUP":
                # Out-of-band notice: remember it, the real reply still follows.
                self.hungup = True
                continue
            if line.startswith("100 "):
                continue  # GOSUB's "Trying...": the final reply follows
            if line.startswith("520-"):
                usage = [line[4:]]
                while True:
                    nxt = await self._read_line()
                    if nxt.startswith("520 "):
                        break
                    usage.append(nxt)
                return AgiReply(code=520, text="\n".join(usage))
            if not line:
                continue
            return agi_wire.parse_reply_line(line)

    async def send(self, verb: str, *args: str | int) -> AgiReply:
        """Send one command and return its reply; raise AgiHangup/AgiError on failure."""
        data = agi_wire.command(verb, *args)
        async with self._lock:
            if self._closed:
                raise AgiHangup("connection closed")
            if self.hungup and verb not in DEAD_SAFE:
                raise AgiHangup(f"{verb}: caller hung up")
            started = time.perf_counter()
            try:
                await self._conn.write(data, self._timeout)
                reply = await self._read_reply()
                self._conn.done()
            except ConnectionError as exc:
                self._closed = True
                raise AgiHangup(f"{verb}: connection lost") from exc
            except TimeoutError as exc:
                # The reply may still come and would then be read as the next command's reply:
                # this connection can no longer be trusted.
                self._closed = True
                self._conn.close()
                raise AgiError(f"{verb}: no reply within {self._timeout}s") from exc
            if self._metrics is not None:
                self._metrics.child(self._metrics.agi_command_seconds, verb).observe(time.perf_counter() - started)
        if reply.code == 511:
            self.hungup = True
            raise AgiHangup(f"{verb}: channel is dead", reply)
        if reply.code != 200:
            raise AgiError(f"{verb}: {reply.code} {reply.text}", reply)
        return reply

    async def _digit_result(self, reply: AgiReply, verb: str) -> str | None:
        try:
            code = int(reply.result)
        except ValueError as exc:
            raise agi_wire.AgiProtocolError(f"{verb}: result is not a number: {reply.result!r}") from exc
        if code < 0:
            await self._failed(verb, reply, "failed (result=-1)")
        return chr(code) if code > 0 else None

    async def _failed(self, verb: str, reply: AgiReply, what: str) -> None:
        """result=-1: a hang-up or a real failure. res_agi writes its HANGUP notice right after the
        reply of the command the hang-up cut short: wait briefly for it (a round trip saved on most
        calls: callers hang up mid-prompt); without it, CHANNEL STATUS tells them apart, being
        refused (511) on a dead channel."""
        if not self.hungup:
            async with self._lock:
                if self._closed or await self._conn.hangup_notice(HANGUP_NOTICE_WAIT):
                    self.hungup = True
        if not self.hungup:
            with contextlib.suppress(AgiHangup, AgiError):
                await self.send("CHANNEL STATUS")
        if self.hungup:
            raise AgiHangup(f"{verb}: caller hung up", reply)
        raise AgiError(f"{verb}: {what}", reply)

    async def answer(self) -> None:
        reply = await self.send("ANSWER")
        if reply.result == "-1":
            raise AgiError("ANSWER failed", reply)

    async def stream_file(self, file: str, escape_digits: str = "") -> str | None:
        """Play a sound file; return the digit that interrupted it, if any."""
        reply = await self.send("STREAM FILE", agi_wire.check_sound(file),
                                agi_wire.check_escape_digits(escape_digits))
        return await self._digit_result(reply, "STREAM FILE")

    async def get_data(self, file: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """Play a prompt and collect up to `max_digits`; returns (digits, timed_out)."""
        reply = await self.send("GET DATA", agi_wire.check_sound(file), int(timeout_ms), int(max_digits))
        if reply.result == "-1":
            await self._failed("GET DATA", reply, "failed (missing prompt file?)")
        digits = reply.result
        if any(c not in "0123456789*#" for c in digits):
            raise agi_wire.AgiProtocolError(f"GET DATA returned non-DTMF characters: {digits!r}")
        return digits, reply.timed_out

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        reply = await self.send("WAIT FOR DIGIT", int(timeout_ms))
        return await self._digit_result(reply, "WAIT FOR DIGIT")

    async def say_number(self, n: int, escape_digits: str = "") -> str | None:
        reply = await self.send("SAY NUMBER", int(n), agi_wire.check_escape_digits(escape_digits))
        return await self._digit_result(reply, "SAY NUMBER")

    async def say_digits(self, digits: str, escape_digits: str = "") -> str | None:
        if not digits.isdigit():
            raise agi_wire.AgiEncodingError(f"SAY DIGITS takes digits only: {digits!r}")
        reply = await self.send("SAY DIGITS", digits, agi_wire.check_escape_digits(escape_digits))
        return await self._digit_result(reply, "SAY DIGITS")

    async def say_date(self, epoch: int, escape_digits: str = "") -> str | None:
        reply = await self.send("SAY DATE", int(epoch), agi_wire.check_escape_digits(escape_digits))
        return await self._digit_result(reply, "SAY DATE")

    async def set_variable(self, name: str, value: str) -> None:
        await self.send("SET VARIABLE", agi_wire.check_var_name(name), value)

    async def set_language(self, code: str) -> None:
        """Switch the channel's prompt language (CHANNEL(language) is a function: fixed name here)."""
        if not _LANGUAGE.match(code):
            raise agi_wire.AgiEncodingError(f"not a language code: {code!r}")
        await self.send("SET VARIABLE", "CHANNEL(language)", code)

    async def get_variable(self, name: str) -> str | None:
        reply = await self.send("GET VARIABLE", agi_wire.check_var_name(name))
        return reply.data if reply.result == "1" else None

    async def verbose(self, message: str, level: int = 1) -> None:
        await self.send("VERBOSE", message, int(level))

    async def hangup(self) -> None:
        await self.send("HANGUP")

    def close(self) -> None:
        self._closed = True
        self._conn.close()


class FastAgiServer:
    """Accepts FastAGI connections and runs the handler registered for the request's script."""

    def __init__(self, host: str, port: int, *, header_timeout: float = 5.0, command_timeout: float = 120.0,
                 metrics: Metrics | None = None) -> None:
        self.host = host
        self.port = port
        self._header_timeout = header_timeout
        self._command_timeout = command_timeout
        self._metrics = metrics
        self._routes: dict[str, Handler] = {}
        self._server: asyncio.Server | None = None
        self._calls: set[asyncio.Task[None]] = set()

    def route(self, script: str, handler: Handler) -> None:
        self._routes[script.strip("/")] = handler

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: AgiConnection(self._accept), self.host, self.port)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("FastAGI listening", extra={"host": self.host, "port": self.port})

    async def stop(self, drain_timeout: float) -> None:
        """Stop accepting; give running calls `drain_timeout` to finish, then close them so the
        dialplan continues (its fallback sends the caller to a queue)."""
        if self._server is not None:
            self._server.close()
        pending = set(self._calls)
        if pending:
            log.info("waiting for running calls", extra={"calls": len(pending)})
            _, still = await asyncio.wait(pending, timeout=drain_timeout)
            for task in still:
                task.cancel()
            if still:
                await asyncio.gather(*still, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, conn: AgiConnection) -> None:
        task = asyncio.get_running_loop().create_task(self._call(conn))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, conn: AgiConnection) -> None:
        try:
            await self._serve(conn)
        finally:
            conn.close()

    async def _read_request(self, conn: AgiConnection) -> AgiRequest | None:
        headers: dict[str, str] = {}
        while True:
            raw = conn.buffered_line()
            if raw is None:
                raw = await conn.readline()
            if raw is None:
                return None  # connect-and-close (health check, port scan): nothing to do
            line = raw.decode("utf-8", errors="replace")
            if not line:
                if not headers:
                    continue
                return agi_wire.build_request(headers)
            name, value = agi_wire.parse_header_line(line)
            headers[name] = value
            if len(headers) > MAX_HEADERS:
                raise agi_wire.AgiProtocolError("too many AGI headers")

    async def _serve(self, conn: AgiConnection) -> None:
        try:
            async with asyncio.timeout(self._header_timeout):
                request = await self._read_request(conn)
        except (TimeoutError, agi_wire.AgiProtocolError, ValueError, ConnectionError) as exc:
            log.warning("FastAGI connection dropped before a valid request", extra={"error": str(exc)})
            return
        if request is None:
            return
        channel = AgiChannel(request, conn, self._command_timeout, self._metrics)
        token = call_id_var.set(channel.call_id)
        result = "ok"
        if self._metrics is not None:
            self._metrics.agi_active.inc()
        try:
            handler = self._routes.get(request.script)
            if handler is None:
                result = "no_route"
                log.warning("no FastAGI route for script", extra={"script": request.script[:100]})
                with contextlib.suppress(AgiError, agi_wire.AgiEncodingError):
                    await channel.verbose(f"ivrserver: no route for script {request.script[:60]}")
                return
            # one INFO line per call, at its end (with the channel); the start is DEBUG
            log.debug("call started", extra={"script": request.script, "channel": request.channel})
            await handler(channel)
        except AgiHangup as exc:
            result = "hangup"
            log.debug("caller hung up", extra={"detail": str(exc)})
        except asyncio.CancelledError:
            # Shutdown cancelled this connection's own task (nothing awaits it): closing the
            # socket hands the call back to the dialplan, whose fallback queues the caller.
            result = "cancelled"
            log.warning("call handed back to the dialplan (shutdown)")
        except Exception:
            result = "error"
            log.exception("call handler failed; the dialplan takes over")
        finally:
            if self._metrics is not None:
                self._metrics.agi_active.dec()
                self._metrics.agi_calls.labels(request.script if request.script in self._routes else "-",
                                               result).inc()
            log.info("call finished", extra={"result": result, "script": request.script[:100],
                                             "channel": request.channel})
            call_id_var.reset(token)
