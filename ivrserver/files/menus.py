"""Menu files on disk: YAML → position-annotated tree, JSON Schema check, Asterisk resources.

- `parse(text, file)`: the one loader of admins' files (files/yaml_source.py): every value and
  mapping key keeps its line and column, duplicate keys are refused, nesting and aliases are
  bounded; every problem is a `domain.source.Issue` (`file:line:column: severity: message (hint)`).
- `schema_issues(source)`: menus/schema.json (draft 2020-12) over the plain data; each error is
  mapped back to a line and column, unknown keys get a "did you mean".
- `load_menu(path, resources)`: the whole pipeline for one file → (Menu | None, issues).
- `sound_catalog(dir)`: sound names available (relative, no extension) → estimated seconds.
- queue names come from `ivrserver.pbx.asterisk_conf.queue_names` (one reader for queues.conf).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import wave
import zoneinfo
from collections.abc import Iterator
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from ivrserver.config import REPO_DIR
from ivrserver.domain import menu as m
from ivrserver.files import yaml_source
from ivrserver.pbx.asterisk_conf import ConfReadError, queue_names
from ivrserver.services import work_calendar

if TYPE_CHECKING:
    from ivrserver.services.speech import SpeechRenderer

log = logging.getLogger(__name__)

SCHEMA_PATH = REPO_DIR / "menus" / "schema.json"
MAX_FILE_BYTES = yaml_source.MAX_FILE_BYTES

# Bytes per second of audio by Asterisk file extension (8 kHz unless noted).
BYTE_RATES = {
    "gsm": 1650.0, "ulaw": 8000.0, "ul": 8000.0, "alaw": 8000.0, "al": 8000.0, "pcm": 8000.0,
    "g722": 8000.0, "g729": 1000.0, "sln": 16000.0, "raw": 16000.0, "sln16": 32000.0,
    "g726": 4000.0, "ilbc": 1900.0,
}
SOUND_EXTENSIONS = frozenset({*BYTE_RATES, "wav", "WAV", "mp3", "ogg", "siren7", "siren14", "h263"})


def parse(text: str, file: str) -> tuple[m.Source | None, list[m.Issue]]:
    """YAML text → Source with positions (files/yaml_source.py, the loader shared with routing)."""
    return yaml_source.parse(text, file, kind="menu")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _subschema_properties(error: jsonschema.ValidationError) -> list[str]:
    props = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    return list(props)


def _schema_issue(src: m.Source, error: jsonschema.ValidationError) -> Iterator[m.Issue]:
    path: m.TreePath = tuple(error.absolute_path)
    where = m.dotted(path)

    def issue(p: m.TreePath, message: str, hint: str = "", *, key: bool = False) -> m.Issue:
        pos = src.at(p, key=key)
        return m.Issue(src.file, pos.line, pos.column, m.Severity.ERROR, "schema", message, hint)

    if "propertyNames" in error.schema_path and isinstance(error.instance, str):
        # A mapping key that is not allowed: point at the key itself.
        bad = error.instance
        if error.validator == "enum":
            hint = m.did_you_mean(bad, [str(c) for c in error.validator_value])
        else:
            hint = error.schema.get("description", "") if isinstance(error.schema, dict) else ""
        yield issue((*path, bad), f"{m.dotted((*path, bad))}: key '{bad}' is not allowed here", hint, key=True)
        return
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = _subschema_properties(error)
        for extra in error.instance:
            if extra not in allowed:
                yield issue((*path, extra), f"{m.dotted((*path, extra))}: unknown key '{extra}'",
                            m.did_you_mean(extra, allowed), key=True)
        return
    if error.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        yield issue(path, f"{where}: missing required key '{missing[0] if missing else error.message}'",
                    key=True)
        return
    if error.validator == "enum":
        choices = [str(c) for c in error.validator_value]
        yield issue(path, f"{where}: {error.instance!r} is not allowed",
                    m.did_you_mean(str(error.instance), choices))
        return
    if error.validator in ("oneOf", "anyOf"):
        # Actions: exactly one of the flow keys. Say that instead of jsonschema's generic text.
        if isinstance(error.instance, dict) and "goto" in json.dumps(error.validator_value):
            flows = [k for k in m.FLOW_KEYS if k in error.instance]
            if len(flows) != 1:
                got = f"; got {', '.join(flows)}" if flows else ""
                yield issue(path, f"{where}: an action takes exactly one of {', '.join(m.FLOW_KEYS)}{got}")
                return
        context = error.context or []
        if isinstance(error.instance, dict) and isinstance(error.validator_value, list):
            # A prompt {text: ...} that fails: report what is wrong with it as a text prompt.
            fits = [i for i, alt in enumerate(error.validator_value) if isinstance(alt, dict)
                    and alt.get("required") and set(alt["required"]) <= set(error.instance)]
            if len(fits) == 1:
                context = [c for c in context if c.relative_schema_path
                           and c.relative_schema_path[0] == fits[0]] or context
        best = jsonschema.exceptions.best_match([c for c in context if c.validator != "type"] or context)
        if best is not None:
            yield from _schema_issue(src, best)
            return
    description = error.schema.get("description", "") if isinstance(error.schema, dict) else ""
    if error.validator == "pattern" and description:
        yield issue(path, f"{where}: {error.instance!r} is not valid", description)
        return
    text = error.message
    if len(text) > 160:
        text = text[:157] + "..."
    yield issue(path, f"{where}: {text}", description if error.validator == "pattern" else "")


def schema_issues(src: m.Source) -> list[m.Issue]:
    validator = jsonschema.Draft202012Validator(schema())
    errors = list(validator.iter_errors(src.data))
    # An unknown key inside an action also fails "exactly one flow key": report only the unknown key.
    unknown_at = {tuple(err.absolute_path) for err in errors if err.validator == "additionalProperties"}
    issues: list[m.Issue] = []
    for error in errors:
        if error.validator == "oneOf" and tuple(error.absolute_path) in unknown_at:
            continue
        issues.extend(_schema_issue(src, error))
    return sorted(dict.fromkeys(issues), key=lambda i: (i.line, i.column))


def check_text(text: str, file: str, name: str, resources: m.Resources | None = None,
               renderer: SpeechRenderer | None = None) -> tuple[m.Menu | None, list[m.Issue]]:
    """The whole pipeline for one menu's text: YAML, schema, build, render the text prompts
    (with a renderer: their audio's durations feed the prompt-length lint), validate and lint."""
    src, issues = parse(text, file)
    if src is None or m.has_errors(issues):
        return None, issues
    issues = schema_issues(src)
    if issues:
        return None, issues
    menu, issues = m.build(src, name)
    if menu is None:
        return None, sorted(issues, key=lambda i: (i.line, i.column, i.code))
    if renderer is not None:
        clips, spoken, speech_issues = renderer.render_menu(menu, src)
        issues = [*issues, *speech_issues]
        resources = dataclasses.replace(resources or m.Resources(), spoken=spoken)
        menu = dataclasses.replace(menu, clips=clips)
    issues = list(dict.fromkeys([*issues, *m.validate(menu, src, resources)]))
    menu, calendar_issues = work_calendar.attach_to_menu(menu, src, date.today())
    issues += calendar_issues
    issues.sort(key=lambda i: (i.line, i.column, i.code))
    return (None if m.has_errors(issues) else menu), issues


def load_menu(path: str | os.PathLike[str], resources: m.Resources | None = None,
              renderer: SpeechRenderer | None = None) -> tuple[m.Menu | None, list[m.Issue]]:
    """`check_text` on a file; never raises: a failure of the checker itself (RecursionError,
    MemoryError, a bug) is an error of that file, so no menu file can take a caller down."""
    try:
        return _load_menu(Path(path), resources, renderer)
    except Exception as exc:  # any failure rejects this file, nothing else
        log.error("menu file could not be checked", extra={"file": str(path)}, exc_info=True)
        return None, [m.Issue(str(path), 1, 1, m.Severity.ERROR, "internal",
                              f"could not be checked: {type(exc).__name__}",
                              "simplify the file (nesting, size); the error is logged")]


def _load_menu(p: Path, resources: m.Resources | None, renderer: SpeechRenderer | None = None
               ) -> tuple[m.Menu | None, list[m.Issue]]:
    text, issues = yaml_source.read_text(p, MAX_FILE_BYTES)
    if text is None:
        return None, issues
    return check_text(text, str(p), p.stem, resources, renderer)


def menu_files(directory: str | os.PathLike[str]) -> list[Path]:
    d = Path(directory)
    if d.is_file():
        return [d]
    return sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


# ---------------------------------------------------------------------------------------------
# Asterisk resources


def _seconds(path: Path, ext: str) -> float | None:
    if ext.lower() == "wav":
        try:
            with wave.open(str(path), "rb") as w:
                return w.getnframes() / float(w.getframerate() or 8000)
        except (wave.Error, EOFError, OSError):
            return None
    rate = BYTE_RATES.get(ext)
    if rate is None:
        return None
    try:
        return path.stat().st_size / rate
    except OSError:
        return None


def _follow_in_root(path: Path, base: Path, hops: int = 8) -> Path:
    """Follow symlinks as a chroot would: seen from the host, Debian's absolute link
    sounds/en -> /etc/alternatives/asterisk-prompt-en dangles; resolve it against the ancestor of
    `base` that is the chroot's root (the one where the target exists)."""
    for _ in range(hops):
        if not path.is_symlink() or path.exists():
            return path
        target = os.readlink(path)
        if not target.startswith("/"):
            return path
        for root in base.parents:
            candidate = root / target.lstrip("/")
            if candidate.exists() or candidate.is_symlink():
                path = candidate
                break
        else:
            return path
    return path


def sound_catalog(directory: str | os.PathLike[str], language: str = "en") -> dict[str, float | None]:
    """Sound names under `directory` (or its `language` subdirectory) → estimated seconds.

    Names are relative paths without extension ('vm-intro', 'digits/5'), as STREAM FILE takes
    them. The duration comes from the file size and the codec's byte rate (gsm: 1650 B/s);
    None when the format's rate is unknown.
    """
    base = Path(directory)
    lang = _follow_in_root(base / language, base)
    if lang.is_dir():
        base = lang
    out: dict[str, float | None] = {}
    if not base.is_dir():
        raise FileNotFoundError(f"sounds directory not found: {base}")
    for root, _dirs, files in os.walk(base, followlinks=False):
        for fname in files:
            stem, dot, ext = fname.rpartition(".")
            if not dot or ext not in SOUND_EXTENSIONS:
                continue
            rel = os.path.relpath(os.path.join(root, stem), base).replace(os.sep, "/")
            secs = _seconds(Path(root) / fname, ext)
            prev = out.get(rel)
            out[rel] = secs if prev is None else prev
    return out


def timezones() -> set[str]:
    return set(zoneinfo.available_timezones())


def resources(sounds_dir: str | None = None, queues_conf: str | None = None, language: str = "en",
              queue_prefix: str = "ivr-") -> tuple[m.Resources, list[str]]:
    """Resources for validation, plus notes on what could not be checked."""
    notes: list[str] = []
    sounds = queues = None
    if sounds_dir:
        try:
            sounds = sound_catalog(sounds_dir, language)
        except OSError as exc:
            notes.append(f"sounds not checked: {exc}")
    if queues_conf:
        try:
            queues = queue_names(queues_conf, queue_prefix)
        except ConfReadError as exc:
            notes.append(f"queues not checked: {exc}")
    return m.Resources(sounds=sounds, queues=queues, timezones=timezones()), notes
