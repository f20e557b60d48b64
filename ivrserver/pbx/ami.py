"""AMI adapter: panoramisk 1.4 behind a thin wrapper that fixes its traps.

- UTF-8 is decoded incrementally (panoramisk drops characters split across TCP reads).
- Unsolicited events (no ActionID: the call events every feature folds) are framed and parsed
  here into plain header dicts; panoramisk builds a case-insensitive `Message` per event and
  matches it against its callback patterns, ~10 % of ivrserver's profiled time per hotline call
  (bench/e2e_bench.py --cprofile). Responses and the events that answer an action still go
  through panoramisk.
- Event callbacks stay synchronous and only `put_nowait` typed events into one bounded queue,
  consumed by one task (a raising callback would drop the connection; coroutine callbacks lose
  their exceptions).
- Every action has a timeout; header values with CR/LF are refused (they would inject actions).
- A watchdog closes a silent connection so panoramisk reconnects; reconnects back off.
- Originate and MessageSend are never re-sent after a reconnect (a second dial, a second SMS);
  ChannelId guards duplicate dials, services/sms.py's per-key marker duplicate SMS.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from ivrserver.config import AmiSettings
from ivrserver.metrics import Metrics
from ivrserver.pbx import ami_events
from ivrserver.pbx.ami_events import AmiEvent, AmiParseError

log = logging.getLogger("ivrserver.ami")

# Login event mask: call (channels, dial, originate), agent (queues), user (UserEvent),
# system (FullyBooted). Everything else is filtered out at the source.
EVENT_MASK = "call,agent,user,system"


class AmiError(Exception):
    """An action failed, timed out, or AMI is not connected."""


EOL = "\r\n"


def parse_headers(text: str) -> dict[str, Any]:
    """One AMI message's `Key: value` lines as panoramisk's `Message.from_line` reads them: a
    repeated key gives a list of its values (ChanVariable), lines without ': ' are skipped."""
    headers: dict[str, Any] = {}
    for line in text.split(EOL):
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        if key.lower() == "result":  # panoramisk URL-unquotes this one header
            value = unquote(value).strip()
        if key in headers:
            known = headers[key]
            headers[key] = [*known, value] if isinstance(known, list) else [known, value]
        else:
            headers[key] = value
    return headers


def _unsolicited_event(message: str) -> bool:
    # An event answering an action (QueueStatus lists, OriginateResponse) carries its ActionID and
    # belongs to panoramisk, which resolves the action's future with it.
    return message.startswith("Event: ") and "\nactionid:" not in message.lower()


class _Protocol(AMIProtocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def data_received(self, data: bytes) -> None:
        factory = self.factory
        if isinstance(factory, _Manager):
            factory.last_rx = time.monotonic()
        text = self._decoder.decode(data)
        if not text:
            return
        if self.version is None or not isinstance(factory, _Manager):
            super().data_received(text.encode("utf-8"))  # the banner: panoramisk reads the version
            return
        # panoramisk's framing (messages end with a blank line; the tail waits in self.queue)
        if self.queue:
            text = self.queue.popleft() + text
        messages = text.split(EOL + EOL)
        self.queue.append(messages.pop())
        for raw in messages:
            message = raw.strip()  # Asterisk sometimes sends a single EOL between messages
            if _unsolicited_event(message):
                headers = parse_headers(message)
                if str(headers.get("Event", "")).lower() == "shutdown":
                    self.connection_lost(Message(headers))  # as panoramisk does: close, reconnect
                factory.client.on_headers(headers)
            else:
                parsed = Message.from_line(message)
                if parsed is not None:
                    self.handle_message(parsed)


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk Manager with login status, backoff and activity tracking."""

    def __init__(self, client: AmiClient, **config: Any) -> None:
        super().__init__(**config)
        self.client = client
        self.last_rx = time.monotonic()
        self.base_delay = float(config["reconnect_timeout"])

    def login(self, future: asyncio.Future[Any]) -> bool:
        try:
            ok = bool(super().login(future))
        except Exception as exc:  # the connection dropped during login
            log.warning("AMI login did not complete", extra={"error": str(exc)})
            return False
        self.client._on_login(ok, future.result())
        return ok

    def connection_lost(self, exc: Any) -> None:
        self.client._on_disconnect()
        # Exponential backoff up to the configured maximum; reset on a successful login.
        self.reconnect_timeout = min(max(self.reconnect_timeout * 2, 1), self.client.settings.reconnect_max_delay)
        super().connection_lost(exc)

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if not f.cancelled() and f.exception() is not None:
            self.reconnect_timeout = min(max(self.reconnect_timeout * 2, 1),
                                         self.client.settings.reconnect_max_delay)
        super().connection_made(f)


class AmiClient:
    """Connection to Asterisk's manager interface; typed events arrive on `events`."""

    def __init__(self, settings: AmiSettings, metrics: Metrics | None = None, queue_size: int = 10000) -> None:
        self.settings = settings
        self.metrics = metrics
        self.events: asyncio.Queue[AmiEvent] = asyncio.Queue(maxsize=queue_size)
        self.logged_in = False
        self.login_error = ""
        self._manager: _Manager | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._logins = 0
        self.dropped = 0  # events lost to a full `events` queue (callback observers treat it as a gap)
        self._login_event = asyncio.Event()
        # Coroutines run after every (re)login, e.g. re-reading queue member state.
        self.login_hooks: list[Callable[[], Awaitable[None]]] = []
        self._hook_tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Begin connecting (returns at once; reconnects forever in the background)."""
        loop = asyncio.get_running_loop()
        self._manager = _Manager(
            self, loop=loop, host=self.settings.host, port=self.settings.port,
            username=self.settings.username, secret=self.settings.secret, events=EVENT_MASK,
            ping_delay=self.settings.ping_interval, ping_interval=self.settings.ping_interval,
            reconnect_timeout=1, protocol_factory=_Protocol,
            forgetable_actions=("ping", "login", "originate", "messagesend", "logoff"),
        )
        self._manager.register_event("*", self._dispatch)
        self._manager.connect()
        self._watchdog = asyncio.create_task(self._watch(), name="ami-watchdog")

    @property
    def logins(self) -> int:
        """Successful logins so far: a change means the link went down and came back."""
        return self._logins

    async def wait_logged_in(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._login_event.wait()
        except TimeoutError:
            return False
        return self.logged_in

    async def _run_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        try:
            await hook()
        except Exception:
            log.exception("AMI login hook failed")

    def feed(self, headers: Mapping[str, Any]) -> None:
        """Parse and queue one event-shaped message (e.g. from an action's event list)."""
        self.on_headers(dict(headers.items()))

    async def close(self) -> None:
        for task in list(self._hook_tasks):
            task.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        if self._manager is not None:
            manager = self._manager
            # Stop panoramisk from scheduling a reconnect after our own close.
            manager.connection_lost = lambda exc: None  # type: ignore[method-assign]
            manager.close()
        self.logged_in = False
        if self.metrics is not None:
            self.metrics.ami_connected.set(0)

    # -- callbacks from panoramisk (synchronous, must never raise) --------------------------
    def _on_login(self, ok: bool, response: Any) -> None:
        self.logged_in = ok
        if ok:
            self._logins += 1
            self.login_error = ""
            if self._manager is not None:
                self._manager.reconnect_timeout = 1
            log.info("AMI logged in", extra={"host": self.settings.host, "port": self.settings.port})
            if self._logins > 1 and self.metrics is not None:
                self.metrics.ami_reconnects.inc()
            for hook in self.login_hooks:
                task = asyncio.get_running_loop().create_task(self._run_hook(hook), name="ami-login-hook")
                self._hook_tasks.add(task)
                task.add_done_callback(self._hook_tasks.discard)
        else:
            self.login_error = str(getattr(response, "get", dict().get)("Message", "login refused"))
            log.error("AMI login refused", extra={"user": self.settings.username, "error": self.login_error})
        if self.metrics is not None:
            self.metrics.ami_connected.set(1 if ok else 0)
        self._login_event.set()

    def _on_disconnect(self) -> None:
        if self.logged_in:
            log.warning("AMI connection lost; reconnecting")
        self.logged_in = False
        if self.metrics is not None:
            self.metrics.ami_connected.set(0)

    def _dispatch(self, manager: Any, message: Message) -> None:
        """panoramisk's callback for the events it framed and dispatched itself: any in the banner's
        read, and events with an ActionID that no waiting action claimed."""
        self.on_headers(dict(message.items()))

    def on_headers(self, headers: dict[str, Any]) -> None:
        """One event's headers (plain dict, as `parse_headers` gives them) → typed event → `events`."""
        try:
            name = str(headers.get("Event", ""))
            event = ami_events.parse_event(headers)
            if event is None:
                return
            if self.metrics is not None:
                self.metrics.child(self.metrics.ami_events, name).inc()
            self.events.put_nowait(event)
        except AmiParseError as exc:
            log.warning("AMI event rejected", extra={"error": str(exc)})
            if self.metrics is not None:
                self.metrics.ami_parse_errors.labels(str(headers.get("Event", "?"))).inc()
        except asyncio.QueueFull:
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.ami_dropped.inc()
        except Exception:
            log.exception("AMI event dispatch failed")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(max(self.settings.ping_interval / 2, 0.2))
            manager = self._manager
            if manager is None or manager.protocol is None or getattr(manager.protocol, "closed", True):
                continue
            if time.monotonic() - manager.last_rx > self.settings.silence_timeout:
                log.warning("AMI silent; forcing a reconnect",
                            extra={"silence_s": round(time.monotonic() - manager.last_rx, 1)})
                manager.last_rx = time.monotonic()
                manager.protocol.transport.abort()  # not close(): it would wait to flush to a dead peer

    # -- actions --------------------------------------------------------------------------
    async def action(self, name: str, fields: Mapping[str, str | list[str]] | None = None,
                     timeout: float | None = None) -> Any:
        """Send one action and return its response (a Message, or a list for event lists)."""
        if not self.logged_in or self._manager is None:
            raise AmiError(f"{name}: AMI is not connected")
        action: dict[str, Any] = {"Action": name}
        for key, value in (fields or {}).items():
            values = value if isinstance(value, list) else [value]
            for v in values:
                if any(c in str(v) for c in "\r\n"):
                    raise AmiError(f"{name}: header {key} contains CR/LF")
            action[key] = value
        future = self._manager.send_action(action)
        try:
            async with asyncio.timeout(timeout or self.settings.action_timeout):
                response = await future
        except TimeoutError as exc:
            raise AmiError(f"{name}: no response within {timeout or self.settings.action_timeout}s") from exc
        first = response[0] if isinstance(response, list) else response
        if str(first.get("Response", "")) in ("Error", "Failure", "Fail"):
            raise AmiError(f"{name}: {first.get('Message', 'failed')}")
        return response

    async def originate(self, *, channel: str, context: str, exten: str, priority: int = 1,
                        channel_id: str, other_channel_id: str | None = None, caller_id: str = "",
                        variables: Mapping[str, str] | None = None,
                        timeout_s: int = 30) -> ami_events.OriginateResponse:
        """Originate asynchronously and wait for OriginateResponse.

        `channel_id` pre-assigns the new channel's uniqueid: Asterisk refuses a second
        originate with an id still in use, which guards against concurrent duplicate dials.
        """
        fields: dict[str, str | list[str]] = {
            "Channel": channel, "Context": context, "Exten": exten, "Priority": str(priority),
            "Async": "true", "Timeout": str(timeout_s * 1000), "ChannelId": channel_id,
        }
        if other_channel_id:
            fields["OtherChannelId"] = other_channel_id
        if caller_id:
            fields["CallerID"] = caller_id
        if variables:
            for k, v in variables.items():
                if "," in v:
                    raise AmiError(f"Originate: variable {k} contains a comma (AMI splits on commas)")
            fields["Variable"] = [f"{k}={v}" for k, v in variables.items()]
        response = await self.action("Originate", fields, timeout=timeout_s + self.settings.action_timeout)
        messages = response if isinstance(response, list) else [response]
        for message in messages:
            if message.get("Event") == "OriginateResponse":
                return ami_events.OriginateResponse.parse(dict(message.items()))
        raise AmiError("Originate: no OriginateResponse received")

    async def command(self, cli: str) -> str:
        """Run an Asterisk CLI command (needs the `command` write permission)."""
        response = await self.action("Command", {"Command": cli})
        first = response[0] if isinstance(response, list) else response
        output = first.get("Output", first.content if hasattr(first, "content") else "")
        return "\n".join(output) if isinstance(output, list) else str(output)
