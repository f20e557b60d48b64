"""A document read from a file an administrator edits (menus, routing policy, agents), and what is
wrong with it.

Pure: stdlib only. The adapter (files/yaml_source.py) turns YAML text into a `Source`: plain
values (dict / list / str / int / float / bool / None) plus where each value and each mapping key
starts. The domain's builders and validators report `Issue`s against those positions, and every
issue prints the same way: `file:line:column: severity: message (hint)`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TreePath = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(frozen=True)
class Source:
    """Parsed file: plain data plus where each value (and each mapping key) starts.

    `values[path]` is where the value at `path` starts; `keys[path]` is where the mapping key
    naming that value starts (so `keys[("nodes", "main")]` points at the text `main:`).
    """

    file: str
    data: Any
    values: Mapping[TreePath, Position] = field(default_factory=dict)
    keys: Mapping[TreePath, Position] = field(default_factory=dict)

    def at(self, path: TreePath, *, key: bool = False) -> Position:
        """Position of the value (or its key) at `path`, else of the nearest ancestor."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while True:
            if probe in table:
                return table[probe]
            if probe in self.values:
                return self.values[probe]
            if not probe:
                return Position(1, 1)
            probe = probe[:-1]


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Issue:
    file: str
    line: int
    column: int
    severity: Severity
    code: str
    message: str
    hint: str = ""

    def format(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def dotted(path: TreePath) -> str:
    return ".".join(str(p) for p in path) or "<top>"


def has_errors(issues: Sequence[Issue]) -> bool:
    return any(i.severity is Severity.ERROR for i in issues)
