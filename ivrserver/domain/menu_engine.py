"""MenuRun: the whole IVR state machine for one call, pure.

`start(context)` and `feed(event)` return the commands to execute, in order. The driver (the
FastAGI service, the simulator, the tests) executes them and feeds back what happened. Commands
that wait for something (Collect, Lookup, Identify, OfferCallback) are always last in a batch;
a batch ending in Transfer, ToAgent or Hangup ends the run (`run.exit` is then set).

Caller input is only ever *matched* against the keys the menu defines; nothing typed by a caller
is put into a command except collected digits, which are checked to be digits 0-9 first.

Every step is recorded in `run.path` (PathEvent), stamped with the time the driver passed in
(`StartContext.now`, each event's `at`): the engine never reads a clock.
"""

from __future__ import annotations

import enum
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo

from ivrserver.domain import speech
from ivrserver.domain.menu import (
    DTMF_KEYS,
    HUMAN_KEY,
    Action,
    Flow,
    Menu,
    Node,
    NodeKind,
    PromptItem,
    SayKind,
    SayPrompt,
    SoundPrompt,
    TextPrompt,
)

# A run that enters this many nodes without waiting for the caller is stopped (validation
# rejects such loops; this guards a menu built without validation).
MAX_STEPS_WITHOUT_INPUT = 32
DIGITS = frozenset("0123456789")


# ---------------------------------------------------------------------------------------------
# Commands (imperative)


@dataclass(frozen=True)
class Sound:
    file: str


@dataclass(frozen=True)
class Say:
    kind: SayKind
    value: str  # number: optional '-' and digits; digits: 0-9; date: epoch seconds


@dataclass(frozen=True)
class Spoken:
    """Text in a language: `file` is the rendered clip (or recorded sound) Asterisk streams; ''
    when the menu was loaded without synthesis (the simulator shows the text instead)."""

    text: str
    language: str
    file: str = ""


Prompt = Sound | Say | Spoken


@dataclass(frozen=True)
class Play:
    prompts: tuple[Prompt, ...]
    interruptible_by: str = ""  # DTMF keys that stop the playback (the key is discarded)


@dataclass(frozen=True)
class Collect:
    prompts: tuple[Prompt, ...]
    max_digits: int
    timeout_ms: int
    digit_timeout_ms: int
    terminator: str = ""
    interruptible_by: str = DTMF_KEYS  # a key during the prompts is the first key of the input


@dataclass(frozen=True)
class Lookup:
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Identify:
    account: str
    pin: str


@dataclass(frozen=True)
class SetLanguage:
    language: str


@dataclass(frozen=True)
class Transfer:
    queue: str
    priority: int
    reason: str


@dataclass(frozen=True)
class ToAgent:
    endpoint: str
    ring_seconds: int
    fallback_queue: str
    priority: int
    reason: str


@dataclass(frozen=True)
class OfferCallback:
    queue: str
    priority: int
    reason: str


@dataclass(frozen=True)
class Hangup:
    reason: str


@dataclass(frozen=True)
class Subscribe:
    """The caller asked to be told when the incident is fixed (answered by Subscribed)."""

    incident_id: str


Command = Play | Collect | Lookup | Identify | SetLanguage | Transfer | ToAgent | OfferCallback | Hangup | Subscribe


# ---------------------------------------------------------------------------------------------
# Events (past tense). `at` is epoch seconds, set by the driver.


@dataclass(frozen=True)
class DigitsEntered:
    digits: str
    at: float = 0.0


@dataclass(frozen=True)
class InputTimedOut:
    at: float = 0.0


@dataclass(frozen=True)
class LookupDone:
    values: Mapping[str, str | None]
    at: float = 0.0


@dataclass(frozen=True)
class CallerIdentified:
    customer_id: str
    at: float = 0.0


@dataclass(frozen=True)
class IdentificationFailed:
    locked: bool = False
    at: float = 0.0


@dataclass(frozen=True)
class CallbackScheduled:
    accepted: bool
    at: float = 0.0


@dataclass(frozen=True)
class Subscribed:
    accepted: bool
    at: float = 0.0


@dataclass(frozen=True)
class CallerHungUp:
    at: float = 0.0
    # the caller hung up while the run waited for their input, after the prompts of that input had
    # played to the end (the driver knows: the playback finished, then the wait was cut short)
    prompts_played: bool = False


Event = (DigitsEntered | InputTimedOut | LookupDone | CallerIdentified | IdentificationFailed
         | CallbackScheduled | CallerHungUp | Subscribed)


class UnexpectedEvent(ValueError):
    """The driver fed an event the run is not waiting for (a driver bug, never caller input)."""


# ---------------------------------------------------------------------------------------------
# Path


class PathKind(enum.StrEnum):
    START = "start"  # detail: open | closed | holiday
    ANNOUNCEMENT = "announcement"
    ENTER = "enter"
    KEY = "key"  # key, target: what the key did (goto:billing, queue:sales, human)
    INVALID = "invalid"  # key (only a known DTMF key, else '?')
    TIMEOUT = "timeout"
    FAILURE = "failure"
    COLLECTED = "collected"  # detail: variable name and length, never the digits
    LOOKUP = "lookup"  # detail: found | missing
    IDENTIFIED = "identified"  # detail: ok | failed | locked
    LANGUAGE = "language"
    REPORTED = "reported"  # the caller chose a fault report: detail = the service (option `service:`)
    INCIDENT = "incident"  # a known incident was announced: detail = incident id; key = what they did,
    # target: subscribe | queue:<q> | menu (another key) | heard (hung up after it played to the end)
    # | hung_up (during it)
    EXIT = "exit"  # detail: ExitReason, target: queue / endpoint


class ExitReason(enum.StrEnum):
    SELF_SERVED = "self_served"
    QUEUE = "queue"
    AGENT = "agent"
    CALLBACK = "callback"
    CALLER_HANGUP = "caller_hangup"
    ENDED = "ended"  # the IVR hung up without serving the caller (e.g. a closed notice)


HUMAN_REASONS = frozenset({ExitReason.QUEUE, ExitReason.AGENT, ExitReason.CALLBACK})


def _answered_then_hung_up(path: Sequence[PathEvent]) -> bool:
    """A caller who hung up after the IVR had given them what they came for: a self-service
    lookup answered them (heard the balance), or they heard an incident announcement to its end
    ("we know mobile data is out in Chaoyang"), as `incident_outcome` says: absorbed."""
    for p in path:
        if p.kind is PathKind.LOOKUP and p.detail == "found":
            return True
        if p.kind is PathKind.INCIDENT and p.target == IncidentOutcome.HEARD:
            return True
    return False


def served_by_ivr(path: Sequence[PathEvent], exit_: Exit | None) -> bool:
    """Whether the IVR served this caller: it ended on a self-service exit, or the caller hung up
    after the IVR had answered them (`_answered_then_hung_up`: heard the balance, or heard an
    incident announcement to its end)."""
    if exit_ is None:
        return False
    if exit_.reason is ExitReason.SELF_SERVED:
        return True
    return exit_.reason is ExitReason.CALLER_HANGUP and _answered_then_hung_up(path)


def counted_exit(detail: str, path: Sequence[PathEvent]) -> str:
    """The exit reason statistics count for an exit recorded as `detail` on `path`: a caller who
    hung up after the IVR had answered them (heard the balance, or an incident announcement to its
    end) counts as self_served, as `served_by_ivr` and the contact record say; any other exit as
    recorded."""
    if detail == ExitReason.CALLER_HANGUP and _answered_then_hung_up(path):
        return ExitReason.SELF_SERVED.value
    return detail


def exit_summary(path: Sequence[PathEvent], exit_: Exit) -> str:
    """How the contact record's routing reason says the IVR ended: 'ivr exit <reason> at <node>';
    a caller who hung up after an incident announcement had played to its end was served by it
    (self_served, as `served_by_ivr` says) and the reason names the announcement."""
    heard = incident_outcome(path)
    if exit_.reason is ExitReason.CALLER_HANGUP and heard is not None and heard[1] is IncidentOutcome.HEARD:
        return f"ivr exit self_served at {exit_.node} (heard incident announcement {heard[0]} to its end, hung up)"
    return f"ivr exit {exit_.reason.value} at {exit_.node}"


@dataclass(frozen=True)
class PathEvent:
    kind: PathKind
    node: str
    at: float
    key: str = ""
    target: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Exit:
    reason: ExitReason
    node: str
    queue: str = ""
    priority: int = 0
    endpoint: str = ""
    ring_seconds: int = 0


@dataclass(frozen=True)
class IncidentOffer:
    """A known incident matching this caller (area and service), said before the menu: what it is
    and "press 1 to be told when it is fixed, star for anything else, or stay on the line for an
    agent" (`prompts`), then '1' → Subscribe → `thanks` and the call ends; no key, or 0 (the
    human key) → the service's queue; '*' → the menu; any other key → the menu with that key as
    its first choice (a billing question during a broadband outage, or the habitual 3 4 1 of a
    caller reporting the fault: the menu counts the report and thanks them, no queue)."""

    incident_id: str
    prompts: Mapping[str, tuple[Prompt, ...]]  # language → the announcement and the offer
    thanks: Mapping[str, tuple[Prompt, ...]]  # language → after subscribing
    queue: str
    priority: int = 0
    timeout_ms: int = 5000
    key: str = "1"


@dataclass(frozen=True)
class StartContext:
    now: datetime  # local time in the menu's time zone: chooses the entry node
    announcement: tuple[str, ...] = ()  # sound names switched on at runtime for this menu
    language: str = ""  # the channel's language; "" → the menu's
    incident: IncidentOffer | None = None  # an incident announcement instead of the menu


class _Wait(enum.Enum):
    NOTHING = 0
    INPUT = 1
    LOOKUP = 2
    IDENTIFY = 3
    CALLBACK = 4
    DONE = 5
    INCIDENT = 6  # the incident offer's key
    SUBSCRIBE = 7


@dataclass
class MenuRun:
    """One caller's walk through one menu version."""

    menu: Menu
    path: list[PathEvent] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    language: str = ""
    exit: Exit | None = None
    node: str = ""
    customer_id: str | None = None
    _wait: _Wait = _Wait.NOTHING
    _tries: int = 0
    _history: list[str] = field(default_factory=list)
    _at: float = 0.0
    _steps: int = 0
    _pending: Action | None = None
    _incident: IncidentOffer | None = None
    _entry: str = ""

    # -- public ------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._wait is _Wait.DONE

    def start(self, context: StartContext) -> list[Command]:
        if self._wait is not _Wait.NOTHING:
            raise UnexpectedEvent("the run has already started")
        self._at = context.now.timestamp()
        self.language = context.language or self.menu.language
        entry, state = self.menu.entry_for(context.now)
        self._entry = entry
        self._record(PathKind.START, entry, detail=state)
        out: list[Command] = []
        announcement = tuple(Sound(f) for f in context.announcement)
        keys = DTMF_KEYS if self.menu.announcement_interruptible else ""
        if announcement:
            self._record(PathKind.ANNOUNCEMENT, entry, detail=str(len(announcement)))
        if context.incident is not None:
            if announcement:
                out.append(Play(announcement, interruptible_by=keys))
            self._offer(context.incident, out)
            return out
        self._enter(entry, out)
        if not announcement:
            return out
        first = out[0] if out else None
        if keys and isinstance(first, Collect) and self.menu.nodes[entry].kind is NodeKind.MENU:
            # the announcement leads the entry menu's own prompts: a key during it is the menu's
            # first choice (type-ahead, as during the menu's prompts), not lost
            out[0] = replace(first, prompts=(*announcement, *first.prompts))
        else:
            out.insert(0, Play(announcement, interruptible_by=keys))
        return out

    def feed(self, event: Event) -> list[Command]:
        self._at = event.at or self._at
        if isinstance(event, CallerHungUp):
            if self._wait is _Wait.INCIDENT and self._incident is not None:
                outcome = IncidentOutcome.HEARD if event.prompts_played else IncidentOutcome.HUNG_UP
                self._record(PathKind.INCIDENT, INCIDENT_NODE, target=outcome.value, detail=self._incident.incident_id)
            if self._wait is not _Wait.DONE:
                self._finish(Exit(ExitReason.CALLER_HANGUP, self.node), [])
            return []
        out: list[Command] = []
        self._steps = 0
        if self._wait is _Wait.INPUT and isinstance(event, (DigitsEntered, InputTimedOut)):
            self._on_input(event, out)
        elif self._wait is _Wait.LOOKUP and isinstance(event, LookupDone):
            self._on_lookup(event, out)
        elif self._wait is _Wait.IDENTIFY and isinstance(event, (CallerIdentified, IdentificationFailed)):
            self._on_identify(event, out)
        elif self._wait is _Wait.CALLBACK and isinstance(event, CallbackScheduled):
            self._on_callback(event, out)
        elif self._wait is _Wait.INCIDENT and isinstance(event, (DigitsEntered, InputTimedOut)):
            self._on_offer(event, out)
        elif self._wait is _Wait.SUBSCRIBE and isinstance(event, Subscribed):
            self._on_subscribed(event, out)
        else:
            raise UnexpectedEvent(f"{type(event).__name__} while waiting for {self._wait.name.lower()}")
        return out

    # -- recording ---------------------------------------------------------------------------

    def _record(self, kind: PathKind, node: str, *, key: str = "", target: str = "", detail: str = "") -> None:
        self.path.append(PathEvent(kind, node, self._at, key=key, target=target, detail=detail))

    def _finish(self, exit_: Exit, out: list[Command]) -> None:
        self.exit = exit_
        self._wait = _Wait.DONE
        target = exit_.queue or exit_.endpoint
        self._record(PathKind.EXIT, exit_.node, target=target, detail=str(exit_.reason))

    # -- prompts -----------------------------------------------------------------------------

    def _prompts(self, items: tuple[PromptItem, ...]) -> tuple[Prompt, ...]:
        out: list[Prompt] = []
        for item in items:
            if isinstance(item, SoundPrompt):
                out.append(Sound(item.file))
            elif isinstance(item, SayPrompt):
                value = self.variables.get(item.var)
                if value is not None and _sayable(item.kind, value):
                    out.extend(self._say(item.kind, value))
            elif isinstance(item, TextPrompt):
                lang, text = item.variant(self.language, self.menu.language)
                out.append(self._spoken(text, lang))
        return tuple(out)

    def _spoken(self, text: str, lang: str) -> Spoken:
        return Spoken(text, lang, self.menu.clips.get((text, lang), ""))

    def _say(self, kind: SayKind, value: str) -> tuple[Prompt, ...]:
        """A value in the call's language: Asterisk's SAY where it has the words, else clips."""
        out: list[Prompt] = []
        for part in speech.say_parts(str(kind), value, self.language, self._zone()):
            if isinstance(part, speech.AsteriskSay):
                out.append(Say(SayKind(part.kind), part.value))
            else:
                out.extend(self._spoken(word, self.language) for word in part.words)
        return tuple(out)

    def _zone(self) -> tzinfo:
        if self.menu.hours is None:
            return UTC
        try:
            return zoneinfo.ZoneInfo(self.menu.hours.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return UTC

    # -- nodes -------------------------------------------------------------------------------

    def _enter(self, name: str, out: list[Command], *, reset: bool = True) -> None:
        self._steps += 1
        node = self.menu.nodes.get(name)
        if node is None or self._steps > MAX_STEPS_WITHOUT_INPUT:
            self._act(self.menu.human, self.node or name, out, label="human")
            return
        self.node = name
        self._record(PathKind.ENTER, name)
        if reset:
            self._tries = 0
        if node.kind is NodeKind.MENU and (not self._history or self._history[-1] != name):
            self._history.append(name)
        if node.kind in (NodeKind.MENU, NodeKind.COLLECT):
            out.append(self._collect(node))
            self._wait = _Wait.INPUT
        elif node.kind is NodeKind.PLAY:
            if node.prompts:
                out.append(Play(self._prompts(node.prompts)))
            self._act(node.next or self.menu.human, name, out, label="next")
        elif node.kind is NodeKind.LOOKUP:
            out.append(Lookup((node.lookup_field,)))
            self._wait = _Wait.LOOKUP
        elif node.kind is NodeKind.IDENTIFY:
            account = self.variables.get(node.account_var)
            pin = self.variables.get(node.pin_var)
            if not account or not pin:
                self._record(PathKind.IDENTIFIED, name, detail="failed")
                self._act(node.failed or self.menu.human, name, out, label="failed")
                return
            out.append(Identify(account, pin))
            self._wait = _Wait.IDENTIFY

    def _collect(self, node: Node, extra: tuple[Prompt, ...] = ()) -> Collect:
        if node.kind is NodeKind.MENU:
            return Collect((*extra, *self._prompts(node.prompts)), max_digits=1, timeout_ms=node.timeout_ms,
                           digit_timeout_ms=node.digit_timeout_ms)
        return Collect((*extra, *self._prompts(node.prompts)), max_digits=node.max_digits,
                       timeout_ms=node.timeout_ms, digit_timeout_ms=node.digit_timeout_ms,
                       terminator=node.terminator)

    # -- actions -----------------------------------------------------------------------------

    def _act(self, action: Action, at_node: str, out: list[Command], *, label: str, retry: bool = False) -> None:
        """Do an action: play its prompts, switch language, then its flow."""
        if action.service:
            self._record(PathKind.REPORTED, at_node, detail=action.service)
        prompts = self._prompts(action.play)
        if action.language and action.language != self.language:
            self.language = action.language
            self._record(PathKind.LANGUAGE, at_node, detail=action.language)
            out.append(SetLanguage(action.language))
        flow = action.flow
        if flow is Flow.REPEAT:
            node = self.menu.nodes.get(at_node)
            if node is not None and retry and node.kind in (NodeKind.MENU, NodeKind.COLLECT):
                out.append(self._collect(node, prompts))  # a retry: same tries count
                self._wait = _Wait.INPUT
                return
            self._play(prompts, out)
            self._enter(at_node, out)
            return
        self._play(prompts, out)
        if flow is Flow.GOTO:
            self._enter(action.target, out)
        elif flow is Flow.BACK:
            if self._history and self._history[-1] == at_node:
                self._history.pop()
            target = self._history.pop() if self._history else at_node
            self._enter(target, out)
        elif flow is Flow.QUEUE:
            priority = action.priority or 0
            out.append(Transfer(action.target, priority, reason=f"ivr:{at_node}:{label}"))
            self._finish(Exit(ExitReason.QUEUE, at_node, queue=action.target, priority=priority), out)
        elif flow is Flow.TRANSFER:
            priority = action.priority or 0
            fallback = action.fallback_queue or _queue_of(self.menu.human)
            out.append(ToAgent(action.target, action.ring_seconds, fallback, priority,
                               reason=f"ivr:{at_node}:{label}"))
            self._finish(Exit(ExitReason.AGENT, at_node, queue=fallback, priority=priority,
                              endpoint=action.target, ring_seconds=action.ring_seconds), out)
        elif flow is Flow.CALLBACK:
            self._pending = action
            out.append(OfferCallback(action.target, action.priority or 0, reason=f"ivr:{at_node}:{label}"))
            self._wait = _Wait.CALLBACK
        elif flow is Flow.HANGUP:
            reason = ExitReason.SELF_SERVED if action.served else ExitReason.ENDED
            out.append(Hangup(str(reason)))
            self._finish(Exit(reason, at_node), out)

    @staticmethod
    def _play(prompts: tuple[Prompt, ...], out: list[Command]) -> None:
        if prompts:
            out.append(Play(prompts))

    # -- event handlers ----------------------------------------------------------------------

    def _on_input(self, event: DigitsEntered | InputTimedOut, out: list[Command]) -> None:
        node = self.menu.nodes[self.node]
        digits = event.digits if isinstance(event, DigitsEntered) else ""
        if node.kind is NodeKind.COLLECT and digits.endswith(node.terminator or "\0"):
            digits = digits[: -len(node.terminator)]
        if not digits:
            self._record(PathKind.TIMEOUT, node.name)
            self._miss(node, node.timeout, out)
            return
        if node.kind is NodeKind.MENU:
            key = digits if len(digits) == 1 and digits in DTMF_KEYS else ""
            action = node.options.get(key) if key else None
            if action is not None:
                self._record(PathKind.KEY, node.name, key=key, target=action.describe())
                self._act(action, node.name, out, label=key)
                return
            if key == HUMAN_KEY and node.human_key:
                self._record(PathKind.KEY, node.name, key=key, target="human")
                self._act(self.menu.human, node.name, out, label="human")
                return
            self._record(PathKind.INVALID, node.name, key=key or "?")
            self._miss(node, node.invalid, out)
            return
        if set(digits) <= DIGITS and node.min_digits <= len(digits) <= node.max_digits:
            self.variables[node.variable] = digits
            self._record(PathKind.COLLECTED, node.name, detail=f"{node.variable}:{len(digits)}")
            self._act(node.next or self.menu.human, node.name, out, label="next")
            return
        self._record(PathKind.INVALID, node.name, key=f"len{len(digits)}")
        self._miss(node, node.invalid, out)

    def _miss(self, node: Node, handler: Action | None, out: list[Command]) -> None:
        """An invalid or missing input: retry through the handler until tries are used up."""
        self._tries += 1
        if self._tries >= node.tries:
            self._record(PathKind.FAILURE, node.name)
            self._act(node.failure or self.menu.human, node.name, out, label="failure")
            return
        self._act(handler or Action(Flow.REPEAT), node.name, out, label="retry", retry=True)

    def _on_lookup(self, event: LookupDone, out: list[Command]) -> None:
        node = self.menu.nodes[self.node]
        value = event.values.get(node.lookup_field)
        if value is None or not _sayable(node.say, value):
            self._record(PathKind.LOOKUP, node.name, detail="missing")
            self._act(node.missing or self.menu.human, node.name, out, label="missing")
            return
        self._record(PathKind.LOOKUP, node.name, detail="found")
        self.variables[node.lookup_field] = value
        out.append(Play((*self._prompts(node.prompts), *self._say(node.say, value), *self._prompts(node.after))))
        self._act(node.next or self.menu.human, node.name, out, label="next")

    def _on_identify(self, event: CallerIdentified | IdentificationFailed, out: list[Command]) -> None:
        node = self.menu.nodes[self.node]
        if isinstance(event, CallerIdentified):
            self.customer_id = event.customer_id
            self._record(PathKind.IDENTIFIED, node.name, detail="ok")
            self._act(node.next or self.menu.human, node.name, out, label="next")
        elif event.locked:
            self._record(PathKind.IDENTIFIED, node.name, detail="locked")
            self._act(node.locked or self.menu.human, node.name, out, label="locked")
        else:
            self._record(PathKind.IDENTIFIED, node.name, detail="failed")
            self._act(node.failed or self.menu.human, node.name, out, label="failed")

    def _on_callback(self, event: CallbackScheduled, out: list[Command]) -> None:
        action = self._pending or self.menu.human
        self._pending = None
        if event.accepted:
            out.append(Hangup(str(ExitReason.CALLBACK)))
            self._finish(Exit(ExitReason.CALLBACK, self.node, queue=action.target,
                              priority=action.priority or 0), out)
            return
        fallback = self.menu.human if self.menu.human.flow is not Flow.CALLBACK \
            else Action(Flow.QUEUE, target=self.menu.human.target)
        self._act(fallback, self.node, out, label="callback-declined")


    # -- incident offer ----------------------------------------------------------------------

    def _localised(self, variants: Mapping[str, tuple[Prompt, ...]]) -> tuple[Prompt, ...]:
        for lang in (self.language, self.menu.language):
            if lang in variants:
                return variants[lang]
        return next(iter(variants.values()), ())

    def _offer(self, offer: IncidentOffer, out: list[Command]) -> None:
        self._incident = offer
        self.node = INCIDENT_NODE
        self._record(PathKind.INCIDENT, INCIDENT_NODE, detail=offer.incident_id)
        out.append(Collect(self._localised(offer.prompts), max_digits=1, timeout_ms=offer.timeout_ms,
                           digit_timeout_ms=offer.timeout_ms))
        self._wait = _Wait.INCIDENT

    def _on_offer(self, event: DigitsEntered | InputTimedOut, out: list[Command]) -> None:
        offer = self._incident
        assert offer is not None
        digits = event.digits if isinstance(event, DigitsEntered) else ""
        key = digits[:1] if digits[:1] in DTMF_KEYS else ""
        if key == offer.key:
            self._record(PathKind.INCIDENT, INCIDENT_NODE, key=key, target="subscribe", detail=offer.incident_id)
            out.append(Subscribe(offer.incident_id))
            self._wait = _Wait.SUBSCRIBE
            return
        if key and key != HUMAN_KEY:
            self._offer_to_menu(offer, key, out)
            return
        self._offer_to_queue(offer, key, out)

    def _offer_to_menu(self, offer: IncidentOffer, key: str, out: list[Command]) -> None:
        """On to the menu; a key other than MENU_KEY is the entry menu's first choice (type-ahead:
        its prompts are skipped, as a key pressed during them would)."""
        self._record(PathKind.INCIDENT, INCIDENT_NODE, key=key, target=OFFER_TO_MENU, detail=offer.incident_id)
        self._enter(self._entry, out)
        if key == MENU_KEY or self._wait is not _Wait.INPUT or self.menu.nodes[self.node].kind is not NodeKind.MENU:
            return  # '*', or a first node collecting digits: it asks for them from the start
        out.pop()  # the entry menu's Collect (`_enter` ends with it): the caller has chosen already
        self._on_input(DigitsEntered(key, self._at), out)

    def _offer_to_queue(self, offer: IncidentOffer, key: str, out: list[Command]) -> None:
        self._record(PathKind.INCIDENT, INCIDENT_NODE, key=key, target=f"queue:{offer.queue}",
                     detail=offer.incident_id)
        out.append(Transfer(offer.queue, offer.priority, reason=f"ivr:{INCIDENT_NODE}:{key or 'stayed'}"))
        self._finish(Exit(ExitReason.QUEUE, INCIDENT_NODE, queue=offer.queue, priority=offer.priority), out)

    def _on_subscribed(self, event: Subscribed, out: list[Command]) -> None:
        offer = self._incident
        assert offer is not None
        if not event.accepted:
            self._offer_to_queue(offer, "", out)
            return
        self._play(self._localised(offer.thanks), out)
        out.append(Hangup(str(ExitReason.SELF_SERVED)))
        self._finish(Exit(ExitReason.SELF_SERVED, INCIDENT_NODE), out)


INCIDENT_NODE = "incident"
MENU_KEY = "*"  # during an incident offer: "for anything else, press star"
OFFER_TO_MENU = "menu"  # the INCIDENT path event's target when the caller went on to the menu


def reported_services(path: Sequence[PathEvent]) -> tuple[str, ...]:
    """The services a call reported a fault about (in order, once each)."""
    return tuple(dict.fromkeys(p.detail for p in path if p.kind is PathKind.REPORTED and p.detail))


class IncidentOutcome(enum.StrEnum):
    """What a caller did with an incident announcement (the one rule for the incident's figures
    and the contact record: SUBSCRIBED and HEARD were absorbed by it, the contact is self-served)."""

    SUBSCRIBED = "subscribed"  # pressed 1 and was recorded: told when it is fixed
    HEARD = "heard"  # heard it to its end, then hung up
    AGENT = "agent"  # stayed on the line (or pressed 0): sent to the service's queue
    MENU = "menu"  # pressed another key: went on to the menu (served there, not by the announcement)
    HUNG_UP = "hung_up"  # hung up before it had played to its end: abandoned


ABSORBED = frozenset({IncidentOutcome.SUBSCRIBED, IncidentOutcome.HEARD})


def incident_outcome(path: Sequence[PathEvent]) -> tuple[str, IncidentOutcome] | None:
    """(incident id, outcome) for a call that was offered an incident announcement, else None."""
    heard = [p for p in path if p.kind is PathKind.INCIDENT]
    if not heard:
        return None
    last = heard[-1]
    if last.target == "subscribe":
        # pressed 1: the subscription was stored (the thanks and a self-served exit follow at once)
        done = any(p.kind is PathKind.EXIT and p.detail == ExitReason.SELF_SERVED for p in path)
        return last.detail, IncidentOutcome.SUBSCRIBED if done else IncidentOutcome.HUNG_UP
    if last.target.startswith("queue:"):
        return last.detail, IncidentOutcome.AGENT
    if last.target == OFFER_TO_MENU:
        return last.detail, IncidentOutcome.MENU
    if last.target == IncidentOutcome.HEARD:
        return last.detail, IncidentOutcome.HEARD
    return last.detail, IncidentOutcome.HUNG_UP


def _queue_of(action: Action) -> str:
    return action.fallback_queue if action.flow is Flow.TRANSFER else action.target


def _sayable(kind: SayKind, value: str) -> bool:
    """Only values that SAY NUMBER / DIGITS / DATE accept as such (or amounts) reach a command."""
    return speech.sayable(str(kind), value)
