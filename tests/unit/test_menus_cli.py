"""`ivrserver menus check | simulate | reload` on the shipped hotline and the broken corpus."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
from pathlib import Path

import pytest
from aiohttp import web

from ivrserver.commands import menus as cli
from ivrserver.domain import menu_engine as e
from ivrserver.domain import menu_stats as ms
from ivrserver.services.menus import MenuRegistry
from ivrserver.web import api_menus
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
HOTLINE = ROOT / "menus" / "hotline.yaml"
CORPUS = Path(__file__).resolve().parent / "menu_corpus"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["menus", *argv])


def run(*argv: str) -> tuple[int, str]:
    args = parse(*argv)
    out = io.StringIO()
    return args.func(args, out=out), out.getvalue()


def test_check_hotline_is_clean() -> None:
    code, out = run("check", str(HOTLINE))
    assert (code, out) == (0, "1 file(s): 0 error(s), 0 warning(s)\n")


def test_check_reports_errors_with_position_and_fails() -> None:
    code, out = run("check", str(CORPUS / "unknown_node.yaml"))
    assert code == 1
    assert out.splitlines() == [
        f"{CORPUS}/unknown_node.yaml:6:19: error: nodes.main.options.1: goto 'biling': no such node "
        "(did you mean 'billing'?)",
        f"{CORPUS}/unknown_node.yaml:7:3: error: nodes.billing: unreachable: no entry or goto leads here",
        "1 file(s): 2 error(s), 0 warning(s)",
    ]


def test_check_json_with_asterisk_resources(tmp_path: Path) -> None:
    sounds = tmp_path / "sounds" / "en"
    sounds.mkdir(parents=True)
    (sounds / "hello.gsm").write_bytes(b"\0" * 3300)  # 2 s of gsm
    queues = tmp_path / "queues.conf"
    queues.write_text("[general]\nstrategy=ringall\n[ivr-tpl](!)\n[ivr-billing](ivr-tpl)\n[ivr-generalq]\n[sales]\n")
    code, out = run("check", str(CORPUS / "missing_sound.yaml"), "--format", "json",
                    "--sounds-dir", str(tmp_path / "sounds"), "--queues-conf", str(queues))
    report = json.loads(out)
    assert code == 1 and report["errors"] == 4 and report["warnings"] == 0 and report["notes"] == []
    assert [(i["line"], i["column"], i["code"]) for i in report["issues"]] == [
        (1, 1, "unknown-queue"),  # the default human queue, general: this queues.conf has no ivr-general
        (4, 22, "missing-sound"), (6, 20, "unknown-queue"), (6, 36, "missing-sound")]
    assert report["issues"][0]["hint"] == report["issues"][2]["hint"] == "did you mean 'generalq'?"


def test_check_a_missing_path() -> None:
    assert run("check", "/nonexistent/menus")[0] == 2


def test_simulate_scripted_walk_to_a_self_served_balance() -> None:
    code, out = run("simulate", str(HOTLINE), "--keys", "1,2", "--data", "balance=42",
                    "--at", "2025-06-02T10:00:00+08:00")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("menu hotline (") and lines[0].endswith("local time 2025-06-02T10:00+08:00")
    assert "  caller presses 1" in lines
    assert "[after_balance] play «Your balance is» (en), <say number 42>, «yuan» (en)" in lines
    assert lines[-1] == "exit: self_served at node after_balance"


def test_simulate_timeouts_end_at_a_human_and_hours_pick_the_entry() -> None:
    code, out = run("simulate", str(HOTLINE), "--keys", "t,t,t", "--at", "2025-06-02T10:00:00+08:00")
    assert code == 0 and out.splitlines()[-1] == "exit: queue at node main (queue general)"
    code, out = run("simulate", str(HOTLINE), "--keys", "t,t,t", "--at", "2025-10-01T10:00:00+08:00")
    assert out.splitlines()[1].startswith("[after_hours] play «Our agents are not available now.")
    assert "offer a callback from queue general" in out


def test_simulate_in_mandarin_shows_the_text_and_the_balance_with_its_cents() -> None:
    code, out = run("simulate", str(HOTLINE), "--lang", "zh", "--keys", "1,2", "--data", "balance=42.50",
                    "--at", "2025-06-02T10:00:00+08:00")
    lines = out.splitlines()
    assert code == 0 and lines[1].startswith("[main] play «您好，欢迎致电。查询余额请按1，")
    assert "[after_balance] play «您的余额是» (zh), «四十二元五角» (zh)" in lines
    assert lines[-1] == "exit: self_served at node after_balance"
    assert run("simulate", str(HOTLINE), "--lang", "zh;rm", "--keys", "1")[0] == 2


def test_simulate_runs_out_of_keys_as_a_hang_up() -> None:
    code, out = run("simulate", str(HOTLINE), "--keys", "3", "--at", "2025-06-02T10:00:00+08:00")
    assert code == 0 and out.splitlines()[-1] == "  caller hangs up"


@pytest.mark.parametrize("keys", ["1;hangup", "1,abc", "1,2 3"])
def test_simulate_refuses_keys_that_are_not_phone_keys(keys: str) -> None:
    assert run("simulate", str(HOTLINE), "--keys", keys)[0] == 2


def test_simulate_reports_an_invalid_menu(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("simulate", str(CORPUS / "dead_end.yaml"), "--keys", "1")[0] == 1
    assert "dead end" in capsys.readouterr().err


def test_stats_table_names_the_policy() -> None:
    p = ms.CallPath("c", "hotline", "v", 0.0, (
        e.PathEvent(e.PathKind.ENTER, "main", 0.0),
        e.PathEvent(e.PathKind.EXIT, "main", 2.0, detail="self_served")))
    text = cli.format_stats(ms.aggregate("hotline", [p]), ms.ThirdFourthFirst())
    assert "self-service share 100% (target 78%)" in text
    assert "policy third-fourth-first: 3rd and 4th busiest first, then the two busiest" in text


async def test_reload_through_the_rest_api(tmp_path: Path) -> None:
    shutil.copy(HOTLINE, tmp_path / "hotline.yaml")
    registry = MenuRegistry(tmp_path)
    registry.reload()
    app = web.Application()
    app.add_routes(api_menus.routes(registry))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        code, out = await asyncio.to_thread(run, "reload", "--url", f"http://127.0.0.1:{port}")
        assert (code, out) == (0, f"reloaded: unchanged {registry.current.version}\n")
        (tmp_path / "hotline.yaml").write_text("entry: {open: nowhere}\nnodes: {}\n")
        code, out = await asyncio.to_thread(run, "reload", "--url", f"http://127.0.0.1:{port}")
        assert code == 1
        assert out.splitlines()[-1] == f"rejected: version {registry.current.version} stays live"
        assert "nodes: {} should be non-empty" in out
    finally:
        await runner.cleanup()


def test_reload_without_a_server() -> None:
    assert run("reload", "--url", f"http://127.0.0.1:{free_port()}")[0] == 2
