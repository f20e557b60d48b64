"""Read the parts of Asterisk's own .conf files that ivrserver cares about.

Uses pyst2's `asterisk.config` parser: it is synchronous and file-based, which is right for
`doctor` and `menus check` (never called on the event loop of the running server). pyst2 cannot
parse template sections (`[name](!)`), so those files are reported as unreadable, not guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asterisk.config as pyst_config

from ivrserver.domain.queue_names import QUEUE_PREFIX as QUEUE_PREFIX
from ivrserver.domain.queue_names import asterisk_queue as asterisk_queue
from ivrserver.domain.queue_names import ivr_queue as ivr_queue


class ConfReadError(Exception):
    """A .conf file is missing or cannot be parsed."""


@dataclass(frozen=True)
class ConfSection:
    name: str
    items: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str = "") -> str:
        for name, value in self.items:
            if name == key:
                return value
        return default

    def get_all(self, key: str) -> list[str]:
        return [value for name, value in self.items if name == key]


class _Config(pyst_config.Config):  # type: ignore[misc]
    """pyst2's parser, reading the file with a context manager (its own load() leaks the handle)."""

    def load(self) -> None:
        with open(self.filename, encoding="utf-8", errors="replace") as f:
            self.raw_lines = f.readlines()


def read_conf(path: str | Path) -> list[ConfSection]:
    """Sections of one .conf file, in order (items keep duplicates, e.g. `member =`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfReadError(f"{path}: no such file")
    try:
        parsed = _Config(str(path))
    except pyst_config.ParseError as exc:
        line, message = exc.args if len(exc.args) == 2 else ("?", exc)
        raise ConfReadError(f"{path}:{line}: {message}") from exc
    except Exception as exc:  # pyst2 raises bare Exceptions on odd input (e.g. templates)
        raise ConfReadError(f"{path}: cannot parse: {exc}") from exc
    return [ConfSection(cat.name, tuple((item.name, item.value) for item in cat.items))
            for cat in parsed.categories]


# app_queue reads a [general] section as its global settings, so no queue can be called
# "general": every queue ivrserver routes to is named "ivr-<name>" in queues.conf. The names are
# converted in one place, domain/queue_names.py (imported above, re-exported for the adapters).


_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*(\(([^)]*)\))?")


def queue_names(queues_conf: str | Path, prefix: str = QUEUE_PREFIX) -> set[str]:
    """ivrserver queue names defined in queues.conf (sections `[ivr-<name>]`, prefix stripped).

    queues.conf uses template sections (`[queue-defaults](!)`), which pyst2 cannot parse, so the
    section headers are read directly; [general] and templates are not queues.
    """
    path = Path(queues_conf)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfReadError(f"{path}: {exc.strerror}") from exc
    names: set[str] = set()
    for line in text.splitlines():
        mt = _SECTION.match(line)
        if mt is None:
            continue
        name, options = mt[1].strip(), (mt[3] or "")
        if name.lower() == "general" or "!" in options or not name.startswith(prefix):
            continue
        names.add(name[len(prefix):])
    return names


# logger.conf levels that write every key a caller presses (account numbers, PINs): `dtmf`
# itself and `*` ("all levels"). A channel may start with a format in brackets: `[plain]notice`.
KEYPRESS_LEVELS = frozenset({"dtmf", "*"})


def keypress_log_channels(logger_conf: str | Path) -> list[str]:
    """The [logfiles] channels of logger.conf that record DTMF (e.g. `["full.log"]`).

    Raises ConfReadError when the file is missing or cannot be parsed.
    """
    channels = []
    for section in read_conf(logger_conf):
        if section.name.strip().lower() != "logfiles":
            continue
        for channel, value in section.items:
            levels = re.sub(r"^\s*\[[^\]]*\]", "", value)
            names = {re.sub(r"\(.*\)$", "", part.strip()).lower() for part in levels.split(",")}
            if names & KEYPRESS_LEVELS:
                channels.append(channel.strip())
    return channels
