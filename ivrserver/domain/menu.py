"""IVR menu definition, built from a position-annotated tree, and its validation and lint.

Pure: stdlib only. The YAML text is parsed elsewhere (files/yaml_source.py) into plain values
(dict / list / str / int / float / bool / None) plus a side table of source positions; this module
turns that into frozen dataclasses and reports precise issues (file, line, column, message, hint).

Shape rules (types, allowed keys) are checked first by menus/schema.json in the services layer;
`build()` still never trusts the shape blindly: anything unexpected becomes an Issue, not a crash.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ivrserver.domain import speech, suggest
from ivrserver.domain.source import Issue, Severity, Source, TreePath, dotted
from ivrserver.domain.source import Position as Position  # re-exported: menus' callers use m.Position
from ivrserver.domain.source import has_errors as has_errors  # re-exported: m.has_errors
from ivrserver.domain.working_days import WorkingDays

DTMF_KEYS = "0123456789*#"
HUMAN_KEY = "0"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SOUND_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
QUEUE_RE = re.compile(r"^[a-z0-9_]+$")  # what the dialplan accepts in IVR_QUEUE
SERVICE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # an option's `service:` (incidents.yaml names)
ENDPOINT_RE = re.compile(r"^PJSIP/[A-Za-z0-9_.\-]+$")  # what the dialplan accepts in IVR_AGENT
LANGUAGE_RE = re.compile(r"^[a-z]{2}(_[A-Z]{2})?$")
RANGE_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
SUBDIVISION_RE = re.compile(r"^\w[\w .-]{0,31}$")


# ---------------------------------------------------------------------------------------------
# Source positions and issues: domain/source.py (shared with the routing files)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """'did you mean 'x'?' for the closest choice, else 'allowed: a, b, c' (short lists only)."""
    return suggest.did_you_mean(word, choices, list_up_to=12)


# ---------------------------------------------------------------------------------------------
# Definition


class SayKind(enum.StrEnum):
    NUMBER = "number"
    DIGITS = "digits"
    DATE = "date"
    MONEY = "money"  # an amount with cents, e.g. 42.50


@dataclass(frozen=True)
class SoundPrompt:
    file: str


@dataclass(frozen=True)
class TextPrompt:
    """Text spoken in the call's language: (language, text) variants; a recorded sound file of
    `name` in that language's sounds directory wins over the synthesized text."""

    variants: tuple[tuple[str, str], ...]
    name: str = ""

    def variant(self, language: str, fallback: str) -> tuple[str, str]:
        """(language, text) for the call's language, else the menu's, else the first variant."""
        found = dict(self.variants)
        for lang in (language, fallback):
            if lang in found:
                return lang, found[lang]
        return self.variants[0]


@dataclass(frozen=True)
class SayPrompt:
    """Say the value of a collected variable (or a looked-up field) as a number, digits or date."""

    kind: SayKind
    var: str


PromptItem = SoundPrompt | SayPrompt | TextPrompt


class Flow(enum.StrEnum):
    GOTO = "goto"
    BACK = "back"
    REPEAT = "repeat"
    QUEUE = "queue"
    TRANSFER = "transfer"
    CALLBACK = "callback"
    HANGUP = "hangup"


FLOW_KEYS = tuple(f.value for f in Flow)
TERMINAL_FLOWS = frozenset({Flow.QUEUE, Flow.TRANSFER, Flow.CALLBACK, Flow.HANGUP})
HUMAN_FLOWS = frozenset({Flow.QUEUE, Flow.TRANSFER, Flow.CALLBACK})


@dataclass(frozen=True)
class Action:
    flow: Flow
    target: str = ""  # goto: node; queue/callback: queue name; transfer: dial string
    priority: int | None = None
    ring_seconds: int = 20  # transfer: ring the endpoint this long, then fall back to the queue
    fallback_queue: str = ""  # transfer: default is the human queue
    served: bool = True  # hangup: the caller got what they called for (counts as self-served)
    play: tuple[PromptItem, ...] = ()
    language: str = ""
    path: TreePath = ()
    # a fault report about this service (e.g. mobile_data): the run records it (PathKind.REPORTED)
    # and the hotline counts it for mass-fault detection (domain/incidents.py)
    service: str = ""

    def describe(self) -> str:
        return f"{self.flow}:{self.target}" if self.target else str(self.flow)


class NodeKind(enum.StrEnum):
    MENU = "menu"
    COLLECT = "collect"
    LOOKUP = "lookup"
    IDENTIFY = "identify"
    PLAY = "play"


INPUT_KINDS = frozenset({NodeKind.MENU, NodeKind.COLLECT})


@dataclass(frozen=True)
class Node:
    name: str
    kind: NodeKind
    path: TreePath
    prompts: tuple[PromptItem, ...] = ()
    # menu
    options: Mapping[str, Action] = field(default_factory=dict)
    human_key: bool = True
    # menu and collect
    tries: int = 3
    timeout_ms: int = 5000
    digit_timeout_ms: int = 3000
    invalid: Action | None = None
    timeout: Action | None = None
    failure: Action | None = None
    # collect
    variable: str = ""
    min_digits: int = 1
    max_digits: int = 1
    terminator: str = ""
    # lookup
    lookup_field: str = ""
    say: SayKind = SayKind.NUMBER
    after: tuple[PromptItem, ...] = ()
    missing: Action | None = None
    # identify
    account_var: str = ""
    pin_var: str = ""
    failed: Action | None = None
    locked: Action | None = None
    # collect, lookup, identify, play
    next: Action | None = None

    def actions(self) -> list[tuple[str, Action]]:
        """Every explicit action of the node with a label (option key or handler name)."""
        out: list[tuple[str, Action]] = [(k, a) for k, a in self.options.items()]
        for label in ("invalid", "timeout", "failure", "missing", "failed", "locked", "next"):
            action = getattr(self, label)
            if action is not None:
                out.append((label, action))
        return out


@dataclass(frozen=True)
class CalendarRef:
    """`hours.calendar`: a country's official calendar (public holidays, moved working days)."""

    country: str  # ISO 3166 alpha-2, e.g. "CN"
    subdivision: str = ""  # e.g. "CA" (US California); '' for the whole country
    workday_hours: int = 0  # the weekday (0 = Monday) whose hours a moved working day uses


@dataclass(frozen=True)
class Hours:
    """Opening hours: per weekday (0 = Monday) a list of [start, end) minute ranges; holidays.

    With a `calendar`, the menu loader attaches that country's table (`days`): its public
    holidays are holidays too, and a moved working day (a weekend day worked in exchange, e.g.
    Saturday 2025-10-11 in China) opens with the hours of `calendar.workday_hours` (Monday's by
    default) instead of its own weekday's.
    """

    weekly: Mapping[int, tuple[tuple[int, int], ...]]
    holidays: frozenset[str]
    timezone: str
    calendar: CalendarRef | None = None
    days: WorkingDays | None = None

    def state(self, now: datetime) -> str:
        """'holiday', 'open' or 'closed' for a local datetime (already in `timezone`)."""
        today = now.date()
        if today.isoformat() in self.holidays:
            return "holiday"
        weekday = today.weekday()
        if self.days is not None:
            if self.days.is_holiday(today):
                return "holiday"
            if self.days.is_moved_workday(today) and self.calendar is not None:
                weekday = self.calendar.workday_hours
        minute = now.hour * 60 + now.minute
        for start, end in self.weekly.get(weekday, ()):
            if start <= minute < end:
                return "open"
        return "closed"


@dataclass(frozen=True)
class LintLimits:
    max_depth: int = 4  # operators' figures: past 4 levels 52% of callers give up
    max_options: int = 5
    max_prompt_seconds: float = 20.0  # used when sound durations are known
    max_prompt_files: int = 6  # used when they are not


@dataclass(frozen=True)
class Menu:
    name: str
    file: str
    language: str
    entry_open: str
    entry_closed: str
    entry_holiday: str
    hours: Hours | None
    human: Action
    announcement_interruptible: bool
    nodes: Mapping[str, Node]
    lint: LintLimits = field(default_factory=LintLimits)
    # (text, language) → the sound name Asterisk streams for it (a rendered clip or a recorded
    # file); filled by the services layer when the text prompts were synthesized.
    clips: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def entry_for(self, now: datetime) -> tuple[str, str]:
        """(entry node, 'open' | 'closed' | 'holiday') for a local datetime in the menu's zone."""
        if self.hours is None:
            return self.entry_open, "open"
        state = self.hours.state(now)
        if state == "holiday":
            return self.entry_holiday, state
        if state == "closed":
            return self.entry_closed, state
        return self.entry_open, state


@dataclass(frozen=True)
class Resources:
    """What the Asterisk side offers, when known (None: not checked)."""

    sounds: Mapping[str, float | None] | None = None  # sound name → estimated seconds (or None)
    queues: Collection[str] | None = None
    timezones: Collection[str] | None = None
    spoken: Mapping[tuple[str, str], float] | None = None  # (text, language) → seconds of rendered audio


# ---------------------------------------------------------------------------------------------
# Build


class _Builder:
    def __init__(self, src: Source, name: str) -> None:
        self.src = src
        self.name = name
        self.issues: list[Issue] = []

    def error(self, path: TreePath, code: str, message: str, hint: str = "", *, key: bool = False) -> None:
        pos = self.src.at(path, key=key)
        self.issues.append(Issue(self.src.file, pos.line, pos.column, Severity.ERROR, code, message, hint))

    def warn(self, path: TreePath, code: str, message: str, hint: str = "", *, key: bool = False) -> None:
        pos = self.src.at(path, key=key)
        self.issues.append(Issue(self.src.file, pos.line, pos.column, Severity.WARNING, code, message, hint))

    # -- typed getters (the schema already checked types; these only guard)
    def mapping(self, value: Any, path: TreePath) -> Mapping[str, Any]:
        if isinstance(value, Mapping):
            return value
        if value is not None:
            self.error(path, "type", f"{dotted(path)}: expected a mapping")
        return {}

    def integer(self, value: Any, path: TreePath, default: int, minimum: int, maximum: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.error(path, "type", f"{dotted(path)}: expected a whole number {minimum}..{maximum}, "
                                     f"got {value!r}")
            return default
        return value

    def millis(self, value: Any, path: TreePath, default_ms: int) -> int:
        if value is None:
            return default_ms
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 <= value <= 60:
            self.error(path, "type", f"{dotted(path)}: expected seconds between 0.5 and 60, got {value!r}")
            return default_ms
        return round(value * 1000)

    def text(self, value: Any, path: TreePath, pattern: re.Pattern[str], what: str) -> str:
        if isinstance(value, str) and pattern.match(value):
            return value
        self.error(path, "type", f"{dotted(path)}: expected {what}, got {value!r}")
        return ""

    def prompts(self, value: Any, path: TreePath) -> tuple[PromptItem, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(path, "type", f"{dotted(path)}: expected a list of prompts")
            return ()
        out: list[PromptItem] = []
        for i, item in enumerate(value):
            ipath = (*path, i)
            if isinstance(item, str):
                if SOUND_RE.match(item) and ".." not in item:
                    out.append(SoundPrompt(item))
                else:
                    self.error(ipath, "sound-name", f"{dotted(ipath)}: '{item}' is not a sound name",
                               "use a name relative to the sounds directory, without extension, "
                               "e.g. 'vm-intro' or 'digits/5'")
            elif isinstance(item, Mapping) and set(item) == {"say", "var"}:
                kind = item.get("say")
                if kind not in tuple(SayKind):
                    self.error((*ipath, "say"), "say-kind", f"{dotted(ipath)}: cannot say as {kind!r}",
                               did_you_mean(str(kind), tuple(SayKind)))
                    continue
                var = self.text(item.get("var"), (*ipath, "var"), NAME_RE, "a variable name")
                if var:
                    out.append(SayPrompt(SayKind(kind), var))
            elif isinstance(item, Mapping) and "text" in item:
                text_prompt = self.text_prompt(item, ipath)
                if text_prompt is not None:
                    out.append(text_prompt)
            else:
                self.error(ipath, "type", f"{dotted(ipath)}: expected a sound name, "
                                          "{say: number|digits|date|money, var: NAME} or {text: ..., lang: xx}")
        return tuple(out)

    def text_prompt(self, item: Mapping[str, Any], path: TreePath) -> TextPrompt | None:
        """`{text: "余额查询请按1", lang: zh}` or `{text: {zh: "…", en: "…"}}`, optional `name`."""
        raw = item.get("text")
        variants: list[tuple[str, str]] = []
        if isinstance(raw, Mapping):
            if "lang" in item:
                self.error((*path, "lang"), "text-lang", f"{dotted(path)}: 'lang' goes with a single text; "
                                                         "per-language texts are keyed by language already")
            pairs = [(lang, text, (*path, "text", lang)) for lang, text in raw.items()]
            if not pairs:
                self.error((*path, "text"), "empty-text", f"{dotted(path)}.text: no language given")
        else:
            lang = item.get("lang")
            if lang is None:
                self.error(path, "text-lang", f"{dotted(path)}: a text prompt needs 'lang' (e.g. lang: zh)",
                           "or give one text per language: text: {zh: ..., en: ...}")
                return None
            pairs = [(lang, raw, (*path, "text"))]
        for lang, text, tpath in pairs:
            if not isinstance(lang, str) or not LANGUAGE_RE.match(lang):
                self.error(tpath, "text-lang", f"{dotted(tpath)}: {lang!r} is not a language code such as 'zh'",
                           key=isinstance(raw, Mapping))
                continue
            try:
                variants.append((lang, speech.check_text(text)))
            except speech.TextError as exc:
                code = "empty-text" if isinstance(text, str) and not text.strip() else "text"
                self.error(tpath, code, f"{dotted(tpath)}: {exc}")
        name = item.get("name", "")
        if name and not (isinstance(name, str) and SOUND_RE.match(name) and ".." not in name):
            self.error((*path, "name"), "sound-name", f"{dotted(path)}.name: {name!r} is not a sound name")
            name = ""
        if not variants or len(variants) != len(pairs):
            return None
        return TextPrompt(tuple(variants), name or "")

    def action(self, value: Any, path: TreePath) -> Action | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.error(path, "type", f"{dotted(path)}: expected an action mapping")
            return None
        flows = [k for k in FLOW_KEYS if k in value]
        if len(flows) != 1:
            if flows:
                self.error(path, "action", f"{dotted(path)}: an action takes exactly one of "
                                           f"{', '.join(FLOW_KEYS)}; got {', '.join(flows)}")
            else:
                self.error(path, "action", f"{dotted(path)}: the action says what happens next with one of "
                                           f"{', '.join(FLOW_KEYS)}")
            return None
        flow = Flow(flows[0])
        raw = value[flow.value]
        fpath = (*path, flow.value)
        kwargs: dict[str, Any] = {
            "flow": flow,
            "play": self.prompts(value.get("play"), (*path, "play")),
            "path": path,
        }
        if "language" in value:
            kwargs["language"] = self.text(value["language"], (*path, "language"), LANGUAGE_RE,
                                           "a language code such as 'en' or 'fr_CA'")
        if "priority" in value:
            kwargs["priority"] = self.integer(value["priority"], (*path, "priority"), 0, 0, 999)
        if "service" in value:
            kwargs["service"] = self.text(value["service"], (*path, "service"), SERVICE_RE,
                                          "a service name such as 'mobile_data' (a-z, 0-9, _)")
        if flow is Flow.GOTO:
            kwargs["target"] = self.text(raw, fpath, NAME_RE, "a node name")
        elif flow in (Flow.QUEUE, Flow.CALLBACK):
            kwargs["target"] = self.text(raw, fpath, QUEUE_RE, "a queue name (a-z, 0-9, _)")
        elif flow is Flow.TRANSFER:
            kwargs["target"] = self.text(raw, fpath, ENDPOINT_RE, "a dial string such as 'PJSIP/agent1001'")
            kwargs["ring_seconds"] = self.integer(value.get("ring"), (*path, "ring"), 20, 5, 120)
            if "fallback_queue" in value:
                kwargs["fallback_queue"] = self.text(value["fallback_queue"], (*path, "fallback_queue"),
                                                     QUEUE_RE, "a queue name (a-z, 0-9, _)")
        elif flow is Flow.HANGUP:
            if raw is not True:
                self.error(fpath, "type", f"{dotted(fpath)}: write 'hangup: true'")
            served = value.get("served", True)
            kwargs["served"] = served if isinstance(served, bool) else True
        elif raw is not True:
            self.error(fpath, "type", f"{dotted(fpath)}: write '{flow}: true'")
        return Action(**kwargs)

    def hours(self, value: Any, path: TreePath) -> Hours | None:
        if value is None:
            return None
        data = self.mapping(value, path)
        weekly: dict[int, tuple[tuple[int, int], ...]] = {}
        wpath = (*path, "weekly")
        for day, ranges in self.mapping(data.get("weekly"), wpath).items():
            dpath = (*wpath, day)
            if day not in WEEKDAYS:
                self.error(dpath, "weekday", f"{dotted(dpath)}: '{day}' is not a weekday",
                           did_you_mean(day, WEEKDAYS), key=True)
                continue
            spans: list[tuple[int, int]] = []
            for i, text in enumerate(ranges if isinstance(ranges, list) else []):
                m = RANGE_RE.match(text) if isinstance(text, str) else None
                if m is None:
                    self.error((*dpath, i), "hours", f"{dotted((*dpath, i))}: expected 'HH:MM-HH:MM', "
                                                     f"got {text!r}")
                    continue
                start = int(m[1]) * 60 + int(m[2])
                end = int(m[3]) * 60 + int(m[4])
                if end <= start or end > 24 * 60:
                    self.error((*dpath, i), "hours", f"{dotted((*dpath, i))}: the range {text} ends "
                                                     "before it starts")
                    continue
                spans.append((start, end))
            weekly[WEEKDAYS.index(day)] = tuple(spans)
        holidays: set[str] = set()
        hpath = (*path, "holidays")
        raw_holidays = data.get("holidays") or []
        for i, day in enumerate(raw_holidays if isinstance(raw_holidays, list) else []):
            text = str(day)
            if not DATE_RE.match(text) or not _valid_date(text):
                self.error((*hpath, i), "date", f"{dotted((*hpath, i))}: expected a date YYYY-MM-DD, "
                                                f"got {day!r}")
            else:
                holidays.add(text)
        tz = data.get("timezone")
        calendar = self.calendar(data.get("calendar"), (*path, "calendar"))
        return Hours(weekly, frozenset(holidays), tz if isinstance(tz, str) else "UTC", calendar)

    def calendar(self, value: Any, path: TreePath) -> CalendarRef | None:
        """`hours.calendar: {country: CN, subdivision: null, workday_hours: mon}` (whether the
        country and subdivision exist is checked where the calendar is loaded)."""
        if value is None:
            return None
        data = self.mapping(value, path)
        country = data.get("country")
        if not isinstance(country, str) or not COUNTRY_RE.match(country):
            self.error((*path, "country"), "calendar", f"{dotted((*path, 'country'))}: expected an ISO 3166 "
                                                       f"two-letter country code such as CN or US, got {country!r}")
            return None
        subdivision = data.get("subdivision")
        if subdivision is not None and not (isinstance(subdivision, str) and SUBDIVISION_RE.match(subdivision)):
            self.error((*path, "subdivision"), "calendar", f"{dotted((*path, 'subdivision'))}: expected a "
                                                           f"subdivision code such as CA, or null, got {subdivision!r}")
            return None
        workday = data.get("workday_hours", "mon")
        if workday not in WEEKDAYS:
            self.error((*path, "workday_hours"), "weekday", f"{dotted((*path, 'workday_hours'))}: '{workday}' "
                                                            "is not a weekday", did_you_mean(str(workday), WEEKDAYS))
            return None
        return CalendarRef(country, subdivision or "", WEEKDAYS.index(workday))


def _valid_date(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _NodeDefaults:
    """`defaults:` of a menu file: what input nodes inherit unless they set their own."""

    tries: int
    timeout_ms: int
    digit_timeout_ms: int
    human_key: bool
    invalid: Action | None
    timeout: Action | None
    failure: Action | None


def build(src: Source, name: str) -> tuple[Menu | None, list[Issue]]:
    """Build the menu `name` from a parsed file; issues found while building (never raises).
    One function per part of the file, in file order, as MenuRun has one method per event."""
    b = _Builder(src, name)
    top = b.mapping(src.data, ())
    defaults = _build_defaults(b, top)
    human = b.action(top.get("human"), ("human",)) or Action(Flow.QUEUE, target="general", path=("human",))
    lint = _build_lint(b, top)
    announcement = b.mapping(top.get("announcement"), ("announcement",))
    language = _build_language(b, top)
    entry_open, entry_closed, entry_holiday, hours = _build_entry(b, top)
    nodes: dict[str, Node] = {}
    for node_name, raw in b.mapping(top.get("nodes"), ("nodes",)).items():
        node = _build_node(b, node_name, raw, defaults)
        if node is not None:
            nodes[node_name] = node
    if any(i.severity is Severity.ERROR for i in b.issues):
        return None, b.issues
    menu = Menu(
        name=name, file=src.file, language=language, entry_open=entry_open, entry_closed=entry_closed,
        entry_holiday=entry_holiday, hours=hours, human=human,
        announcement_interruptible=announcement.get("interruptible", True) is not False,
        nodes=nodes, lint=lint,
    )
    return menu, b.issues


def _build_defaults(b: _Builder, top: Mapping[str, Any]) -> _NodeDefaults:
    defaults = b.mapping(top.get("defaults"), ("defaults",))
    handlers = b.mapping(defaults.get("handlers"), ("defaults", "handlers"))
    return _NodeDefaults(
        tries=b.integer(defaults.get("tries"), ("defaults", "tries"), 3, 1, 9),
        timeout_ms=b.millis(defaults.get("timeout"), ("defaults", "timeout"), 5000),
        digit_timeout_ms=b.millis(defaults.get("digit_timeout"), ("defaults", "digit_timeout"), 3000),
        human_key=defaults.get("human_key", True) is not False,
        invalid=b.action(handlers.get("invalid"), ("defaults", "handlers", "invalid")),
        timeout=b.action(handlers.get("timeout"), ("defaults", "handlers", "timeout")),
        failure=b.action(handlers.get("failure"), ("defaults", "handlers", "failure")),
    )


def _build_lint(b: _Builder, top: Mapping[str, Any]) -> LintLimits:
    lint_raw = b.mapping(top.get("lint"), ("lint",))
    seconds = lint_raw.get("max_prompt_seconds", 20.0)
    return LintLimits(
        max_depth=b.integer(lint_raw.get("max_depth"), ("lint", "max_depth"), 4, 1, 20),
        max_options=b.integer(lint_raw.get("max_options"), ("lint", "max_options"), 5, 1, 12),
        max_prompt_seconds=float(seconds) if isinstance(seconds, (int, float)) else 20.0,
        max_prompt_files=b.integer(lint_raw.get("max_prompt_files"), ("lint", "max_prompt_files"), 6, 1, 50),
    )


def _build_language(b: _Builder, top: Mapping[str, Any]) -> str:
    language = top.get("language", "en")
    if not isinstance(language, str) or not LANGUAGE_RE.match(language):
        b.error(("language",), "type", f"language: expected a code such as 'en', got {language!r}")
        return "en"
    return language


def _build_entry(b: _Builder, top: Mapping[str, Any]) -> tuple[str, str, str, Hours | None]:
    """(open, closed, holiday entry nodes, hours)."""
    entry = b.mapping(top.get("entry"), ("entry",))
    entry_open = entry.get("open") if isinstance(entry.get("open"), str) else ""
    entry_closed = entry.get("closed") if isinstance(entry.get("closed"), str) else entry_open
    entry_holiday = entry.get("holiday") if isinstance(entry.get("holiday"), str) else entry_closed
    if not entry_open:
        b.error(("entry",), "entry", "entry.open: missing: the node callers reach during opening hours")
    hours = b.hours(top.get("hours"), ("hours",))
    if hours is not None and "closed" not in entry:
        b.error(("entry",), "entry", "entry.closed: missing: 'hours' is set, so say which node callers "
                                     "reach outside them", key=True)
    return entry_open, entry_closed, entry_holiday, hours


def _build_node(b: _Builder, node_name: str, raw: Any, defaults: _NodeDefaults) -> Node | None:
    npath: TreePath = ("nodes", node_name)
    if not NAME_RE.match(node_name):
        b.error(npath, "node-name", f"nodes.{node_name}: a node name is letters, digits and '_'", key=True)
        return None
    data = b.mapping(raw, npath)
    kind_raw = data.get("type", "menu")
    if kind_raw not in tuple(NodeKind):
        b.error((*npath, "type"), "node-type", f"{dotted(npath)}.type: unknown node type {kind_raw!r}",
                did_you_mean(str(kind_raw), tuple(NodeKind)))
        return None
    kind = NodeKind(kind_raw)
    handlers = b.mapping(data.get("handlers"), (*npath, "handlers"))
    kw: dict[str, Any] = {
        "name": node_name,
        "kind": kind,
        "path": npath,
        "prompts": b.prompts(data.get("prompts"), (*npath, "prompts")),
    }
    if kind in INPUT_KINDS:
        kw.update(_build_input_fields(b, npath, data, handlers, defaults))
    fields_of_kind = _KIND_FIELDS.get(kind)
    if fields_of_kind is not None:
        kw.update(fields_of_kind(b, npath, data, defaults))
    if kind is not NodeKind.MENU:
        kw["next"] = b.action(data.get("next"), (*npath, "next"))
        if kw["next"] is None and "next" not in data:
            b.error(npath, "next", f"{dotted(npath)}: a '{kind}' node needs 'next': what happens after it", key=True)
    return Node(**kw)


def _build_input_fields(b: _Builder, npath: TreePath, data: Mapping[str, Any], handlers: Mapping[str, Any],
                        d: _NodeDefaults) -> dict[str, Any]:
    """Menu and collect nodes: tries, timeouts, handlers (each the default unless set)."""
    return {
        "tries": b.integer(data.get("tries"), (*npath, "tries"), d.tries, 1, 9),
        "timeout_ms": b.millis(data.get("timeout"), (*npath, "timeout"), d.timeout_ms),
        "digit_timeout_ms": b.millis(data.get("digit_timeout"), (*npath, "digit_timeout"), d.digit_timeout_ms),
        "invalid": b.action(handlers.get("invalid"), (*npath, "handlers", "invalid")) or d.invalid,
        "timeout": b.action(handlers.get("timeout"), (*npath, "handlers", "timeout")) or d.timeout,
        "failure": b.action(handlers.get("failure"), (*npath, "handlers", "failure")) or d.failure,
    }


def _build_menu_fields(b: _Builder, npath: TreePath, data: Mapping[str, Any], d: _NodeDefaults) -> dict[str, Any]:
    options: dict[str, Action] = {}
    for key, raw_action in b.mapping(data.get("options"), (*npath, "options")).items():
        opath = (*npath, "options", key)
        if len(key) != 1 or key not in DTMF_KEYS:
            b.error(opath, "key", f"{dotted(opath)}: '{key}' is not a phone key",
                    "use one of 0-9, '*' or '#' (quote * and #)", key=True)
            continue
        act = b.action(raw_action, opath)
        if act is not None:
            options[key] = act
    hk = data.get("human_key", d.human_key)
    return {"options": options, "human_key": hk if isinstance(hk, bool) else d.human_key}


def _build_collect_fields(b: _Builder, npath: TreePath, data: Mapping[str, Any],
                          d: _NodeDefaults) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "variable": b.text(data.get("variable"), (*npath, "variable"), NAME_RE, "a variable name"),
        "min_digits": b.integer(data.get("min_digits"), (*npath, "min_digits"), 1, 1, 32),
        "max_digits": b.integer(data.get("max_digits"), (*npath, "max_digits"), 16, 1, 32),
    }
    term = data.get("terminator", "#")
    if term not in ("", "#", "*"):
        b.error((*npath, "terminator"), "terminator",
                f"{dotted(npath)}.terminator: expected '#', '*' or '', got {term!r}")
        term = "#"
    kw["terminator"] = term
    if kw["min_digits"] > kw["max_digits"]:
        b.error((*npath, "min_digits"), "digits",
                f"{dotted(npath)}: min_digits ({kw['min_digits']}) is more than max_digits ({kw['max_digits']})")
    return kw


def _build_lookup_fields(b: _Builder, npath: TreePath, data: Mapping[str, Any],
                         d: _NodeDefaults) -> dict[str, Any]:
    lookup_field = b.text(data.get("field"), (*npath, "field"), NAME_RE, "a field name")
    say = data.get("say", "number")
    if say not in tuple(SayKind):
        b.error((*npath, "say"), "say-kind", f"{dotted(npath)}.say: cannot say as {say!r}",
                did_you_mean(str(say), tuple(SayKind)))
        say = "number"
    return {"lookup_field": lookup_field, "say": SayKind(say),
            "after": b.prompts(data.get("after"), (*npath, "after")),
            "missing": b.action(data.get("missing"), (*npath, "missing"))}


def _build_identify_fields(b: _Builder, npath: TreePath, data: Mapping[str, Any],
                           d: _NodeDefaults) -> dict[str, Any]:
    return {"account_var": b.text(data.get("account"), (*npath, "account"), NAME_RE, "a variable name"),
            "pin_var": b.text(data.get("pin"), (*npath, "pin"), NAME_RE, "a variable name"),
            "failed": b.action(data.get("failed"), (*npath, "failed")),
            "locked": b.action(data.get("locked"), (*npath, "locked"))}


# The fields each node type adds (play nodes add none: prompts and next only).
_KIND_FIELDS: Mapping[NodeKind, Callable[[_Builder, TreePath, Mapping[str, Any], _NodeDefaults], dict[str, Any]]] = {
    NodeKind.MENU: _build_menu_fields,
    NodeKind.COLLECT: _build_collect_fields,
    NodeKind.LOOKUP: _build_lookup_fields,
    NodeKind.IDENTIFY: _build_identify_fields,
}


# ---------------------------------------------------------------------------------------------
# Validation and lint


def edges(node: Node, menu: Menu) -> list[tuple[str, Action]]:
    """Every action a node can take, including the menu's human key and default failure."""
    out = node.actions()
    if node.kind is NodeKind.MENU and node.human_key and HUMAN_KEY not in node.options:
        out.append((HUMAN_KEY, menu.human))
    if node.kind in INPUT_KINDS and node.failure is None:
        out.append(("failure", menu.human))
    if node.kind is NodeKind.LOOKUP and node.missing is None:
        out.append(("missing", menu.human))
    if node.kind is NodeKind.IDENTIFY:
        if node.failed is None:
            out.append(("failed", menu.human))
        if node.locked is None:
            out.append(("locked", menu.human))
    return out


def _targets(node: Node, menu: Menu) -> list[str]:
    return [a.target for _, a in edges(node, menu) if a.flow is Flow.GOTO and a.target in menu.nodes]


def _entries(menu: Menu) -> list[str]:
    return list(dict.fromkeys(n for n in (menu.entry_open, menu.entry_closed, menu.entry_holiday)
                              if n in menu.nodes))


def levels(menu: Menu) -> dict[str, int]:
    """Shortest depth of each reachable node, counted in menu levels (menu and collect nodes)."""
    depth: dict[str, int] = {}
    frontier: list[str] = []
    for name in _entries(menu):
        depth[name] = 1 if menu.nodes[name].kind in INPUT_KINDS else 0
        frontier.append(name)
    # 0-1 BFS: entering a non-input node adds no level.
    while frontier:
        frontier.sort(key=lambda n: depth[n])
        name = frontier.pop(0)
        for target in _targets(menu.nodes[name], menu):
            step = 1 if menu.nodes[target].kind in INPUT_KINDS else 0
            if target not in depth or depth[name] + step < depth[target]:
                depth[target] = depth[name] + step
                frontier.append(target)
    return depth


def _sccs(menu: Menu) -> list[list[str]]:
    """Strongly connected components over goto edges (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in menu.nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            name, i = work.pop()
            if i == 0:
                index[name] = low[name] = counter
                counter += 1
                stack.append(name)
                on_stack.add(name)
            targets = _targets(menu.nodes[name], menu)
            if i < len(targets):
                work.append((name, i + 1))
                t = targets[i]
                if t not in index:
                    work.append((t, 0))
                elif t in on_stack:
                    low[name] = min(low[name], index[t])
                continue
            if low[name] == index[name]:
                comp: list[str] = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == name:
                        break
                out.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[name])
    return out


def _prompt_items(node: Node) -> list[tuple[TreePath, PromptItem]]:
    items: list[tuple[TreePath, PromptItem]] = [((*node.path, "prompts", i), p)
                                                for i, p in enumerate(node.prompts)]
    items += [((*node.path, "after", i), p) for i, p in enumerate(node.after)]
    for _, action in node.actions():
        items += [((*action.path, "play", i), p) for i, p in enumerate(action.play)]
    return items


def validate(menu: Menu, src: Source, resources: Resources | None = None) -> list[Issue]:
    """Semantic errors and lint warnings of a built menu, in file order."""
    return _Validation(menu, src, resources or Resources()).run()


class _Validation:
    """The checks of a built menu, one method each (as MenuRun has one method per event); `run`
    calls them in order and returns the issues sorted by position."""

    def __init__(self, menu: Menu, src: Source, resources: Resources) -> None:
        self.menu = menu
        self.src = src
        self.resources = resources
        self.b = _Builder(src, menu.name)
        self.names = list(menu.nodes)
        self.variables = {n.variable for n in menu.nodes.values() if n.kind is NodeKind.COLLECT}
        self.fields = {n.lookup_field for n in menu.nodes.values() if n.kind is NodeKind.LOOKUP}

    def run(self) -> list[Issue]:
        self.entry_nodes()
        self.hours_timezone()
        self.human()
        for node in self.menu.nodes.values():
            self.actions(node)
            self.dead_end(node)
            self.identify_variables(node)
            self.prompts(node)
        depth = levels(self.menu)
        self.reachable(depth)
        self.cycles()
        self.lint(depth)
        return sorted(self.b.issues, key=lambda i: (i.line, i.column, i.code))

    # -- targets of an action: nodes, queues
    def target(self, action: Action, where: TreePath) -> None:
        queues = self.resources.queues
        if action.flow is Flow.GOTO and action.target not in self.menu.nodes:
            self.b.error((*where, "goto"), "unknown-node", f"{dotted(where)}: goto '{action.target}': no such node",
                         did_you_mean(action.target, self.names))
        if action.flow in (Flow.QUEUE, Flow.CALLBACK) and queues is not None and action.target not in queues:
            self.b.error((*where, str(action.flow)), "unknown-queue",
                         f"{dotted(where)}: queue '{action.target}' is not defined in Asterisk's queues.conf",
                         did_you_mean(action.target, queues))
        if action.flow is Flow.TRANSFER and action.fallback_queue and queues is not None \
                and action.fallback_queue not in queues:
            self.b.error((*where, "fallback_queue"), "unknown-queue",
                         f"{dotted(where)}: queue '{action.fallback_queue}' is not defined in Asterisk's "
                         "queues.conf", did_you_mean(action.fallback_queue, queues))

    # -- the menu as a whole
    def entry_nodes(self) -> None:
        menu = self.menu
        for key, target in (("open", menu.entry_open), ("closed", menu.entry_closed),
                            ("holiday", menu.entry_holiday)):
            if target and target not in menu.nodes and ("entry", key) in self.src.values:
                self.b.error(("entry", key), "unknown-node", f"entry.{key}: no such node '{target}'",
                             did_you_mean(target, self.names))

    def hours_timezone(self) -> None:
        hours, zones = self.menu.hours, self.resources.timezones
        if hours is not None and zones is not None and hours.timezone not in zones:
            self.b.error(("hours", "timezone"), "timezone", f"hours.timezone: unknown time zone '{hours.timezone}'",
                         did_you_mean(hours.timezone, zones))

    def human(self) -> None:
        human = self.menu.human
        self.target(human, ("human",))
        if human.flow not in HUMAN_FLOWS:
            self.b.error(("human",), "human", f"human: must send callers to a person (queue, transfer or "
                                              f"callback), not '{human.flow}'")

    # -- each node
    def actions(self, node: Node) -> None:
        for label, action in node.actions():
            self.target(action, action.path)
            if label == "failure" and action.flow is Flow.HANGUP:
                self.b.error((*action.path, "hangup"), "failure-hangup",
                             f"{dotted(action.path)}: a failure handler must not hang up",
                             "callers whose input failed go to a human: remove it to use 'human'")

    def dead_end(self, node: Node) -> None:
        if node.kind is NodeKind.MENU and not node.options:
            self.b.error(node.path, "dead-end", f"{dotted(node.path)}: dead end: the menu offers no option",
                         "add options, or make it a 'play' node with 'next'", key=True)

    def identify_variables(self, node: Node) -> None:
        if node.kind is not NodeKind.IDENTIFY:
            return
        for attr, key in (("account_var", "account"), ("pin_var", "pin")):
            var = getattr(node, attr)
            if var not in self.variables:
                self.b.error((*node.path, key), "unknown-variable",
                             f"{dotted(node.path)}.{key}: no collect node fills variable '{var}'",
                             did_you_mean(var, self.variables))

    def prompts(self, node: Node) -> None:
        known = self.variables | self.fields
        sounds = self.resources.sounds
        for ipath, item in _prompt_items(node):
            if isinstance(item, SayPrompt) and item.var not in known:
                self.b.error((*ipath, "var"), "unknown-variable",
                             f"{dotted(ipath)}: no collect or lookup node provides '{item.var}'",
                             did_you_mean(item.var, known))
            if isinstance(item, SoundPrompt) and sounds is not None and item.file not in sounds:
                self.b.error(ipath, "missing-sound", f"{dotted(ipath)}: sound file '{item.file}' not found "
                                                     "in the sounds directory", did_you_mean(item.file, sounds))

    # -- the graph: reachability, cycles with no exit
    def reachable(self, depth: Mapping[str, int]) -> None:
        for name, node in self.menu.nodes.items():
            if name not in depth:
                self.b.error(node.path, "unreachable", f"nodes.{name}: unreachable: no entry or goto leads here",
                             key=True)

    def cycles(self) -> None:
        for comp in _sccs(self.menu):
            name0 = comp[0]
            if len(comp) > 1 or name0 in _targets(self.menu.nodes[name0], self.menu):
                self.cycle(set(comp))

    def cycle(self, members: set[str]) -> None:
        menu = self.menu
        ordered = [n for n in self.names if n in members]
        ring = " → ".join([*ordered, ordered[0]])
        first = menu.nodes[ordered[0]].path
        if not any(menu.nodes[n].kind in INPUT_KINDS for n in ordered):
            self.b.error(first, "cycle-no-input", f"nodes.{ordered[0]}: cycle {ring} never waits for the caller",
                         key=True)
            return
        exits = [(n, a) for n in ordered for _, a in edges(menu.nodes[n], menu)
                 if a.flow in TERMINAL_FLOWS or (a.flow is Flow.GOTO and a.target not in members)]
        if not exits:
            self.b.error(first, "cycle-no-exit", f"nodes.{ordered[0]}: cycle with no exit: {ring}",
                         "callers can never leave it: give one node an option or failure handler to a human",
                         key=True)

    # -- lint (warnings)
    def lint(self, depth: Mapping[str, int]) -> None:
        menu, b = self.menu, self.b
        for name, node in menu.nodes.items():
            if depth.get(name, 0) > menu.lint.max_depth:
                b.warn(node.path, "depth", f"nodes.{name}: {depth[name]} levels deep (more than "
                                           f"{menu.lint.max_depth})",
                       "past 4 levels 52% of callers give up: flatten the menu", key=True)
            if node.kind is NodeKind.MENU and len(node.options) > menu.lint.max_options:
                b.warn((*node.path, "options"), "options",
                       f"{dotted(node.path)}: {len(node.options)} options (more than {menu.lint.max_options})",
                       "callers forget long lists: split or drop options", key=True)
            if node.kind in INPUT_KINDS | {NodeKind.PLAY, NodeKind.LOOKUP}:
                _lint_prompt_length(b, menu, node, self.resources)
        if not _human_reachable(menu, depth):
            b.warn(("nodes",), "no-human", "no route to a human: no menu offers '0', a queue or a transfer",
                   "the IVR serves about 78% of needs; the rest must reach a person", key=True)


def _human_reachable(menu: Menu, depth: Mapping[str, int]) -> bool:
    for name in depth:
        node = menu.nodes[name]
        if node.kind is NodeKind.MENU and node.human_key:
            return True
        if any(a.flow in HUMAN_FLOWS for k, a in node.options.items()):
            return True
        if node.next is not None and node.next.flow in HUMAN_FLOWS:
            return True
    return False


def _lint_prompt_length(b: _Builder, menu: Menu, node: Node, resources: Resources) -> None:
    """Prompt length: estimated seconds when sound durations are known, else the count of items.

    Durations come from the sound files' sizes (the services layer knows the codecs' byte rates);
    a say-prompt counts as 1 second. Without a sounds directory, more than `max_prompt_files`
    items in one node is the warning.
    """
    items = [*node.prompts, *node.after]
    if not items:
        return
    where = (*node.path, "prompts") if node.prompts else (*node.path, "after")
    sounds = resources.sounds
    if sounds is not None or resources.spoken is not None:
        secs = [_seconds(p, resources) for p in items]
        known = [s for s in secs if s is not None]
        total = sum(known)
        if known and total > menu.lint.max_prompt_seconds:
            b.warn(where, "prompt-length",
                   f"{dotted(node.path)}: prompts last about {total:.0f} s (more than "
                   f"{menu.lint.max_prompt_seconds:.0f} s)", "callers abandon long prompts: shorten them",
                   key=True)
            return
        if len(known) == len(secs):
            return
    if len(items) > menu.lint.max_prompt_files:
        b.warn(where, "prompt-length",
               f"{dotted(node.path)}: {len(items)} prompt files (more than {menu.lint.max_prompt_files})",
               "callers abandon long prompts: shorten them", key=True)


def _seconds(item: PromptItem, resources: Resources) -> float | None:
    """How long an item plays: sound files by their size, text by its rendered audio (the longest
    language), a say-prompt about 1 s (2 s for money); None when unknown."""
    if isinstance(item, SayPrompt):
        return 2.0 if item.kind is SayKind.MONEY else 1.0
    if isinstance(item, SoundPrompt):
        return resources.sounds.get(item.file) if resources.sounds is not None else None
    spoken = resources.spoken or {}
    known = [spoken[(text, lang)] for lang, text in item.variants if (text, lang) in spoken]
    return max(known) if known else None


def text_prompts(menu: Menu) -> list[tuple[TreePath, TextPrompt]]:
    """Every text prompt of the menu with where it is written (the human action's too)."""
    out: list[tuple[TreePath, TextPrompt]] = []
    seen: set[TreePath] = set()
    for node in menu.nodes.values():
        for path, item in _prompt_items(node):
            if isinstance(item, TextPrompt) and path not in seen:
                seen.add(path)
                out.append((path, item))
    out += [((*menu.human.path, "play", i), p) for i, p in enumerate(menu.human.play) if isinstance(p, TextPrompt)]
    return out


def languages(menu: Menu) -> list[str]:
    """The languages a call through the menu can be in: its own and every language switch."""
    langs = [menu.language]
    for node in menu.nodes.values():
        langs += [a.language for _, a in node.actions() if a.language]
    return list(dict.fromkeys(langs))


def say_kinds(menu: Menu) -> set[str]:
    """How the menu says values (number, digits, date, money), from say-prompts and lookups."""
    kinds = {str(n.say) for n in menu.nodes.values() if n.kind is NodeKind.LOOKUP}
    for node in menu.nodes.values():
        kinds |= {str(item.kind) for _, item in _prompt_items(node) if isinstance(item, SayPrompt)}
    return kinds

