"""Running `ivrserver …` as a user does: the venv's console script in a child process.

Every test of a CLI command is marked `@covers("menus check")`; tests/test_cli_commands.py
compares the marked commands with the ones `cli.build_parser()` registers, so a new subcommand
without a test fails the suite.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from ivrserver.devstack.ports import free_port  # noqa: F401 - the CLI tests import it from here

REPO = Path(__file__).resolve().parent.parent
# The console script pip installed next to the interpreter that runs the tests (.venv/bin/ivrserver).
IVRSERVER = Path(sys.executable).parent / "ivrserver"

COVERED: dict[tuple[str, ...], list[str]] = {}

F = TypeVar("F", bound=Callable[..., object])


def covers(*commands: str) -> Callable[[F], F]:
    """Mark a test as one that runs these commands ("run", "callbacks add", …)."""
    def mark(test: F) -> F:
        for command in commands:
            COVERED.setdefault(tuple(command.split()), []).append(test.__name__)
        return test
    return mark


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable command path of the parser (`("menus", "check")`, …) with its parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from leaf_commands(sub, (*prefix, name))
            return
    yield prefix, parser


def user_env(redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: this test run's IVRSERVER_* variables dropped (they would
    be settings of the child), the private test Redis as redis.url, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVRSERVER_")}
    if redis_url is not None:
        env["IVRSERVER_REDIS__URL"] = redis_url
    env.update(extra)
    return env


def ivrserver(*args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 60,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `ivrserver ARGS…` to completion and return its exit code and output."""
    if not IVRSERVER.exists():
        raise AssertionError(f"{IVRSERVER} is missing: `make test` installs the project into the venv")
    return subprocess.run([str(IVRSERVER), *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or REPO, check=False)


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> None:
    """A failing command: non-zero exit and words for a user, no Python traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert (result.stderr + result.stdout).strip()
