"""Guard: the rooms import only what they may (design.md "Rooms and what each may touch").

- `ivrserver/domain/` imports the standard library and `ivrserver.domain` only, plus the pure-data
  libraries in DOMAIN_THIRD_PARTY.
- `ivrserver/web/` and `ivrserver/commands/` never import `ivrserver.store` or `ivrserver.record`:
  they call services.

Every module is parsed with `ast` (imports inside functions count too; `if TYPE_CHECKING:` blocks
as well, a type is a dependency) and each violation is reported as file:line.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ivrserver"

# Third-party libraries domain/ may use: pure data and functions, no I/O, no clock, no event loop.
# phonenumbers (domain/phone.py): Google's numbering-plan metadata and parser/formatter, pure.
DOMAIN_THIRD_PARTY = frozenset({"phonenumbers"})


def imports(path: Path, text: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in one module (`text`: its source, else read)."""
    source = path.read_text(encoding="utf-8") if text is None else text
    tree = ast.parse(source, filename=str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [f"{module}.{a.name}" for a in node.names] if module in ("ivrserver",) else [module]
            for name in names:
                yield node.lineno, name


def modules(room: str) -> list[Path]:
    return sorted((PACKAGE / room).rglob("*.py"))


def _top(name: str) -> str:
    return name.split(".")[0]


def domain_violations() -> list[str]:
    allowed_std = sys.stdlib_module_names | {"__future__"}
    out = []
    for path in modules("domain"):
        for line, name in imports(path):
            ok = (_top(name) in allowed_std or _top(name) in DOMAIN_THIRD_PARTY
                  or name == "ivrserver.domain" or name.startswith("ivrserver.domain."))
            if not ok:
                out.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {name}")
    return out


def adapter_violations(rooms: tuple[str, ...] = ("web", "commands")) -> list[str]:
    out = []
    for room in rooms:
        for path in modules(room):
            for line, name in imports(path):
                if name.split(".")[:2] in (["ivrserver", "store"], ["ivrserver", "record"]):
                    out.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {name}")
    return out


def test_domain_imports_only_stdlib_and_domain() -> None:
    problems = domain_violations()
    assert not problems, "domain/ must stay pure (stdlib + domain only):\n  " + "\n  ".join(problems)


def test_web_and_commands_never_import_store_or_record() -> None:
    problems = adapter_violations()
    assert not problems, ("web/ and commands/ call services, never store/ or record/:\n  "
                          + "\n  ".join(problems))


def test_the_guard_sees_violations() -> None:
    """The parser resolves every import form an adapter could use to depend on the store."""
    code = ("import ivrserver.store.keys\nfrom ivrserver.store import pops\nfrom ivrserver import record\n"
            "from ..store.customers import get_customer\nimport os\n"
            "def f():\n    from ivrserver.record import sink\n")
    names = [name for _, name in imports(PACKAGE / "web" / "bodies.py", code)]
    assert names == ["ivrserver.store.keys", "ivrserver.store", "ivrserver.record",
                     "ivrserver.store.customers", "os", "ivrserver.record"]


def test_the_guard_reports_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package whose web/ imports the store and whose domain/ imports redis: both found, as file:line."""
    root = tmp_path / "ivrserver"
    for room, code in {"web": "import json\nfrom ivrserver.store.keys import Keys\n",
                       "commands": "from ..record import sink\n",
                       "domain": "import re\nimport redis\nfrom ivrserver.domain import model\nimport phonenumbers\n"
                       }.items():
        (root / room).mkdir(parents=True)
        (root / room / "m.py").write_text(code)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", root)
    assert adapter_violations() == ["ivrserver/web/m.py:2: imports ivrserver.store.keys",
                                    "ivrserver/commands/m.py:1: imports ivrserver.record"]
    assert domain_violations() == ["ivrserver/domain/m.py:2: imports redis"]
