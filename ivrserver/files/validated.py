"""What the YAML policy files (incidents.yaml, reminders.yaml) share after the one YAML loader:
their error, the "did you mean" hint, and turning a validator's (where, message) problems into
`file:line:column: error: where: what` issues at the right place of the file.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, TypeVar

from ivrserver.domain import suggest
from ivrserver.domain.source import Issue, Severity, Source

Where = tuple[str | int, ...]
Problems = list[tuple[Where, str]]
T = TypeVar("T")


class FileProblems(ValueError):
    """Every problem of one file (`problems`: formatted lines; `issues`: with their positions)."""

    def __init__(self, problems: list[str], issues: list[Issue] | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.issues = issues or []


def hint(word: object, allowed: Collection[str]) -> str:
    """'; did you mean "…"?' for a misspelt key, or ''."""
    text = suggest.did_you_mean(word, allowed, quote='"')
    return f"; {text}" if text else ""


def build(src: Source | None, issues: list[Issue], validate: Callable[[Any], tuple[T | None, Problems]],
          code: str, error: type[FileProblems]) -> T:
    """The value `validate` makes of a loaded file's data; raises `error` with the loader's issues
    and every problem of the validator (reported under `code`) at its key's position."""
    if src is None:
        raise error([i.format() for i in issues], issues)
    value, problems = validate(src.data)
    for where, message in problems:
        pos = src.at(where, key=True)
        issues.append(Issue(src.file, pos.line, pos.column, Severity.ERROR, code, message))
    if issues or value is None:
        raise error([i.format() for i in issues], issues)
    return value


def check(load: Callable[[], object]) -> list[str]:
    """For `doctor`: every problem `load` raises, [] when the file is valid."""
    try:
        load()
    except FileProblems as exc:
        return exc.problems
    return []
