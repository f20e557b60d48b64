"""reminders.yaml on disk: read by the one YAML loader, validated with precise errors
(`file:line:column: error: where: what`, like routing.yaml), turned into domain.reminders.Rules.

The shipped example is ivrserver/defaults/reminders.yaml (it documents every key).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ivrserver.domain import reminders as rules_domain
from ivrserver.domain import sms
from ivrserver.domain.callbacks import parse_hhmm
from ivrserver.domain.reminders import AttributeRule, EventRule, Rules
from ivrserver.domain.source import Issue, Source
from ivrserver.files import validated, yaml_source
from ivrserver.files.validated import FileProblems, Problems, Where, build, hint

DEFAULT_FILE = str(Path(__file__).resolve().parent.parent / "defaults" / "reminders.yaml")
MAX_RULES = 100
MAX_TEMPLATE = sms.MAX_CHARS
_TOP = ("attributes", "events")
_ATTRIBUTE_KEYS = ("attribute", "days_before", "at", "kind", "channel", "text")
_EVENT_KEYS = ("event", "kind", "channel", "valid_hours", "text")

class ReminderRulesError(FileProblems):
    """Every problem of the file (its lines and positions)."""


def _label(where: Where) -> str:
    return ": ".join(map(str, where))


def _unknown_keys(spec: Mapping[str, Any], allowed: tuple[str, ...], where: Where, problems: Problems) -> None:
    for key in spec:
        if key not in allowed:
            problems.append(((*where, str(key)), f"{_label(where)}: unknown key \"{key}\"; allowed: "
                                                 f"{', '.join(allowed)}" + hint(key, allowed)))


def _name(spec: Mapping[str, Any], key: str, where: Where, problems: Problems, default: str | None = None) -> str:
    value = spec.get(key, default)
    if not isinstance(value, str) or not rules_domain.NAME_RE.match(value):
        problems.append(((*where, key), f"{_label(where)}: {key}: expected a name of lower-case letters, digits "
                                        f"and _ (starting with a letter, at most 32), got {value!r}"))
        return ""
    return value


def _whole(spec: Mapping[str, Any], key: str, low: int, high: int, default: int | None,
           where: Where, problems: Problems) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(((*where, key), f"{_label(where)}: {key}: expected a whole number {low}..{high}, "
                                        f"got {value!r}"))
        return low
    return value


def _channel(spec: Mapping[str, Any], where: Where, problems: Problems) -> str:
    value = spec.get("channel", "auto")
    if value not in rules_domain.CHANNELS:
        problems.append(((*where, "channel"), f"{_label(where)}: channel: expected one of "
                                              f"{', '.join(rules_domain.CHANNELS)}, got {value!r}"
                         + hint(value, rules_domain.CHANNELS)))
        return "auto"
    return str(value)


def _template(text: object, allowed: tuple[str, ...], where: Where, problems: Problems) -> str | None:
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEMPLATE:
        problems.append((where, f"{_label(where)}: expected a text of 1-{MAX_TEMPLATE} characters, got {text!r}"))
        return None
    try:
        sms.check_text(text)
    except sms.SmsInvalid as exc:
        problems.append((where, f"{_label(where)}: {exc} (one line of printable text)"))
        return None
    names, clean = rules_domain.placeholders(text)
    if not clean:
        problems.append((where, f"{_label(where)}: a brace is only allowed around a placeholder: "
                                f"{', '.join('{' + n + '}' for n in allowed)}"))
        return None
    for name in names:
        if name not in allowed:
            problems.append((where, f"{_label(where)}: unknown placeholder {{{name}}}; allowed: "
                                    f"{', '.join('{' + n + '}' for n in allowed)}" + hint(name, allowed)))
            return None
    return text


def _texts(spec: Mapping[str, Any], allowed: tuple[str, ...], where: Where, problems: Problems) -> dict[str, str]:
    raw = spec.get("text")
    here: Where = (*where, "text")
    if not isinstance(raw, Mapping) or not raw:
        problems.append((here, f"{_label(here)}: expected texts by language, e.g. {{en: \"...\", zh: \"...\"}}"))
        return {}
    out: dict[str, str] = {}
    for lang, text in raw.items():
        if lang not in rules_domain.LANGUAGES:
            problems.append(((*here, str(lang)), f"{_label(here)}: unknown language \"{lang}\"; allowed: "
                                                 f"{', '.join(rules_domain.LANGUAGES)}"))
            continue
        checked = _template(text, allowed, (*here, lang), problems)
        if checked is not None:
            out[lang] = checked
    return out


def _at(spec: Mapping[str, Any], where: Where, problems: Problems) -> tuple[int, int]:
    value = spec.get("at", "10:00")
    if isinstance(value, int) and not isinstance(value, bool):
        problems.append(((*where, "at"), f"{_label(where)}: at: write the time quoted (\"{value // 60:02d}:"
                                         f"{value % 60:02d}\"): unquoted, YAML reads it as the number {value}"))
        return (10, 0)
    try:
        hhmm = parse_hhmm(value) if isinstance(value, str) else parse_hhmm("")
    except ValueError:
        problems.append(((*where, "at"), f"{_label(where)}: at: expected \"HH:MM\" (00:00-23:59), got {value!r}"))
        return (10, 0)
    if hhmm[0] == 24:
        problems.append(((*where, "at"), f"{_label(where)}: at: expected \"HH:MM\" (00:00-23:59), got {value!r}"))
    return hhmm


def _section(raw: object, name: str, problems: Problems) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or len(raw) > MAX_RULES:
        problems.append(((name,), f"{name}: expected a mapping of rule name → rule (at most {MAX_RULES})"))
        return {}
    return raw


def _rule_spec(rule: object, spec: object, where: Where, allowed: tuple[str, ...], problems: Problems) -> bool:
    if not isinstance(rule, str) or not rules_domain.NAME_RE.match(rule):
        problems.append((where, f"{_label(where[:1])}: {rule!r}: a rule name is lower-case letters, digits and _ "
                                "(starting with a letter, at most 32)"))
        return False
    if not isinstance(spec, Mapping):
        problems.append((where, f"{_label(where)}: expected a mapping with {', '.join(allowed)}"))
        return False
    _unknown_keys(spec, allowed, where, problems)
    return True


def _attribute_rules(raw: object, problems: Problems) -> list[AttributeRule]:
    out = []
    for rule, spec in _section(raw, "attributes", problems).items():
        where: Where = ("attributes", str(rule))
        if not _rule_spec(rule, spec, where, _ATTRIBUTE_KEYS, problems):
            continue
        attribute = spec.get("attribute")
        if not isinstance(attribute, str) or not 0 < len(attribute) <= 64 or not all(
                c.isascii() and (c.isalnum() or c in "_.-") for c in attribute):
            problems.append(((*where, "attribute"), f"{_label(where)}: attribute: expected a profile attribute name "
                                                    f"(1-64 letters, digits, _ . -), got {attribute!r}"))
        out.append(AttributeRule(
            name=rule, attribute=str(attribute), days_before=_whole(spec, "days_before", 0, 366, None, where, problems),
            at=_at(spec, where, problems), kind=_name(spec, "kind", where, problems),
            channel=_channel(spec, where, problems),
            text=_texts(spec, rules_domain.ATTRIBUTE_PLACEHOLDERS, where, problems)))
    return out


def _event_rules(raw: object, problems: Problems) -> list[EventRule]:
    out = []
    for rule, spec in _section(raw, "events", problems).items():
        where: Where = ("events", str(rule))
        if not _rule_spec(rule, spec, where, _EVENT_KEYS, problems):
            continue
        out.append(EventRule(
            name=rule, event=_name(spec, "event", where, problems), kind=_name(spec, "kind", where, problems),
            channel=_channel(spec, where, problems),
            valid_hours=_whole(spec, "valid_hours", 1, 24 * 30, 24, where, problems),
            text=_texts(spec, rules_domain.EVENT_PLACEHOLDERS, where, problems)))
    return out


def validate(data: object) -> tuple[Rules | None, Problems]:
    """(rules or None, [(where, message)]) for reminders.yaml data."""
    problems: Problems = []
    if not isinstance(data, Mapping):
        return None, [((), f"expected a mapping with {', '.join(_TOP)}, got {data!r}")]
    for key in data:
        if key not in _TOP:
            problems.append(((str(key),), f'unknown key "{key}"; allowed: {", ".join(_TOP)}' + hint(key, _TOP)))
    attributes = _attribute_rules(data.get("attributes"), problems)
    events = _event_rules(data.get("events"), problems)
    for rule in events:
        if rule.name in {a.name for a in attributes}:
            problems.append((("events", rule.name), f"events: {rule.name}: the name is also an attribute rule's "
                                                    "(a rule name must be unique: it is part of each notice's key)"))
    if problems:
        return None, problems
    return Rules(attributes=tuple(attributes), events=tuple(events)), []


def parse(text: str, file: str = "reminders.yaml") -> Rules:
    """Validate reminders YAML text; raises ReminderRulesError with every problem."""
    src, issues = yaml_source.parse(text, file, kind="reminders")
    return _finish(src, issues)


def _finish(src: Source | None, issues: list[Issue]) -> Rules:
    return build(src, issues, validate, "reminders", ReminderRulesError)


def load(path: str | os.PathLike[str] = DEFAULT_FILE) -> Rules:
    """Read and validate a reminders file; raises ReminderRulesError with every problem."""
    src, issues = yaml_source.load(path, kind="reminders")
    return _finish(src, issues)


def check(path: str) -> list[str]:
    """For `doctor`: every problem of the file, [] when valid."""
    return validated.check(lambda: load(path))
