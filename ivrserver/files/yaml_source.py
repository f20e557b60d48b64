"""The one YAML loader for administrators' files (menus, routing policy, agents): text → Source.

- YAML is *composed* (not loaded) so every value and mapping key keeps its line and column, and
  duplicate mapping keys — which PyYAML's loader silently accepts, keeping the last — are
  reported. Mapping keys stay the text the admin wrote (`1:` is the key "1", `on:` is "on", not
  True); values are built by PyYAML's safe constructor (`08:30` unquoted is the number 510).
- Hostile input cannot crash it: the composer stops at `max_depth` nesting levels (PyYAML's
  composer recurses once per level: 5,000 `[` overflow Python's stack), aliases may not expand
  past `max_values` values, files past `MAX_FILE_BYTES` are not read.
- Every problem is a `domain.source.Issue`; nothing here raises for a bad file.
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ivrserver.domain.source import Issue, Position, Severity, Source, TreePath, dotted

MAX_VALUES = 20_000  # aliases can multiply a small file: refuse to expand past this
MAX_DEPTH = 40
MAX_FILE_BYTES = 1_000_000


class _Limit(Exception):
    pass


class _TooDeep(ComposerError):
    pass


class _DepthLimitedLoader(yaml.SafeLoader):
    """PyYAML's composer recurses once per nesting level: 5,000 `[` (10 KB) overflow Python's stack
    (RecursionError). The scanner and parser are not recursive, so stopping the composer at
    `max_depth` levels is enough; the error points at the first node that is too deep."""

    def __init__(self, stream: str, max_depth: int) -> None:
        super().__init__(stream)
        self._depth = 0
        self._max_depth = max_depth

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > self._max_depth + 1:
                event = self.peek_event()
                raise _TooDeep(None, None, f"nested deeper than {self._max_depth} levels", event.start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


class _TreeBuilder:
    """Composed YAML nodes → plain values plus positions; duplicate keys become issues."""

    def __init__(self, file: str, max_values: int, max_depth: int) -> None:
        self.file = file
        self.max_values = max_values
        self.max_depth = max_depth
        self.values: dict[TreePath, Position] = {}
        self.keys: dict[TreePath, Position] = {}
        self.issues: list[Issue] = []
        self.count = 0
        self.constructor = SafeConstructor()

    @staticmethod
    def pos(node: Node) -> Position:
        return Position(node.start_mark.line + 1, node.start_mark.column + 1)

    def error(self, node: Node, code: str, message: str, hint: str = "") -> None:
        p = self.pos(node)
        self.issues.append(Issue(self.file, p.line, p.column, Severity.ERROR, code, message, hint))

    def convert(self, node: Node, path: TreePath) -> Any:
        self.count += 1
        if self.count > self.max_values or len(path) > self.max_depth:
            raise _Limit
        self.values[path] = self.pos(node)
        if isinstance(node, ScalarNode):
            try:
                return self.constructor.construct_object(node, deep=True)
            except ConstructorError as exc:
                self.error(node, "yaml", f"{dotted(path)}: {exc.problem}")
                return node.value
        if isinstance(node, SequenceNode):
            return [self.convert(child, (*path, i)) for i, child in enumerate(node.value)]
        if isinstance(node, MappingNode):
            return self.mapping(node, path)
        raise TypeError(f"unexpected YAML node {node!r}")  # pragma: no cover - composer yields only 3 kinds

    def mapping(self, node: MappingNode, path: TreePath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, "yaml", f"{dotted(path)}: a mapping key must be plain text")
                continue
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.error(key_node, "yaml", f"{dotted(path)}: merge keys ('<<') are not supported",
                           "write the keys out; anchors and aliases of whole values are fine")
                continue
            key = key_node.value
            if key in first:
                line = first[key].start_mark.line + 1
                self.error(key_node, "duplicate-key",
                           f"{dotted((*path, key))}: duplicate key '{key}' (first defined on line {line})",
                           "YAML keeps only the last one: remove or rename one")
                continue
            first[key] = key_node
            self.keys[(*path, key)] = self.pos(key_node)
            out[key] = self.convert(value_node, (*path, key))
        return out


def _error(file: str, code: str, message: str, hint: str = "", line: int = 1, column: int = 1) -> list[Issue]:
    return [Issue(file, line, column, Severity.ERROR, code, message, hint)]


def parse(text: str, file: str, *, kind: str = "menu", max_values: int = MAX_VALUES,
          max_depth: int = MAX_DEPTH) -> tuple[Source | None, list[Issue]]:
    """YAML text → Source with positions; syntax errors, duplicate keys and limits as issues.
    `kind` names the file in messages ("nested deeper than 40 levels (the limit for a menu file)")."""
    try:
        root = yaml.compose(text, Loader=lambda stream: _DepthLimitedLoader(stream, max_depth))
    except _TooDeep as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, _error(file, "too-deep", f"nested deeper than {max_depth} levels (the limit for a {kind} file)",
                            f"a {kind} file needs only a few levels; check for unclosed '[' or '{{'", line, col)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        return None, _error(file, "yaml", f"not valid YAML: {problem}", "", line, col)
    except yaml.YAMLError as exc:
        return None, _error(file, "yaml", f"not valid YAML: {exc}")
    if root is None:
        return None, _error(file, "empty", "the file is empty")
    tb = _TreeBuilder(file, max_values, max_depth)
    try:
        data = tb.convert(root, ())
    except (_Limit, RecursionError):
        return None, _error(file, "yaml", f"too large or too deeply nested once aliases are expanded "
                                          f"(limit {max_values} values, depth {max_depth})")
    return Source(file, data, tb.values, tb.keys), tb.issues


def read_text(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> tuple[str | None, list[Issue]]:
    """The file's UTF-8 text, or None and why not (unreadable, larger than `max_bytes`, not UTF-8).
    Reads at most `max_bytes` + 1 bytes, so a huge file costs nothing."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        return None, _error(file, "io", f"cannot read: {exc.strerror}")
    if len(raw) > max_bytes:
        return None, _error(file, "io", f"larger than {max_bytes} bytes")
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        return None, _error(file, "io", f"not UTF-8: {exc.reason}")


def load(path: str | os.PathLike[str], *, kind: str = "menu", max_values: int = MAX_VALUES,
         max_depth: int = MAX_DEPTH) -> tuple[Source | None, list[Issue]]:
    """`read_text` then `parse`: a file → Source, or None and its issues."""
    text, issues = read_text(path)
    if text is None:
        return None, issues
    return parse(text, os.fspath(path), kind=kind, max_values=max_values, max_depth=max_depth)
