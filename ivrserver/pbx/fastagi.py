"""FastAGI server on asyncio.start_server, and the one-command-at-a-time channel object.

panoramisk's FastAGI server is not used: it spins on connect-and-close, mis-pairs replies after
HANGUP and loses the GET DATA timeout flag (see shared/asterisk-facts.md).
"""

from __future__ import annotations

import asyncio
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


_LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Za-z0-9]{1,20})?$")
Handler = Callable[["AgiChannel"], Awaitable[None]]


class AgiChannel:
    """One FastAGI call. Commands are serialised: AGI allows one in flight per connection."""

    def __init__(self, request: AgiRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 command_timeout: float, metrics: Metrics | None = None) -> None:
        self.request = request
        self.call_id = request.uniqueid or uuid.uuid4().hex
        self.hungup = False
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self._timeout = command_timeout
        self._metrics = metrics
        self._closed = False

    async def _read_line(self) -> str:
        raw = await self._reader.readline()
        if not raw:
            self._closed = True
            raise AgiHangup("connection closed by Asterisk")
        if not raw.endswith(b"\n"):
            raise agi_wire.AgiProtocolError("reply line too long or truncated")
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")

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
                self._writer.write(data)
                await self._writer.drain()
                async with asyncio.timeout(self._timeout):  # no Task per command (wait_for makes one)
                    reply = await self._read_reply()
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                self._closed = True
                raise AgiHangup(f"{verb}: connection lost") from exc
            except TimeoutError as exc:
                # The reply may still come and would then be read as the next command's reply:
                # this connection can no longer be trusted.
                self._closed = True
                self._writer.close()
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
        """result=-1: a hang-up (the HANGUP notice may follow the reply) or a real failure.
        CHANNEL STATUS tells them apart: it is refused (511) on a dead channel."""
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
        self._writer.close()


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
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=agi_wire.MAX_LINE * 2)
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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._calls.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> AgiRequest | None:
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if not raw:
                return None  # connect-and-close (health check, port scan): nothing to do
            if not raw.endswith(b"\n"):
                raise agi_wire.AgiProtocolError("header line too long")
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line:
                if not headers:
                    continue
                return agi_wire.build_request(headers)
            name, value = agi_wire.parse_header_line(line)
            headers[name] = value
            if len(headers) > MAX_HEADERS:
                raise agi_wire.AgiProtocolError("too many AGI headers")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self._header_timeout):
                request = await self._read_request(reader)
        except (TimeoutError, agi_wire.AgiProtocolError, ValueError, ConnectionError) as exc:
            log.warning("FastAGI connection dropped before a valid request", extra={"error": str(exc)})
            return
        if request is None:
            return
        channel = AgiChannel(request, reader, writer, self._command_timeout, self._metrics)
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
