"""Cells a spreadsheet shows as text: the CSV escaping shared by every export (customers, reports).

OWASP CSV injection: a spreadsheet runs a cell that begins with `=`, `+`, `-`, `@`, tab or CR as a
formula. `csv_escape` puts a `'` before such a cell (and before a cell that begins with `'` itself,
so that `csv_unescape` is exact on import).
"""

from __future__ import annotations

FORMULA_TRIGGERS = frozenset("=+-@\t\r")


def csv_escape(value: str) -> str:
    """A cell a spreadsheet shows as text: a `'` goes before a cell that begins with a formula
    trigger (`=`, `+`, `-`, `@`, tab, CR) or with `'` itself (so that `csv_unescape` is exact)."""
    return "'" + value if value and (value[0] in FORMULA_TRIGGERS or value[0] == "'") else value


def csv_unescape(value: str | None) -> str | None:
    """Undo `csv_escape` on import: one leading `'` is dropped when a formula trigger or another `'`
    follows it (`'+8613800000000` → `+8613800000000`); any other `'` is kept as written."""
    if value and len(value) > 1 and value[0] == "'" and (value[1] in FORMULA_TRIGGERS or value[1] == "'"):
        return value[1:]
    return value
