"""Hostile menu files: no nesting, size or checker failure can crash the loader, the registry, its
file watch, `menus check` or the REST reload; the live version always stays."""

from __future__ import annotations

import asyncio
import io
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ivrserver.files import menus as menu_files
from ivrserver.metrics import Metrics
from ivrserver.services.menus import MenuRegistry
from ivrserver.web import api_menus
from ivrserver.web.app import build_app
from tests.unit.test_menus_cli import parse

HOTLINE = Path(__file__).resolve().parents[2] / "menus" / "hotline.yaml"

DEEP_FLOW = "[" * 5000  # 5,000 nested '[' (the 10 KB file of the report, half of it)
DEEP_MAPPING = "nodes: " + "{a: " * 800 + "1" + "}" * 800 + "\n"
DEEP_BLOCK = "".join("  " * i + "a:\n" for i in range(799)) + "  " * 799 + "a: 1\n"


@pytest.mark.parametrize(("text", "line", "column"), [
    (DEEP_FLOW, 1, 42),
    (DEEP_FLOW * 2, 1, 42),
    (DEEP_MAPPING, 1, 165),
    ("nodes: " + "[" * 800 + "1" + "]" * 800, 1, 48),
    (DEEP_BLOCK, 41, 81),
])
def test_nesting_past_the_limit_is_an_error_with_its_position(text: str, line: int, column: int) -> None:
    src, issues = menu_files.parse(text, "deep.yaml")
    assert src is None
    assert [(i.line, i.column, i.code, i.severity.value) for i in issues] == [(line, column, "too-deep", "error")]
    assert issues[0].format().startswith(f"deep.yaml:{line}:{column}: error: nested deeper than 40 levels")


def test_nesting_within_the_limit_still_parses() -> None:
    src, issues = menu_files.parse("nodes: " + "[" * 39 + "1" + "]" * 39, "ok.yaml")
    assert src is not None and issues == []


@pytest.fixture
def live(tmp_path: Path) -> Iterator[MenuRegistry]:
    shutil.copy(HOTLINE, tmp_path / "hotline.yaml")
    registry = MenuRegistry(tmp_path)
    assert registry.reload().ok
    yield registry


@pytest.mark.parametrize("text", [DEEP_FLOW, DEEP_MAPPING, DEEP_BLOCK])
def test_a_deep_file_is_rejected_and_the_live_version_stays(live: MenuRegistry, text: str) -> None:
    before = live.current
    (live.dir / "hotline.yaml").write_text(text)
    result = live.reload()
    assert not result.ok and result.version == before.version
    assert [i.code for i in result.errors] == ["too-deep"]
    assert live.current is before


def test_any_failure_of_the_checker_rejects_the_version(live: MenuRegistry) -> None:
    """A real RecursionError deep inside the checker (jsonschema, the builder...), provoked by a
    recursion limit just above the current depth, rejects the version instead of raising."""
    before = live.current
    (live.dir / "hotline.yaml").write_text(HOTLINE.read_text() + "\n# edited\n")
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 40)
    try:
        result = live.reload()
    finally:
        sys.setrecursionlimit(limit)
    assert not result.ok and live.current is before
    assert result.errors[0].message == "could not be checked: RecursionError"
    assert live.reload().ok and live.current is not before  # and nothing stuck: the next one loads


async def test_the_file_watch_survives_a_hostile_file_and_loads_the_fix(live: MenuRegistry) -> None:
    before = live.current
    task = asyncio.create_task(live.watch(interval=0.01))
    try:
        (live.dir / "hotline.yaml").write_text(DEEP_FLOW)
        await asyncio.sleep(0.3)
        assert not task.done() and live.current is before
        (live.dir / "hotline.yaml").write_text(HOTLINE.read_text() + "\n# fixed\n")
        for _ in range(300):
            if live.current is not before:
                break
            await asyncio.sleep(0.01)
        assert live.current is not before and not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("text", [DEEP_FLOW, DEEP_MAPPING, DEEP_BLOCK])
def test_menus_check_reports_nesting_as_an_error_line(tmp_path: Path, text: str) -> None:
    (tmp_path / "deep.yaml").write_text(text)
    args = parse("check", str(tmp_path / "deep.yaml"))
    out = io.StringIO()
    assert args.func(args, out=out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"{tmp_path / 'deep.yaml'}:") and ": error: nested deeper than 40 levels" in lines[0]
    assert lines[-1] == "1 file(s): 1 error(s), 0 warning(s)"


async def test_rest_reload_of_a_hostile_file_is_422_with_the_errors(live: MenuRegistry) -> None:
    before = live.current.version
    (live.dir / "hotline.yaml").write_text(DEEP_FLOW)
    app = build_app(Metrics(), {}, [api_menus.routes(live)])
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/api/v1/menus/reload")
        body = await response.json()
    assert response.status == 422
    assert body["ok"] is False and body["version"] == before
    assert [(e["line"], e["column"], e["code"]) for e in body["errors"]] == [(1, 42, "too-deep")]
