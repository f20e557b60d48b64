"""MenuRegistry.reload(): the one reload path; an invalid version never replaces the live one."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from ivrserver.services.menus import MenuRegistry

HOTLINE = Path(__file__).resolve().parents[2] / "menus" / "hotline.yaml"


def registry(tmp_path: Path) -> MenuRegistry:
    shutil.copy(HOTLINE, tmp_path / "hotline.yaml")
    return MenuRegistry(tmp_path, clock=lambda: 1234.0)


def test_reload_publishes_a_valid_version(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    assert reg.current.version == "" and reg.current.menus == {}
    result = reg.reload()
    assert result.ok and result.changed and result.errors == ()
    assert reg.current.version == result.version and len(result.version) == 12
    assert reg.current.loaded_at == 1234.0
    assert reg.current.menu("hotline").entry_open == "main"
    again = reg.reload()
    assert again.ok and not again.changed and again.version == result.version


def test_invalid_edit_keeps_the_live_version_and_running_calls_keep_theirs(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.reload()
    in_call = reg.current  # what a running call holds
    text = (tmp_path / "hotline.yaml").read_text()
    (tmp_path / "hotline.yaml").write_text(text.replace("{goto: balance}", "{goto: balanse}", 1))
    rejected = reg.reload()
    assert not rejected.ok and rejected.version == in_call.version
    assert [i.message for i in rejected.errors] == ["nodes.main.options.1: goto 'balanse': no such node"]
    assert reg.current is in_call
    (tmp_path / "hotline.yaml").write_text(text.replace('"9": {goto: language}', '"8": {goto: language}'))
    accepted = reg.reload()
    assert accepted.ok and accepted.changed
    assert reg.current is not in_call
    assert "9" in in_call.menu("hotline").nodes["main"].options  # the old call's version is untouched
    assert "8" in reg.current.menu("hotline").nodes["main"].options


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    result = MenuRegistry(tmp_path).reload()
    assert not result.ok and result.errors[0].message == "no menu files (*.yaml)"


async def test_watch_reloads_on_change(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    first = reg.reload().version
    task = asyncio.create_task(reg.watch(interval=0.01))
    try:
        text = (tmp_path / "hotline.yaml").read_text()
        (tmp_path / "hotline.yaml").write_text(text + "\n# edited\n")
        for _ in range(300):
            if reg.current.version != first:
                break
            await asyncio.sleep(0.01)
        assert reg.current.version != first
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
