"""Proactive notices: the call (or SMS) that tells a customer something is done — wanted, never unwanted.

Pure: stdlib and domain/ only, no clock reads (every function that depends on time takes `now`).

A notice is asked for with a `NoticeRequest` (the key makes it exactly-once: the same key is the
same notice, created once). Whether and when it goes out is decided here, in this order:

1. consent for the notice's kind (`consents`): the customer attribute `notices`, a comma-separated
   list — `kind` consents to that kind, `-kind` refuses it, `none` refuses every kind not listed
   as consented; kinds in `notices.default_consent` (by default `case_result` and `incident`: what
   the customer asked to be told) are consented unless refused. No consent → refused `no_consent`.
2. a phone number to call (`no_phone`): the request's `number` when given, else the customer's
   first phone; the notice not expired (`expired`). A request with a `number` and no customer
   record (a caller, e.g. `tel-<digits>`) gets ContactPreferences' defaults (09:00-20:00) in the
   number's own time zone (libphonenumber's, when it gives one), else the company's (routing.yaml),
   and the kind's default consent (`recipient`);
3. the channel: `sms` → an SMS (refused `no_sms` without an SMS sender); do-not-call → an SMS if
   the channel is `auto` and SMS is available, else refused `do_not_call`;
4. the customer's allowed hours and time zone (`callbacks.next_allowed_time`): the call is due at
   the first callable instant at or after `not_before` (refused `no_calling_hours` when there is
   none before the notice expires). An SMS is held to the same hours (sent when they open)
   unless its kind is urgent (`NoticePolicy.urgent_kinds`, by default `roaming`);
5. batching: a pending notice call of the same customer due within `batch_seconds` of that
   instant carries this notice too (one call plays them in turn) and costs no budget;
6. the budget: at most `max_calls` notice calls per customer in any `budget_days` window
   (`budget_slot`); over it → an SMS when the channel is `auto` and SMS is available, else the
   call is deferred to when the budget frees (refused `budget` if that is past the expiry).
   Never dropped silently: every notice ends scheduled, deferred, sent by SMS or refused with a
   reason.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import phonenumbers
import phonenumbers.timezone

from ivrserver.domain import phone
from ivrserver.domain.callbacks import (
    TERMINAL_STATES,
    AttemptOutcome,
    Callback,
    CallbackPolicy,
    CallbackState,
    next_allowed_time,
    zone,
)
from ivrserver.domain.model import AgentState, AgentStatus, ContactPreferences, Customer
from ivrserver.domain.routing import Action, QueueTarget, Route

CONSENT_ATTRIBUTE = "notices"
KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}$")
MAX_KEY = 200
MAX_TEXT = 1000
CHANNELS = ("auto", "call", "sms")
LANGUAGES = ("en", "zh")  # the fallback order when the customer's language has no text
DAY = 86400.0


class NoticeInvalid(ValueError):
    """A notice request failed validation; `errors` maps field → what is wrong."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("invalid notice request: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = dict(errors)


@dataclass(frozen=True)
class NoticeRequest:
    key: str  # idempotency: the same key is the same notice, created once
    customer_id: str
    kind: str  # consent kind: case_result, card_expiry, roaming, incident …
    text: Mapping[str, str]  # language → message text ("en" and/or "zh")
    case_id: str | None = None
    incident_id: str | None = None
    channel: str = "auto"  # call | sms | auto
    not_before: float | None = None
    expires_at: float | None = None  # moot after this
    # the number to call / text (E.164 by phone.normalise): wins over the customer's first phone,
    # and lets a notice reach a caller without a customer record (customer_id e.g. tel-<digits>)
    number: str | None = None


class NoticeStatus(enum.StrEnum):
    SCHEDULED = "scheduled"  # a call is due (or a pending call carries it)
    DEFERRED = "deferred"  # scheduled later than asked: the budget was used up
    SMS_SENT = "sms_sent"
    EXISTING = "existing"  # the key was scheduled before: nothing new
    REFUSED = "refused"


class NoticeState(enum.StrEnum):
    """A notice's own state (its call has the callback's states)."""

    SCHEDULED = "scheduled"  # waiting for its call
    HEARD = "heard"  # the call was answered: the message played
    PRESSED_1 = "pressed_1"  # and the customer asked for an agent
    FAILED = "failed"  # the call gave up (no answer after the retries, do-not-call meanwhile …)
    CANCELLED = "cancelled"  # moot before it dialed
    REFUSED = "refused"  # never scheduled (reason says why)
    SMS_SENT = "sms_sent"
    SMS_FAILED = "sms_failed"


PENDING = frozenset({NoticeState.SCHEDULED})


@dataclass(frozen=True)
class NoticeResult:
    status: NoticeStatus
    notice_id: str
    reason: str = ""  # refused: no_consent | do_not_call | budget | no_phone | expired | no_sms | …
    call_id: str | None = None
    due_at: float | None = None
    state: NoticeState | None = None  # existing: the notice's state now
    channel: str = ""  # call | sms | none: how it goes (went) out


@dataclass(frozen=True)
class Notice:
    """One notice as the store keeps it (JSON)."""

    id: str
    key: str
    customer_id: str
    kind: str
    state: NoticeState
    created_at: float
    text: str = ""  # the text in the language it is spoken / sent in
    language: str = ""
    sound: str = ""  # what Playback takes (the rendered message)
    channel: str = "call"  # how it went out: call | sms | none
    case_id: str | None = None
    incident_id: str | None = None
    call_id: str | None = None
    due_at: float | None = None
    expires_at: float | None = None
    reason: str = ""
    updated_at: float = 0.0
    outcomes: tuple[tuple[str, float], ...] = ()  # (outcome, at), oldest first
    number: str = ""  # a scheduled SMS: where it goes (a call's number is on its callback)


@dataclass(frozen=True)
class NoticePolicy:
    max_calls: int = 2  # notice calls per customer in any budget window
    budget_days: float = 7.0
    batch_seconds: float = 600.0
    window_days: float = 3.0  # a notice without expires_at is moot this long after it may first go out
    default_consent: frozenset[str] = frozenset({"case_result", "incident"})
    # kinds whose SMS goes out at once at any hour (not held to the allowed hours); calls never are
    urgent_kinds: frozenset[str] = frozenset({"roaming"})

    @property
    def budget_seconds(self) -> float:
        return self.budget_days * DAY


# ----------------------------------------------------------------------------- ids, validation

def notice_id(key: str) -> str:
    """Deterministic id of the notice with this key."""
    return "nt-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def call_id_for(first_notice_id: str) -> str:
    """The id of the call (a customer-first callback) first created for a notice."""
    return "ntc-" + first_notice_id.removeprefix("nt-")


def _plain_text(raw: object, limit: int, what: str) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"{what}: expected text")
    text = raw.strip()
    if not text:
        raise ValueError(f"{what}: empty")
    if len(text) > limit:
        raise ValueError(f"{what}: at most {limit} characters, got {len(text)}")
    bad = [c for c in text if ord(c) < 32 or ord(c) == 127]
    if bad:
        raise ValueError(f"{what}: control character {bad[0]!r} is not allowed")
    return text


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")


def _check_time(raw: object, what: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw < 0:
        raise ValueError(f"{what}: expected epoch seconds")
    return float(raw)


def _check_fields(req: NoticeRequest, errors: dict[str, str]) -> None:
    checks: list[tuple[str, Any]] = [
        ("key", lambda: _plain_text(req.key, MAX_KEY, "key")),
        ("customer_id", lambda: req.customer_id if isinstance(req.customer_id, str)
         and _ID.match(req.customer_id) else _bad("customer_id: expected an id")),
        ("kind", lambda: req.kind if isinstance(req.kind, str) and KIND_RE.match(req.kind)
         else _bad("kind: expected a-z, 0-9, _ (starting with a letter), at most 32")),
        ("channel", lambda: req.channel if req.channel in CHANNELS else _bad(f"channel: one of {', '.join(CHANNELS)}")),
        ("case_id", lambda: req.case_id is None or _ID.match(str(req.case_id)) or _bad("case_id: expected an id")),
        ("incident_id", lambda: req.incident_id is None or _ID.match(str(req.incident_id))
         or _bad("incident_id: expected an id")),
        ("not_before", lambda: _check_time(req.not_before, "not_before")),
        ("expires_at", lambda: _check_time(req.expires_at, "expires_at")),
    ]
    for name, check in checks:
        try:
            check()
        except ValueError as exc:
            errors[name] = str(exc).partition(": ")[2] or str(exc)


def check_number(raw: object, region: str = "") -> str:
    """A notice's number in the normal form (phone.normalise: E.164 for every valid number however
    written, national numbers read in `region`; other digit strings as dialled, as callbacks take
    them), or ValueError. Withheld numbers and anything but digits are refused."""
    if not isinstance(raw, str):
        raise ValueError("number: expected a phone number as text")
    if phone.is_anonymous(raw):
        raise ValueError("number: empty or withheld")
    try:
        number = phone.normalise(raw, region)
    except phone.InvalidPhone as exc:
        raise ValueError(f"number: not a phone number ({exc})") from None
    return number


def validate(req: NoticeRequest, region: str = "") -> NoticeRequest:
    """The request with its texts stripped and its number normalised (national numbers read in
    `region`), or NoticeInvalid listing every problem."""
    errors: dict[str, str] = {}
    _check_fields(req, errors)
    number: str | None = None
    if req.number is not None:
        try:
            number = check_number(req.number, region)
        except ValueError as exc:
            errors["number"] = str(exc).partition(": ")[2]
    texts: dict[str, str] = {}
    if not isinstance(req.text, Mapping) or not req.text:
        errors["text"] = "expected at least one language → text (en, zh)"
    else:
        for lang, value in req.text.items():
            if not isinstance(lang, str) or not LANGUAGE_RE.match(lang):
                errors["text"] = f"unknown language {str(lang)[:8]!r}"
                continue
            try:
                texts[lang] = _plain_text(value, MAX_TEXT, f"text.{lang}")
            except ValueError as exc:
                errors["text"] = str(exc)
    if errors:
        raise NoticeInvalid(errors)
    return NoticeRequest(key=req.key.strip(), customer_id=req.customer_id, kind=req.kind, text=texts,
                         case_id=req.case_id, incident_id=req.incident_id, channel=req.channel,
                         not_before=req.not_before, expires_at=req.expires_at, number=number)


def _bad(message: str) -> Any:
    raise ValueError(message)


MAX_CALL_TEXT = 200


def check_call_text(value: object) -> None:
    """A notice call's "press 1" / "goodbye" text (notices.press_en …): '' (Asterisk's stock sound)
    or one line of plain text of at most MAX_CALL_TEXT characters; ValueError otherwise."""
    if value != "":
        _plain_text(value, MAX_CALL_TEXT, "text")


# ----------------------------------------------------------------------------- consent, language

@dataclass(frozen=True)
class Consent:
    granted: frozenset[str] = frozenset()
    refused: frozenset[str] = frozenset()
    none: bool = False  # "none": nothing but the kinds granted explicitly


def parse_consent(raw: str | None) -> Consent:
    """The `notices` attribute: 'card_expiry,roaming,-case_result' or 'none'. Entries that are not a
    kind name are ignored (imported data); a kind both granted and refused is refused."""
    granted: set[str] = set()
    refused: set[str] = set()
    none = False
    for item in (raw or "").split(","):
        word = item.strip().lower()
        if word == "none":
            none = True
        elif word.startswith("-") and KIND_RE.match(word[1:]):
            refused.add(word[1:])
        elif KIND_RE.match(word):
            granted.add(word)
    return Consent(frozenset(granted - refused), frozenset(refused), none)


def consents(attributes: Mapping[str, str], kind: str, defaults: Iterable[str]) -> bool:
    """Whether the customer wants notices of `kind` (see the module docstring for the format)."""
    consent = parse_consent(attributes.get(CONSENT_ATTRIBUTE))
    if kind in consent.refused:
        return False
    if kind in consent.granted:
        return True
    return not consent.none and kind in set(defaults)


def choose_text(texts: Mapping[str, str], language: str) -> tuple[str, str] | None:
    """(language, text): the customer's language, else en, else zh, else any; None when empty."""
    for lang in (language, *LANGUAGES, *sorted(texts)):
        if lang in texts:
            return lang, texts[lang]
    return None


# ----------------------------------------------------------------------------- who is told

# Regions whose callers without a customer record hear (read) the Mandarin text first.
ZH_REGIONS = frozenset({"CN", "TW", "HK", "MO", "SG"})


def number_timezone(number: str) -> str | None:
    """The one IANA time zone libphonenumber gives the number's region or range (+86… →
    Asia/Shanghai, +1 650… → America/Los_Angeles), or None when it gives several (Russia,
    Australia), none, or the number is not E.164."""
    if not number.startswith("+"):
        return None
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    zones = [z for z in phonenumbers.timezone.time_zones_for_number(parsed) if z != "Etc/Unknown"]
    if len(zones) != 1:
        return None
    try:
        return zone(zones[0]).key
    except ValueError:
        return None


def number_language(number: str) -> str:
    """The language tried first for a caller without a customer record: zh for a number of
    ZH_REGIONS, else en (choose_text falls back to the other)."""
    if not number.startswith("+"):
        return ""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return ""
    return "zh" if region in ZH_REGIONS else "en"


@dataclass(frozen=True)
class Recipient:
    """Who a notice goes to: a customer (their record's preferences, language, consent) or a bare
    number (a caller without a record: default preferences in the number's time zone)."""

    id: str
    number: str | None  # None: nothing to call or text
    language: str
    tier: str
    preferences: ContactPreferences
    attributes: Mapping[str, str]
    known: bool  # a customer record exists


def recipient(req: NoticeRequest, customer: Customer | None, region: str, business_timezone: str) -> Recipient:
    """The request's number (when given) wins over the customer's first phone. Without a customer
    the preferences are ContactPreferences' defaults (09:00-20:00, calls allowed) in the number's
    own time zone (number_timezone), else in `business_timezone`; consent is the kind's default."""
    number = req.number
    if customer is not None:
        if number is None:
            for raw in customer.phones[:1]:
                try:
                    number = check_number(raw, region)
                except ValueError:
                    number = None
        return Recipient(customer.id, number, customer.language, customer.tier.value, customer.preferences,
                         customer.attributes, True)
    tz = (number_timezone(number) if number else None) or business_timezone
    try:
        tz = zone(tz).key
    except ValueError:
        tz = "UTC"
    return Recipient(req.customer_id, number, number_language(number) if number else "", "standard",
                     ContactPreferences(timezone=tz), {}, False)


# ----------------------------------------------------------------------------- budget, batching

def in_budget_window(t: float, counted: Iterable[float], window: float) -> int:
    """How many counted calls lie strictly closer than `window` to `t` (either side)."""
    return sum(1 for s in counted if abs(s - t) < window)


def budget_slot(t: float, counted: Sequence[float], limit: int, window: float) -> float | None:
    """The earliest instant ≥ t a new call fits the budget: fewer than `limit` counted calls within
    `window` of it. Adding every call this way keeps any window of that length at `limit` calls at
    most (the last one added saw all the others). None when `limit` < 1."""
    if limit < 1:
        return None
    for candidate in sorted({t, *(s + window for s in counted if s + window > t)}):
        if in_budget_window(candidate, counted, window) < limit:
            return candidate
    return None  # unreachable: past every s + window nothing is counted


def batch_target(due: float, not_before: float | None, pending: Iterable[tuple[str, float]],
                 batch_seconds: float) -> list[str]:
    """Pending calls (id, due) of the customer that may carry a notice due at `due`, best first:
    within `batch_seconds` of it and not before the notice's `not_before`."""
    fits = [(abs(d - due), d, cid) for cid, d in pending
            if abs(d - due) <= batch_seconds and (not_before is None or d >= not_before)]
    return [cid for _, _, cid in sorted(fits)]


# ----------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class Plan:
    channel: str  # call | sms | none (refused)
    at: float | None = None  # call: when it may first dial; sms: when it is sent (held to the hours)
    reason: str = ""  # refused: why; deferred: "budget"; sms: why not a call ("" when asked for)
    deferred: bool = False
    latest: float | None = None  # moot after this
    # a call's plan: when an SMS instead of it would go (over budget); None: an SMS may not
    sms_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Facts:
    """What the plan needs to know about the recipient and the world (looked up by the service)."""

    number: str | None  # what is called / texted (None: nothing)
    preferences: ContactPreferences
    sms_available: bool = False
    counted: Sequence[float] = ()  # times of the customer's counted notice calls (the budget)
    consent: bool = True


def _refuse(reason: str) -> Plan:
    return Plan("none", reason=reason)


def _sms_or(req: NoticeRequest, facts: Facts, reason: str, at: float | None, latest: float | None) -> Plan:
    """An SMS instead of the call (channel auto, a sender, an instant it may go), else refused."""
    if req.channel == "auto" and facts.sms_available and at is not None:
        return Plan("sms", at=at, reason=reason, latest=latest)
    return _refuse(reason)


def plan(req: NoticeRequest, facts: Facts, policy: NoticePolicy, calling: CallbackPolicy, now: float) -> Plan:
    """How a notice goes out (channel, when), or why not: consent, number, expiry, channel,
    do-not-call, allowed hours, budget (batching is the service's: it needs the pending calls).
    An SMS is held to the same allowed hours as a call (the first instant at or after not_before
    inside them) unless its kind is urgent (`policy.urgent_kinds`: sent at not_before / now)."""
    if not facts.consent:
        return _refuse("no_consent")
    if not facts.number:
        return _refuse("no_phone")
    if req.expires_at is not None and req.expires_at <= now:
        return _refuse("expired")
    start = max(now, req.not_before or now)
    latest = req.expires_at if req.expires_at is not None else start + policy.window_days * DAY
    hours = next_allowed_time(start, facts.preferences, calling)
    if hours is not None and hours > latest:
        hours = None
    sms_at = start if req.kind in policy.urgent_kinds else hours
    if req.channel == "sms":
        if not facts.sms_available:
            return _refuse("no_sms")
        return Plan("sms", at=sms_at, latest=latest) if sms_at is not None else _refuse("no_calling_hours")
    if facts.preferences.do_not_call:
        return _sms_or(req, facts, "do_not_call", sms_at, latest)
    if hours is None:
        return _sms_or(req, facts, "no_calling_hours", sms_at, latest)
    return Plan("call", at=hours, latest=latest, sms_at=sms_at)


def within_budget(call: Plan, req: NoticeRequest, facts: Facts, policy: NoticePolicy,
                  calling: CallbackPolicy) -> Plan:
    """A new call (not batched) against the budget: as planned, an SMS instead (`auto`, at the
    call's instant or at once for an urgent kind), deferred to when the budget frees and the
    customer may be called, or refused `budget`."""
    if call.channel != "call" or call.at is None or call.latest is None:
        return call
    t: float | None = call.at
    for _ in range(64):  # each round moves t forward to a budget slot, then to calling hours
        if t is None or t > call.latest:
            break
        slot = budget_slot(t, facts.counted, policy.max_calls, policy.budget_seconds)
        if slot is None:
            break
        if slot == t:
            if t == call.at:
                return call
            return Plan("call", at=t, reason="budget", deferred=True, latest=call.latest, sms_at=call.sms_at)
        if req.channel == "auto" and facts.sms_available and call.sms_at is not None:
            return Plan("sms", at=call.sms_at, reason="budget", latest=call.latest)
        t = next_allowed_time(slot, facts.preferences, calling)
    return _sms_or(req, facts, "budget", call.sms_at, call.latest)


# ----------------------------------------------------------------------------- the texts

def case_result_values(case_id: str, result: str) -> dict[str, str]:
    """Values for the case_result template ({case}, {result}): the result cut to what one value may
    hold (speech.MAX_VALUE_CHARS) and to one line."""
    text = " ".join(result.split()) or "-"
    return {"case": case_id, "result": text[:200]}


def batch_prompt(sounds: Sequence[str]) -> str:
    """What Playback plays for a call carrying these notices, in turn ('a&b')."""
    return "&".join(s for s in sounds if s)


# ----------------------------------------------------------------------------- press 1

def route_to_owner(owner: str | None, owner_status: AgentStatus | None, endpoint: str | None,
                   tier_queue: QueueTarget, ring_seconds: int, case_id: str | None) -> Route:
    """Where "press 1" goes: the case owner when they are logged in and not paused (their phone
    rings first, then the tier queue, as the hotline's case-owner rule does), else the tier queue."""
    about = f"notice call-back about case {case_id}" if case_id else "notice call-back"
    if owner and endpoint and owner_status is not None and owner_status.state not in (
            AgentState.LOGGED_OUT, AgentState.PAUSED):
        return Route(Action.AGENT, f"{about} -> case owner {owner}", "notice", agent_id=owner, dial=endpoint,
                     ring_seconds=ring_seconds, queue=tier_queue.queue, priority=tier_queue.priority)
    why = f"case owner {owner} unavailable" if owner else "no case owner"
    return Route(Action.QUEUE, f"{about}; {why} -> {tier_queue.queue} queue", "notice", queue=tier_queue.queue,
                 priority=tier_queue.priority)


# ----------------------------------------------------------------------------- the last look before it dials

@dataclass(frozen=True)
class DialLook:
    """What a notice call plays once the notices no longer wanted are off it (`look_before_dial`)."""

    keep: tuple[Notice, ...]  # pending notices the call still plays, oldest first
    drop: tuple[tuple[Notice, Settlement], ...]  # pending notices it no longer plays, and how each ends
    prompt: str  # the call's prompt without the dropped messages ("" : nothing left to play)
    kinds: str  # the call's `notice` (kinds still on it)

    def changed(self, cb: Callback) -> bool:
        return bool(self.drop) or self.prompt != cb.prompt

    @property
    def reason(self) -> str:
        """Why the call goes (when nothing is left): the dropped notices' reasons."""
        return ",".join(sorted({s.reason for _, s in self.drop})) or "nothing_left"


def _trim(prompt: str, sounds: Iterable[str]) -> str:
    """The prompt's parts that `sounds` (a multiset) still plays, in the prompt's order."""
    left: dict[str, int] = {}
    for s in sounds:
        left[s] = left.get(s, 0) + 1
    kept = []
    for part in prompt.split("&"):
        if left.get(part, 0) > 0:
            kept.append(part)
            left[part] -= 1
    return "&".join(kept)


def look_before_dial(cb: Callback, notices: Sequence[Notice], attributes: Mapping[str, str],
                     default_consent: Iterable[str], at: float) -> DialLook:
    """A notice call about to dial at `at` (now, or the next opening of the customer's hours when
    it has to wait): each pending notice it carries whose kind the customer no longer consents to
    (`consents`, the `notices` attribute as of now) is cancelled `consent_withdrawn`; one whose own
    expiry is before `at` fails `expired`; the rest stay on the call. Notices no longer pending
    (ended by an earlier look whose call was not rewritten) and those attached but never carried
    are not played either: the prompt keeps only the messages of the notices kept."""
    defaults = frozenset(default_consent)
    keep: list[Notice] = []
    drop: list[tuple[Notice, Settlement]] = []
    for n in sorted((n for n in notices if n.state in PENDING), key=lambda n: (n.created_at, n.id)):
        if not consents(attributes, n.kind, defaults):
            drop.append((n, Settlement(NoticeState.CANCELLED, "cancelled", "consent_withdrawn", cb.attempts)))
        elif n.expires_at is not None and n.expires_at < at:
            drop.append((n, Settlement(NoticeState.FAILED, "failed", "expired", cb.attempts)))
        else:
            keep.append(n)
    played = [n.sound for n in keep if n.sound and carried(n, cb)]
    return DialLook(tuple(keep), tuple(drop), _trim(cb.prompt, played), ",".join(sorted({n.kind for n in keep})))


# ----------------------------------------------------------------------------- reconcile

def carried(n: Notice, cb: Callback) -> bool:
    """Whether the call plays this notice: its message is part of the call's prompt. A notice
    written for a call it then did not get onto (an instance died before the call was updated)
    is attached but never played."""
    return not n.sound or n.sound in cb.prompt.split("&")


@dataclass(frozen=True)
class Settlement:
    """What a notice left pending becomes, and the outcome noted on its case."""

    state: NoticeState
    outcome: str  # heard | failed | cancelled (the case event's outcome, as on_placed notes it)
    reason: str = ""
    attempt: int = 0


def _answered(cb: Callback) -> int:
    """The number of the call's answered attempt (0: none was)."""
    return next((a.number for a in reversed(cb.history) if a.outcome is AttemptOutcome.ANSWERED), 0)


def settle(n: Notice, cb: Callback | None, now: float, grace: float) -> Settlement | None:
    """The outcome a notice still pending should have got from its call, when nobody gave it: an
    instance died between writing the call's outcome and following it on the notices (on_placed),
    the call record vanished, or the call was cancelled behind the notices' back. None when the
    notice is not pending, not a call notice, its call is still running (waiting, dialing), or the
    last change of the notice or its call is younger than `grace` (on_placed may be on its way).

    call answered (connected or done) → heard (failed `not_carried` when the call never played
    it); failed → failed with the call's reason; cancelled → cancelled; missing → failed
    `call_missing`."""
    if n.state not in PENDING or n.channel != "call" or n.call_id is None:
        return None
    last = max(n.updated_at, n.created_at, cb.updated_at if cb is not None else 0.0)
    if now - last < grace:
        return None
    if cb is None:
        return Settlement(NoticeState.FAILED, "failed", "call_missing")
    answered = _answered(cb)
    if cb.state is CallbackState.CONNECTED or (cb.state is CallbackState.DONE and answered):
        if not carried(n, cb):
            return Settlement(NoticeState.FAILED, "failed", "not_carried", cb.attempts)
        return Settlement(NoticeState.HEARD, "heard", "", answered or cb.attempts)
    if cb.state is CallbackState.CANCELLED:
        return Settlement(NoticeState.CANCELLED, "cancelled", cb.final_reason or "call cancelled", cb.attempts)
    if cb.state in (CallbackState.FAILED, CallbackState.DONE):
        return Settlement(NoticeState.FAILED, "failed", cb.final_reason or "call_failed", cb.attempts)
    return None  # requested / scheduled / retry_wait / dialing: its own outcome will come


def settled(n: Notice, s: Settlement, now: float) -> Notice:
    """The notice with the settlement applied (its outcome appended)."""
    return replace(n, state=s.state, updated_at=now, reason=s.reason if s.state is not NoticeState.HEARD else n.reason,
                   outcomes=(*n.outcomes, (s.outcome, now)))


@dataclass(frozen=True)
class CallReview:
    """What the reconcile sweep does about one notice call."""

    settle: tuple[tuple[Notice, Settlement], ...] = ()
    finish_call: bool = False  # a connected notice call on_placed never marked done
    give_back_budget: bool = False  # never dialed: its budget slot is returned (as on_placed does)
    closed: bool = False  # nothing left to watch: drop it from the sweep's index
    # still running, or over too recently: watched from this instant on (looked at `grace` later)
    look_again_from: float | None = None


def review_call(cb: Callback | None, notices: Sequence[Notice], now: float, grace: float) -> CallReview:
    """The reconcile sweep's decision for one notice call and the notices it carries (`settle`).
    The sweep looks at a call `grace` after it falls due (so one being created, dialed or followed
    right now is left to its instance): a call still running is watched again from its next due
    time (or from now while it dials); one over is closed once every notice it carries is final."""
    pending = [n for n in notices if n.state in PENDING]
    decided = tuple((n, s) for n in pending if (s := settle(n, cb, now, grace)) is not None)
    if cb is not None and cb.state not in TERMINAL_STATES and cb.state is not CallbackState.CONNECTED:
        return CallReview(decided, look_again_from=max(now, cb.due_at or now))
    connected = cb is not None and cb.state is CallbackState.CONNECTED
    ripe = cb is None or now - cb.updated_at >= grace
    if len(decided) < len(pending) or not ripe:
        return CallReview(decided, finish_call=connected and ripe, look_again_from=now)
    return CallReview(decided, finish_call=connected, closed=True,
                      give_back_budget=cb is not None and cb.attempts == 0
                      and cb.state in (CallbackState.FAILED, CallbackState.CANCELLED))


# ----------------------------------------------------------------------------- JSON form

def to_dict(n: Notice) -> dict[str, Any]:
    return {"id": n.id, "key": n.key, "customer_id": n.customer_id, "kind": n.kind, "state": n.state.value,
            "created_at": n.created_at, "text": n.text, "language": n.language, "sound": n.sound,
            "channel": n.channel, "case_id": n.case_id, "incident_id": n.incident_id, "call_id": n.call_id,
            "due_at": n.due_at, "expires_at": n.expires_at, "reason": n.reason, "updated_at": n.updated_at,
            "outcomes": [list(o) for o in n.outcomes], "number": n.number}


def from_dict(d: Mapping[str, Any]) -> Notice:
    return Notice(id=d["id"], key=d["key"], customer_id=d["customer_id"], kind=d["kind"],
                  state=NoticeState(d["state"]), created_at=float(d["created_at"]), text=d.get("text", ""),
                  language=d.get("language", ""), sound=d.get("sound", ""), channel=d.get("channel", "call"),
                  case_id=d.get("case_id"), incident_id=d.get("incident_id"), call_id=d.get("call_id"),
                  due_at=d.get("due_at"), expires_at=d.get("expires_at"), reason=d.get("reason", ""),
                  updated_at=float(d.get("updated_at") or 0.0),
                  outcomes=tuple((str(o[0]), float(o[1])) for o in d.get("outcomes") or ()),
                  number=str(d.get("number") or ""))


__all__ = [
    "CONSENT_ATTRIBUTE", "CallReview", "Consent", "DialLook", "Facts", "Notice", "NoticeInvalid", "NoticePolicy",
    "NoticeRequest", "NoticeResult", "NoticeState", "NoticeStatus", "Plan", "Recipient", "Settlement", "batch_prompt",
    "batch_target", "budget_slot", "call_id_for", "carried", "case_result_values", "check_call_text", "check_number",
    "choose_text",
    "consents", "from_dict", "look_before_dial", "notice_id", "number_language", "number_timezone", "parse_consent",
    "plan", "recipient", "review_call", "route_to_owner", "settle", "settled", "to_dict", "validate", "within_budget",
]
