"""One FastAGI call through one menu: MenuRun ⇄ AgiChannel.

The engine decides, this module only executes its commands over AGI and feeds back what happened.
At the end the path is recorded (one pipelined Redis write) and the dialplan contract variables
are set (IVR_ACTION, IVR_QUEUE, IVR_PRIORITY, IVR_AGENT, IVR_AGENT_TIMEOUT, IVR_REASON).

Any AGI failure other than a hang-up sends the caller to the menu's human queue: a call is never
lost because a prompt was missing (and if even SET VARIABLE fails, the dialplan's fallback —
empty IVR_ACTION → general queue — takes it).
"""

from __future__ import annotations

import logging
import time
import zoneinfo
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ivrserver.domain import menu_engine as e
from ivrserver.domain.menu import DTMF_KEYS, Menu, SayKind
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import CallerSnapshot, Customer
from ivrserver.pbx.agi_wire import AgiEncodingError, AgiProtocolError
from ivrserver.pbx.fastagi import AgiError, AgiHangup
from ivrserver.services.menus import MenuVersion
from ivrserver.store.callpath import PathRecorder

log = logging.getLogger(__name__)

# identify(account, pin) → the customer, None (wrong) or anything else (e.g. "locked", Locked(...))
IdentifyFn = Callable[[str, str], Awaitable[Any]]
# offer_callback(command, snapshot, customer_id) → True when a callback was registered
OfferCallbackFn = Callable[[e.OfferCallback, CallerSnapshot, str | None], Awaitable[bool]]
# lookup(customer, fields) → field values; default: the customer's attributes
LookupFn = Callable[[Customer | None, tuple[str, ...]], Awaitable[Mapping[str, str | None]]]
# subscribe(incident id, customer id) → True when the caller will be told when it is fixed
SubscribeFn = Callable[[str, str | None], Awaitable[bool]]


class Channel(Protocol):
    """The part of ivrserver.pbx.fastagi.AgiChannel this service uses."""

    call_id: str
    hungup: bool

    async def stream_file(self, file: str, escape_digits: str = "") -> str | None: ...
    async def get_data(self, file: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]: ...
    async def wait_for_digit(self, timeout_ms: int) -> str | None: ...
    async def say_number(self, n: int, escape_digits: str = "") -> str | None: ...
    async def say_digits(self, digits: str, escape_digits: str = "") -> str | None: ...
    async def say_date(self, epoch: int, escape_digits: str = "") -> str | None: ...
    async def set_variable(self, name: str, value: str) -> None: ...
    async def set_language(self, code: str) -> None: ...


@dataclass(frozen=True)
class MenuOutcome:
    menu: str
    version: str
    call_id: str
    exit: e.Exit | None  # None only when the run broke on an AGI error (error says why)
    language: str
    customer_id: str | None
    path: tuple[e.PathEvent, ...]
    error: str = ""


async def _attributes(customer: Customer | None, fields: tuple[str, ...]) -> Mapping[str, str | None]:
    attrs = customer.attributes if customer is not None else {}
    return {f: attrs.get(f) for f in fields}


def local_time(menu: Menu, now: float) -> datetime:
    """`now` (epoch seconds) in the menu's time zone (UTC when the menu has no hours)."""
    if menu.hours is None:
        return datetime.fromtimestamp(now, UTC)
    try:
        return datetime.fromtimestamp(now, zoneinfo.ZoneInfo(menu.hours.timezone))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return datetime.fromtimestamp(now, UTC)


class _Driver:
    def __init__(self, channel: Channel, snapshot: CallerSnapshot, clock: Callable[[], float],
                 identify: IdentifyFn | None, offer_callback: OfferCallbackFn | None, lookup: LookupFn) -> None:
        self.channel = channel
        self.snapshot = snapshot
        self.customer = snapshot.customer
        self.clock = clock
        self.identify = identify
        self.offer_callback = offer_callback
        self.lookup = lookup
        self.subscribe: SubscribeFn | None = None
        self.variables: dict[str, str] = {}
        # the prompts of the input being collected played to the end (STREAM FILE finished, not
        # cut short by a hang-up): a hang-up now came while the caller was choosing
        self.prompts_played = False

    async def say(self, item: e.Say, escape: str) -> str | None:
        if item.kind is SayKind.NUMBER:
            return await self.channel.say_number(int(item.value), escape)
        if item.kind is SayKind.DIGITS:
            return await self.channel.say_digits(item.value, escape)
        return await self.channel.say_date(int(item.value), escape)

    async def play(self, prompts: tuple[e.Prompt, ...], escape: str) -> str | None:
        """Play prompts in order; a key in `escape` stops them and is returned."""
        for item in prompts:
            if isinstance(item, e.Say):
                digit = await self.say(item, escape)
            elif file := _file_of(item):
                digit = await self.channel.stream_file(file, escape)
            else:
                _unrendered(self.channel.call_id, item)
                continue
            if digit and digit in escape:
                return digit
        return None

    async def collect(self, cmd: e.Collect) -> e.Event:
        escape = cmd.interruptible_by
        prompts = cmd.prompts
        digits = ""
        last = _file_of(prompts[-1]) if prompts else ""
        if last and cmd.terminator == "#":
            # Fast path: all but the last prompt interruptibly, then GET DATA on the last one
            # (GET DATA always ends on '#', so only where '#' is the terminator anyway).
            first = await self.play(prompts[:-1], escape)
            if first is None:
                got, _timed_out = await self.channel.get_data(last, cmd.timeout_ms, cmd.max_digits)
                got = "".join(c for c in got if c in DTMF_KEYS)
                return e.DigitsEntered(got, self.clock()) if got else e.InputTimedOut(self.clock())
            digits = first
        else:
            first = await self.play(prompts, escape)
            if first is None:
                self.prompts_played = True
                first = await self.channel.wait_for_digit(cmd.timeout_ms)
            if first is None or first not in DTMF_KEYS:
                return e.InputTimedOut(self.clock())
            digits = first
        while len(digits) < cmd.max_digits and not (cmd.terminator and digits.endswith(cmd.terminator)):
            more = await self.channel.wait_for_digit(cmd.digit_timeout_ms)
            if more is None or more not in DTMF_KEYS:
                break
            digits += more
        return e.DigitsEntered(digits, self.clock())

    async def identify_caller(self, cmd: e.Identify) -> e.Event:
        if self.identify is None:
            return e.IdentificationFailed(False, self.clock())
        result = await self.identify(cmd.account, cmd.pin)
        if isinstance(result, Customer):
            self.customer = result
            return e.CallerIdentified(result.id, self.clock())
        return e.IdentificationFailed(result is not None, self.clock())

    async def callback(self, cmd: e.OfferCallback, customer_id: str | None) -> e.Event:
        if self.offer_callback is None:
            return e.CallbackScheduled(False, self.clock())
        accepted = await self.offer_callback(cmd, self.snapshot, customer_id)
        return e.CallbackScheduled(bool(accepted), self.clock())

    async def final(self, cmd: e.Command) -> None:
        """Hand the call back to the dialplan: the contract variables."""
        ch = self.channel
        if isinstance(cmd, e.Transfer):
            values = {"IVR_ACTION": "queue", "IVR_QUEUE": cmd.queue, "IVR_PRIORITY": str(cmd.priority),
                      "IVR_REASON": cmd.reason}
        elif isinstance(cmd, e.ToAgent):
            values = {"IVR_ACTION": "agent", "IVR_AGENT": cmd.endpoint,
                      "IVR_AGENT_TIMEOUT": str(cmd.ring_seconds), "IVR_QUEUE": cmd.fallback_queue,
                      "IVR_PRIORITY": str(cmd.priority), "IVR_REASON": cmd.reason}
        elif isinstance(cmd, e.Hangup):
            values = {"IVR_ACTION": "hangup", "IVR_REASON": f"ivr:{cmd.reason}"}
        else:
            return
        for name, value in values.items():
            await ch.set_variable(name, value)


async def run_menu(channel: Channel, version: MenuVersion, snapshot: CallerSnapshot, recorder: PathRecorder | None,
                   now: float, *, menu: str | None = None, announcement: tuple[str, ...] = (),
                   identify: IdentifyFn | None = None, offer_callback: OfferCallbackFn | None = None,
                   lookup: LookupFn = _attributes, clock: Callable[[], float] = time.time,
                   incident: e.IncidentOffer | None = None, subscribe: SubscribeFn | None = None) -> MenuOutcome:
    """Run one call through `menu` (default: the AGI script name) of the version taken at call start.

    `now` is the call's start (epoch seconds): it chooses the entry node by the menu's hours.
    Raises KeyError if the version has no such menu (the route handler falls back to the dialplan).
    With `recorder=None` the path is only returned: the caller records it (with its own writes).
    """
    name = menu or getattr(getattr(channel, "request", None), "script", "") or "hotline"
    definition = version.menu(name)
    run = e.MenuRun(definition)
    driver = _Driver(channel, snapshot, clock, identify, offer_callback, lookup)
    driver.subscribe = subscribe
    error = ""
    commands = run.start(e.StartContext(now=local_time(definition, now), announcement=announcement,
                                        incident=incident if subscribe is not None else None))
    # The call runs in the menu's language; Asterisk starts every channel in its own default
    # (agi_language, usually en). Align the channel when they differ, so recorded prompts
    # (<lang>/<name>) and Asterisk's SAY follow the menu from the first prompt.
    channel_language = getattr(getattr(channel, "request", None), "language", "")
    if channel_language and run.language and channel_language != run.language:
        commands = [e.SetLanguage(run.language), *commands]
    try:
        while commands:
            event: e.Event | None = None
            for cmd in commands:
                event = await _execute(driver, run, cmd)
            commands = run.feed(event) if event is not None else []
    except AgiHangup:
        run.feed(e.CallerHungUp(clock(), prompts_played=driver.prompts_played))
    except (AgiError, AgiEncodingError, AgiProtocolError, ValueError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.warning("call %s: menu %s stopped at node %s: %s; sending to the human queue",
                    channel.call_id, name, run.node, error)
    path = tuple(run.path)
    if recorder is not None:
        try:
            await recorder.record(CallPath(channel.call_id, name, version.version, now, path))
        except Exception as exc:
            log.warning("call %s: IVR path not recorded: %s", channel.call_id, exc)
    if error:
        await _fallback(channel, definition, run)
    return MenuOutcome(name, version.version, channel.call_id, run.exit, run.language, run.customer_id
                       or (snapshot.customer.id if snapshot.customer else None), path, error)


def _file_of(prompt: e.Prompt) -> str:
    """The sound Asterisk streams for a prompt ('' for a SAY or text that was not rendered)."""
    if isinstance(prompt, e.Sound):
        return prompt.file
    return prompt.file if isinstance(prompt, e.Spoken) else ""


_warned_unrendered: set[tuple[str, str]] = set()


def _unrendered(call_id: str, item: e.Prompt) -> None:
    """A text prompt without audio (menus loaded without a synthesizer): skipped, said once."""
    if isinstance(item, e.Spoken) and (item.text, item.language) not in _warned_unrendered \
            and len(_warned_unrendered) < 1000:
        _warned_unrendered.add((item.text, item.language))
        log.warning("call %s: a %s text prompt has no rendered audio (prompts synthesizer not set up); "
                    "skipped", call_id, item.language)


async def _execute(driver: _Driver, run: e.MenuRun, cmd: e.Command) -> e.Event | None:
    """Execute one command; the event it produced, if it waits for one."""
    driver.prompts_played = False
    if isinstance(cmd, e.Play):
        await driver.play(cmd.prompts, cmd.interruptible_by)
        return None
    if isinstance(cmd, e.Collect):
        return await driver.collect(cmd)
    if isinstance(cmd, e.Lookup):
        customer = driver.customer
        values = await driver.lookup(customer, cmd.fields)
        return e.LookupDone(dict(values), driver.clock())
    if isinstance(cmd, e.Identify):
        return await driver.identify_caller(cmd)
    if isinstance(cmd, e.OfferCallback):
        return await driver.callback(cmd, run.customer_id or (driver.customer.id if driver.customer else None))
    if isinstance(cmd, e.Subscribe):
        accepted = driver.subscribe is not None and await driver.subscribe(
            cmd.incident_id, run.customer_id or (driver.customer.id if driver.customer else None))
        return e.Subscribed(bool(accepted), driver.clock())
    if isinstance(cmd, e.SetLanguage):
        await driver.channel.set_language(cmd.language)
        await driver.channel.set_variable("IVR_LANGUAGE", cmd.language)
        return None
    await driver.final(cmd)
    return None


async def _fallback(channel: Channel, menu: Menu, run: e.MenuRun) -> None:
    """After an AGI error: the human queue, as far as the channel still lets us say so."""
    queue = menu.human.target if menu.human.flow.value in ("queue", "callback") else menu.human.fallback_queue
    try:
        await channel.set_variable("IVR_ACTION", "queue")
        await channel.set_variable("IVR_QUEUE", queue or "general")
        await channel.set_variable("IVR_PRIORITY", str(menu.human.priority or 0))
        await channel.set_variable("IVR_REASON", f"ivr:error:{run.node}")
    except (AgiError, OSError) as exc:
        log.warning("call %s: fallback variables not set (%s); the dialplan falls back to general",
                    channel.call_id, exc)
