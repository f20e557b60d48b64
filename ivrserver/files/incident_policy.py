"""incidents.yaml on disk: read by the one YAML loader, validated with precise errors
(`file:line:column: error: where: what`, like routing.yaml), turned into domain.incidents.Policy.

The shipped default is ivrserver/defaults/incidents.yaml (it documents every key).
"""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ivrserver.domain import areas
from ivrserver.domain.incidents import SERVICE_RE, Policy, ServiceInfo
from ivrserver.files import validated, yaml_source
from ivrserver.files.validated import FileProblems, Where, build, hint

DEFAULT_FILE = str(Path(__file__).resolve().parent.parent / "defaults" / "incidents.yaml")
MAX_SERVICES = 100
MAX_AREAS = 10_000
_LANGS = ("en", "zh")

# key → (kind, lowest, highest, default)
_NUMBERS: dict[str, tuple[type, float, float, float]] = {
    "window": (int, 60, 86400, 600),
    "bucket": (int, 1, 3600, 60),
    "min_count": (int, 1, 1_000_000, 20),
    "ratio": (float, 1.0, 1000.0, 5.0),
    "baseline_hours": (int, 0, 24 * 28, 24),
    "cooldown": (int, 0, 7 * 86400, 1800),
    "interval": (float, 0.1, 60.0, 1.0),
    "callers_kept_days": (int, 1, 90, 7),
}
_TOP = (*_NUMBERS, "timezone", "services", "areas")
_SERVICE_KEYS = ("en", "zh", "queue", "priority")

class IncidentPolicyError(FileProblems):
    """Every problem of the file (its lines and positions)."""


def _number(data: Mapping[str, Any], key: str, problems: list[tuple[Where, str]]) -> float:
    kind, low, high, default = _NUMBERS[key]
    value = data.get(key, default)
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) \
        and (kind is float or float(value).is_integer())
    if not ok or not low <= value <= high:
        what = "a whole number" if kind is int else "a number"
        problems.append(((key,), f"{key}: expected {what} {low:g}..{high:g}, got {value!r}"))
        return default
    return kind(value)


def _names(raw: Mapping[str, Any], where: Where, problems: list[tuple[Where, str]]) -> dict[str, str]:
    names: dict[str, str] = {}
    for lang in _LANGS:
        text = raw.get(lang)
        if text is None:
            continue
        if not isinstance(text, str) or not text.strip() or len(text) > 80 or any(c in text for c in "\r\n{}"):
            problems.append(((*where, lang), f"{': '.join(map(str, where))}: {lang}: expected a short name "
                                             f"(1-80 characters on one line), got {text!r}"))
            continue
        names[lang] = text.strip()
    if "en" not in names and not any(p[0][:len(where)] == where for p in problems):
        problems.append((where, f"{': '.join(map(str, where))}: needs at least an English name (en:)"))
    return names


def _services(raw: object, queues: Collection[str] | None,
              problems: list[tuple[Where, str]]) -> dict[str, ServiceInfo]:
    if not isinstance(raw, Mapping) or not raw or len(raw) > MAX_SERVICES:
        problems.append((("services",),
                         f"services: expected a mapping of 1..{MAX_SERVICES} service names, got {raw!r}"))
        return {}
    out: dict[str, ServiceInfo] = {}
    for name, spec in raw.items():
        where: Where = ("services", str(name))
        if not isinstance(name, str) or not SERVICE_RE.match(name):
            problems.append((where, f"services: {name!r}: a service name is lower-case letters, digits and _ "
                                    "(starting with a letter, at most 32)"))
            continue
        if not isinstance(spec, Mapping):
            problems.append((where, f"services: {name}: expected a mapping with {', '.join(_SERVICE_KEYS)}"))
            continue
        for key in spec:
            if key not in _SERVICE_KEYS:
                problems.append(((*where, str(key)), f"services: {name}: unknown key \"{key}\"; allowed: "
                                                     f"{', '.join(_SERVICE_KEYS)}" + hint(key, _SERVICE_KEYS)))
        queue = spec.get("queue", "faults")
        if not isinstance(queue, str) or (queues is not None and queue not in queues):
            known = f" (known: {', '.join(queues)})" if queues is not None else ""
            problems.append(((*where, "queue"), f"services: {name}: queue: unknown queue {queue!r}{known}"
                             + (hint(queue, queues) if queues is not None else "")))
        priority = spec.get("priority", 2)
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 10:
            problems.append(((*where, "priority"), f"services: {name}: priority: expected 0..10, got {priority!r}"))
        out[name] = ServiceInfo(_names(spec, where, problems), str(queue), priority if isinstance(priority, int) else 2)
    return out


def _areas(raw: object, problems: list[tuple[Where, str]]) -> dict[str, dict[str, str]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or len(raw) > MAX_AREAS:
        problems.append((("areas",), f"areas: expected a mapping of area key → names (at most {MAX_AREAS})"))
        return {}
    out: dict[str, dict[str, str]] = {}
    for key, spec in raw.items():
        where: Where = ("areas", str(key))
        if not isinstance(key, str) or areas.area_key(key) != key:
            fixed = areas.area_key(key) if isinstance(key, str) else ""
            hint = f'; did you mean "{fixed}"?' if fixed else ""
            problems.append((where, f"areas: {key!r} is not an area key{hint}"))
            continue
        if not isinstance(spec, Mapping) or set(spec) - set(_LANGS):
            problems.append((where, f"areas: {key}: expected names {{en: ..., zh: ...}}"))
            continue
        out[key] = _names(spec, where, problems)
    return out


def validate(data: object, queues: Collection[str] | None = None) -> tuple[Policy | None, list[tuple[Where, str]]]:
    """(policy or None, [(where, message)]) for incidents.yaml data."""
    problems: list[tuple[Where, str]] = []
    if not isinstance(data, Mapping):
        return None, [((), f"expected a mapping with {', '.join(_TOP)}, got {data!r}")]
    for key in data:
        if key not in _TOP:
            problems.append(((str(key),), f'unknown key "{key}"; allowed: {", ".join(_TOP)}' + hint(key, _TOP)))
    numbers = {key: _number(data, key, problems) for key in _NUMBERS}
    if numbers["window"] % numbers["bucket"]:
        problems.append((("window",), f"window: {numbers['window']:g} s is not a multiple of bucket "
                                      f"({numbers['bucket']:g} s)"))
    zone = data.get("timezone", "UTC")
    try:
        if not isinstance(zone, str):
            raise ValueError(zone)
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append((("timezone",), f"timezone: unknown time zone {zone!r} (e.g. Asia/Shanghai, UTC)"))
    services = _services(data.get("services"), queues, problems)
    names = _areas(data.get("areas"), problems)
    if problems:
        return None, problems
    return Policy(window_seconds=int(numbers["window"]), bucket_seconds=int(numbers["bucket"]),
                  min_count=int(numbers["min_count"]), ratio=float(numbers["ratio"]),
                  baseline_hours=int(numbers["baseline_hours"]), cooldown_seconds=int(numbers["cooldown"]),
                  interval_seconds=float(numbers["interval"]), services=services, areas=names,
                  timezone=str(zone), callers_kept_seconds=int(numbers["callers_kept_days"]) * 86400), []


def load(path: str | os.PathLike[str] = DEFAULT_FILE, queues: Collection[str] | None = None) -> Policy:
    """Read and validate an incident policy file; raises IncidentPolicyError with every problem."""
    src, issues = yaml_source.load(path, kind="incident policy", max_values=yaml_source.MAX_VALUES)
    return build(src, issues, lambda data: validate(data, queues), "incidents", IncidentPolicyError)


def check(path: str, queues: Collection[str] | None = None) -> list[str]:
    """For `doctor`: every problem of the file, [] when valid."""
    return validated.check(lambda: load(path, queues))
