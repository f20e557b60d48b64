"""Spoken text: prompt text rules, cache names, numbers in words, message templates. Pure, stdlib only.

What a caller hears from text is synthesized offline (services/speech.py) into files named by
`clip_name()`; this module decides *what* is said:

- `check_text()`: the rules every text to be spoken obeys (not empty, bounded, no control
  characters) — menu prompts and per-customer message values alike.
- `say_parts(kind, value, language)`: how a number, an amount of money, digits or a date is
  spoken. Asterisk's `SAY NUMBER/DIGITS/DATE` need per-language digit sounds that Debian ships for
  English but not for Mandarin, so for the languages in `WORDS_LANGUAGES` every value becomes a
  sequence of vocabulary words (`Words`), each a clip rendered ahead of time (`vocabulary()`):
  nothing is synthesized on the call path. English keeps Asterisk's own SAY (`AsteriskSay`), plus
  clips for the currency words.
- Money in Mandarin is read in 元/角/分 ("42.50" → 四十二元五角, "42.05" → 四十二元零五分,
  "42" → 四十二元整): the form people say for amounts and the one Chinese banks' balance lines
  use; it needs no "点五零" digit-by-digit reading of the decimals, and each unit is a word a
  caller hears as money, not as a measurement.
- `MessageTemplate`: outbound message text with named placeholders (`"您的工单{case}已处理完毕：{result}"`),
  rendered with per-customer values that are checked like any outside input.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

MAX_TEXT_CHARS = 1000  # one prompt; longer texts are rejected (a caller would not listen anyway)
MAX_VALUE_CHARS = 200  # one per-customer value in a message template
CLIP_PREFIX = "tts-"
MESSAGE_PREFIX = "msg-"
WORDS_LANGUAGES = frozenset({"zh"})  # numbers are spoken from synthesized words, not Asterisk's SAY
MONEY_RE = re.compile(r"^(-?)(\d{1,15})(?:\.(\d{1,2}))?$")

ZH_DIGITS = "零一二三四五六七八九"
ZH_PHONE_DIGITS = "零幺二三四五六七八九"  # digit strings (accounts, numbers): 1 is 幺, never heard as 七
ZH_VOCABULARY = tuple(dict.fromkeys("零幺一二三四五六七八九十百千万亿负元角分整年月日"))
EN_MONEY_WORDS = ("minus", "yuan", "and", "fen")


class TextError(ValueError):
    """A text (or a value put into one) that cannot be spoken; the message says why."""


def check_text(text: object, *, limit: int = MAX_TEXT_CHARS, what: str = "text") -> str:
    """The text as it will be spoken (surrounding blanks removed), or TextError."""
    if not isinstance(text, str):
        raise TextError(f"{what} must be text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise TextError(f"{what} is empty")
    if len(stripped) > limit:
        raise TextError(f"{what} is longer than {limit} characters ({len(stripped)})")
    for ch in stripped:
        if ch in "\n\t":
            continue
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise TextError(f"{what} contains a control or unassigned character (U+{ord(ch):04X})")
    return stripped


def clip_name(text: str, language: str, voice: str, synthesizer: str, prefix: str = CLIP_PREFIX) -> str:
    """File name (no extension) of the audio for this text: changes when any input changes."""
    key = json.dumps([text, language, voice, synthesizer], ensure_ascii=False, separators=(",", ":"))
    return prefix + hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------
# Numbers in words


@dataclass(frozen=True)
class Words:
    """Vocabulary words to play from synthesized clips, one clip per word."""

    words: tuple[str, ...]


@dataclass(frozen=True)
class AsteriskSay:
    """A value Asterisk says itself (SAY NUMBER / DIGITS / DATE in the channel's language)."""

    kind: str  # number | digits | date
    value: str


SpokenPart = Words | AsteriskSay


def zh_number(n: int) -> str:
    """An integer in Mandarin: 42 → 四十二, 10005 → 一万零五, 12 → 十二, -3 → 负三."""
    if n < 0:
        return "负" + zh_number(-n)
    if n == 0:
        return "零"
    units = ("", "万", "亿", "万亿")
    sections: list[int] = []
    while n:
        sections.append(n % 10000)
        n //= 10000
    if len(sections) > len(units):
        raise TextError("number too large to say")
    out = ""
    pending_zero = False
    for i in reversed(range(len(sections))):
        section = sections[i]
        if section == 0:
            pending_zero = bool(out)
            continue
        if out and (pending_zero or section < 1000):
            out += "零"
        out += _zh_section(section) + units[i]
        pending_zero = False
    return out[1:] if out.startswith("一十") else out


def _zh_section(section: int) -> str:
    out = ""
    zero = False
    for digit, unit in zip((section // 1000, section // 100 % 10, section // 10 % 10, section % 10),
                           ("千", "百", "十", ""), strict=True):
        if digit == 0:
            zero = bool(out)
            continue
        if zero:
            out += "零"
            zero = False
        out += ZH_DIGITS[digit] + unit
    return out


def zh_money(value: str) -> str:
    """An amount in 元/角/分: '42.50' → 四十二元五角, '42.05' → 四十二元零五分, '42' → 四十二元整."""
    m = MONEY_RE.match(value)
    if m is None:
        raise TextError(f"not an amount: {value!r}")
    sign, whole, cents = m[1], int(m[2]), (m[3] or "").ljust(2, "0")
    jiao, fen = int(cents[0]), int(cents[1])
    out = zh_number(whole) + "元" if whole else ""
    if jiao == 0 and fen == 0:
        out = out + "整" if out else "零元"
    else:
        if jiao:
            out += ZH_DIGITS[jiao] + "角"
        if fen:
            if out and not jiao:
                out += "零"
            out += ZH_DIGITS[fen] + "分"
    return ("负" + out) if sign and out != "零元" else out


def zh_digits(value: str) -> str:
    return "".join(ZH_PHONE_DIGITS[int(c)] for c in value)


def zh_date(epoch: int, tz: tzinfo = UTC) -> str:
    """二零二五年十月一日: the year digit by digit, month and day as numbers."""
    d = datetime.fromtimestamp(epoch, tz).date()
    return "".join(ZH_DIGITS[int(c)] for c in f"{d.year:04d}") + "年" + zh_number(d.month) + "月" \
        + zh_number(d.day) + "日"


def sayable(kind: str, value: str) -> bool:
    """Only values that can be said as `kind` ever reach a command."""
    if not value or len(value) > 18 or not value.isascii():
        return False
    if kind == "money":
        return MONEY_RE.match(value) is not None
    if kind == "number":
        body = value[1:] if value.startswith("-") else value
        return body.isdigit()
    return value.isdigit()


def say_parts(kind: str, value: str, language: str, tz: tzinfo = UTC) -> tuple[SpokenPart, ...]:
    """How `value` (already `sayable`) is spoken as `kind` in `language`."""
    if language.split("_")[0] in WORDS_LANGUAGES:
        if kind == "number":
            text = zh_number(int(value))
        elif kind == "money":
            text = zh_money(value)
        elif kind == "digits":
            text = zh_digits(value)
        else:
            text = zh_date(int(value), tz)
        return (Words(tuple(text)),)
    if kind != "money":
        return (AsteriskSay(kind, value),)
    m = MONEY_RE.match(value)
    if m is None:
        raise TextError(f"not an amount: {value!r}")
    cents = int((m[3] or "").ljust(2, "0"))
    negative = bool(m[1]) and (int(m[2]) or cents)
    parts: list[SpokenPart] = [Words(("minus",))] if negative else []
    parts += [AsteriskSay("number", str(int(m[2]))), Words(("yuan",))]
    if cents:
        parts += [Words(("and",)), AsteriskSay("number", str(cents)), Words(("fen",))]
    return tuple(parts)


def vocabulary(language: str, kinds: Iterable[str]) -> tuple[str, ...]:
    """The words `say_parts` may use in `language` for these kinds (what to render ahead of time)."""
    kinds = set(kinds)
    if not kinds:
        return ()
    if language.split("_")[0] in WORDS_LANGUAGES:
        return ZH_VOCABULARY
    return EN_MONEY_WORDS if "money" in kinds else ()


# ---------------------------------------------------------------------------------------------
# Message templates


@dataclass(frozen=True)
class MessageTemplate:
    text: str
    fields: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> MessageTemplate:
        """'您的工单{case}已处理完毕：{result}' → fields ('case', 'result'); TextError when malformed.

        Placeholders are plain names ({case}); '{{' and '}}' are literal braces. Format specs,
        conversions, indexes and attributes ({a.b}, {0}, {x!r}, {x:>9}) are refused."""
        body = check_text(text, what="the template")
        fields: list[str] = []
        try:
            parsed = list(string.Formatter().parse(body))
        except ValueError as exc:
            raise TextError(f"the template has unbalanced braces: {exc}") from exc
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,31}", name) or spec or conversion:
                raise TextError(f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                                f"{':' + spec if spec else ''}}} is not a plain name like {{case}}")
            if name not in fields:
                fields.append(name)
        return cls(body, tuple(fields))

    def render(self, values: Mapping[str, object]) -> str:
        """The text with every placeholder replaced by its checked value.

        Every placeholder needs a value and every value a placeholder (a misspelt key is an error,
        not a silent gap); values are text of at most MAX_VALUE_CHARS without control characters."""
        unknown = sorted(set(values) - set(self.fields))
        if unknown:
            raise TextError(f"no placeholder named {', '.join(unknown)} in the template "
                            f"(placeholders: {', '.join(self.fields) or 'none'})")
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise TextError(f"missing value for {', '.join(missing)}")
        clean = {}
        for name in self.fields:
            raw = values[name]
            if isinstance(raw, bool) or not isinstance(raw, (str, int)):
                raise TextError(f"value of {name} must be text or a whole number")
            clean[name] = check_text(str(raw), limit=MAX_VALUE_CHARS, what=f"value of {name}").replace("\n", " ")
        out = []
        for literal, name, _spec, _conversion in string.Formatter().parse(self.text):
            out.append(literal)
            if name is not None:
                out.append(clean[name])
        return check_text("".join(out), what="the message")
