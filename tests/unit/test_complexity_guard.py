"""The complexity guard of `make lint` (ruff C90, limit in pyproject.toml) is on, at the limit
pyproject.toml justifies, for every folder `make lint` checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).with_name("ruff")
LIMIT = 20


def branches(n: int) -> str:
    """A function of cyclomatic complexity n + 1."""
    body = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(n))
    return f"def f(x: int) -> int:\n{body}    return -1\n"


def complexity_findings(source: str, filename: str) -> list[str]:
    """C901 findings of `make lint`'s own configuration (pyproject.toml's select) on `source`."""
    result = subprocess.run([str(RUFF), "check", "--output-format", "concise", "--no-cache",
                             "--stdin-filename", filename, "-"], input=source, capture_output=True, text=True,
                            cwd=REPO, timeout=60, check=False)
    return [line for line in result.stdout.splitlines() if "C901" in line]


@pytest.mark.parametrize("filename", ["ivrserver/domain/new.py", "ivrserver/services/new.py", "tests/test_new.py",
                                      "bench/new_bench.py"])
def test_a_function_past_the_limit_fails_lint(filename: str) -> None:
    assert complexity_findings(branches(LIMIT - 1), filename) == []  # complexity LIMIT: allowed
    findings = complexity_findings(branches(LIMIT), filename)         # LIMIT + 1
    assert len(findings) == 1 and f"({LIMIT + 1} > {LIMIT})" in findings[0]


def test_the_project_passes_its_own_limit() -> None:
    result = subprocess.run([str(RUFF), "check", "--select", "C90", "--no-cache", "ivrserver", "tests", "bench",
                             "scripts/hash-password"], capture_output=True, text=True, cwd=REPO, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout
