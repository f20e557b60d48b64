"""services/speech.py and services/messages.py with the real synthesizer (espeak-ng + sox).

Nothing is replaced: the renders are real processes; a missing espeak-ng or sox fails loudly.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ivrserver import config
from ivrserver.config import PromptSettings
from ivrserver.domain import menu as m
from ivrserver.domain import speech
from ivrserver.files import menus as mf
from ivrserver.services.menus import MenuRegistry
from ivrserver.services.messages import MessageService
from ivrserver.services.speech import SpeechRenderer, SynthesisError

REPO = Path(__file__).resolve().parents[1]
MENU = """\
language: zh
entry: {open: main}
nodes:
  main:
    prompts:
      - {text: {zh: "余额查询请按1", en: "For your balance press 1"}, name: welcome}
    options:
      "1": {goto: balance}
  balance:
    type: lookup
    field: balance
    say: money
    prompts: [{text: "您的余额是", lang: zh}]
    next: {goto: main}
"""


@pytest.fixture(autouse=True)
def _synthesizer_installed() -> None:
    for program in ("espeak-ng", "sox"):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is not installed: `make` installs the espeak-ng and sox packages")


def renderer(tmp_path: Path, **prompts: object) -> SpeechRenderer:
    settings = PromptSettings(**{"cache_dir": str(tmp_path / "cache"), **prompts})  # type: ignore[arg-type]
    return SpeechRenderer.from_settings(settings, str(tmp_path / "sounds") if (tmp_path / "sounds").is_dir()
                                        else None)


def files(r: SpeechRenderer) -> set[str]:
    return {p.name for p in r.cache_dir.glob("*.sln")}


def test_a_menu_is_rendered_once_then_only_what_changed(tmp_path: Path) -> None:
    r = renderer(tmp_path)
    menu, issues = mf.check_text(MENU, "m.yaml", "m", None, r)
    assert menu is not None and issues == []
    vocabulary = len(speech.ZH_VOCABULARY)
    assert len(r.rendered) == 3 + vocabulary == len(files(r))  # 3 texts + the Mandarin number words
    zh = menu.clips[("余额查询请按1", "zh")]
    assert zh == str((r.cache_dir / Path(zh).name).resolve()) and Path(zh + ".sln").stat().st_size > 8000
    info = subprocess.run(["sox", "--i", zh + ".sln"], capture_output=True, text=True, check=True).stdout
    assert "Sample Rate    : 8000" in info and "16-bit Signed Integer PCM" in info and "Channels       : 1" in info

    r.rendered.clear()
    assert mf.check_text(MENU, "m.yaml", "m", None, r)[0] is not None and r.rendered == []  # all cached
    assert mf.check_text(MENU.replace("您的余额是", "您的话费余额是"), "m.yaml", "m", None, r)[0] is not None
    assert len(r.rendered) == 1  # one text changed: one new file

    r.rendered.clear()
    Path(zh + ".sln").unlink()  # a deleted cache file is rendered again
    assert mf.check_text(MENU, "m.yaml", "m", None, r)[0] is not None
    assert r.rendered == [Path(zh).name] and Path(zh + ".sln").is_file()


def test_the_engine_streams_the_rendered_words_of_an_amount(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from ivrserver.domain import menu_engine as e
    r = renderer(tmp_path)
    menu, _ = mf.check_text(MENU, "m.yaml", "m", None, r)
    assert menu is not None
    run = e.MenuRun(menu)
    run.start(e.StartContext(now=datetime(2025, 6, 2, tzinfo=UTC)))
    run.feed(e.DigitsEntered("1"))
    play, _ = run.feed(e.LookupDone({"balance": "42.50"}))
    assert isinstance(play, e.Play)
    streamed = [p.file for p in play.prompts if isinstance(p, e.Spoken)]
    assert len(streamed) == 7 and all(Path(f + ".sln").is_file() for f in streamed)


def test_a_recorded_file_with_the_prompts_name_wins(tmp_path: Path) -> None:
    (tmp_path / "sounds" / "zh").mkdir(parents=True)
    (tmp_path / "sounds" / "zh" / "welcome.sln").write_bytes(b"\0" * 16000)
    r = renderer(tmp_path)
    assert r.cache_dir == tmp_path / "cache"
    menu, issues = mf.check_text(MENU, "m.yaml", "m", None, r)
    assert menu is not None and issues == []
    assert menu.clips[("余额查询请按1", "zh")] == "zh/welcome"  # relative to the sounds dir, as STREAM FILE takes it
    assert menu.clips[("For your balance press 1", "en")] != "en/welcome"  # none recorded in English


def test_a_cache_under_the_sounds_dir_is_named_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "sounds").mkdir()
    r = SpeechRenderer.from_settings(PromptSettings(), str(tmp_path / "sounds"))
    assert r.cache_dir == tmp_path / "sounds" / "ivrserver" and r.sound_for("tts-x") == "ivrserver/tts-x"
    r = SpeechRenderer.from_settings(PromptSettings(cache_dir="/srv/a", asterisk_dir="/var/lib/p/"), None)
    assert r.sound_for("tts-x") == "/var/lib/p/tts-x"


@pytest.mark.parametrize(("prompts", "code", "message", "hint"), [
    ({"voices": "en=en-us"}, "unknown-language", "main.prompts.0: no voice for language 'zh'", "voices come from"),
    ({"voices": "zh=nosuchvoice,en=en-us"}, "synthesis", "could not synthesize 'zh' text: synthesizer 'espeak-ng' "
                                                         "failed (exit 1)", "check the voice 'nosuchvoice'"),
    ({"synthesizer": "espeak-ng-missing -v {voice} -w {wav} -f {text_file}"}, "synthesizer",
     "the synthesizer espeak-ng-missing is not installed", "apt-get install espeak-ng sox"),
])
def test_check_errors_name_the_fix(tmp_path: Path, prompts: dict[str, str], code: str, message: str,
                                   hint: str) -> None:
    menu, issues = mf.check_text(MENU, "m.yaml", "m", None, renderer(tmp_path, **prompts))
    assert menu is None
    [issue] = [i for i in issues if message in i.message]
    assert issue.code == code and hint in issue.hint and issue.line == 6  # the prompt's line


def test_prompt_length_lint_uses_the_rendered_audio(tmp_path: Path) -> None:
    text = MENU.replace("language: zh\n", "language: zh\nlint: {max_prompt_seconds: 1}\n")
    menu, issues = mf.check_text(text, "m.yaml", "m", None, renderer(tmp_path))
    assert menu is not None
    lints = [i.message for i in issues if i.code == "prompt-length" and i.severity is m.Severity.WARNING]
    # The seconds are the rendered audio's (size / 16,000 B/s of 8 kHz .sln), rounded in the message.
    assert [lint.split(":")[0] for lint in lints] == ["nodes.main", "nodes.balance"]
    assert all(lint.endswith("(more than 1 s)") for lint in lints)


def test_a_failed_synthesis_keeps_the_live_version(tmp_path: Path) -> None:
    menus = tmp_path / "menus"
    menus.mkdir()
    (menus / "m.yaml").write_text(MENU)
    r = renderer(tmp_path)
    registry = MenuRegistry(menus, speech=r)
    assert registry.reload().ok
    live = registry.current
    (menus / "m.yaml").write_text(MENU.replace("您的余额是", "新文本"))
    broken = dataclasses.replace(r, synthesizer=dataclasses.replace(r.synthesizer, convert="false {wav} {out}"))
    registry.speech = broken
    result = registry.reload()
    assert not result.ok and result.errors[0].code == "synthesis" and registry.current is live


@pytest.mark.parametrize(("key", "value", "error"), [
    ("synthesizer", "espeak-ng -w {wav} {text}", "unknown placeholder {text}"),
    ("synthesizer", "espeak-ng -v {voice} -w {wav}", "must use {text_file}"),
    ("convert", "sox {wav}", "must use {out}"),
    ("convert", "sox '{wav}", "cannot be split"),
    ("voices", "zh=cmn;rm -rf", "expected language=voice pairs"),
    ("concurrency", 0, "must be 1..32"),
])
def test_settings_are_checked(key: str, value: object, error: str) -> None:
    with pytest.raises(config.ConfigError, match=error):
        config.from_mapping({"prompts": {key: value}})


async def test_messages_render_per_customer_values_cached_by_content(tmp_path: Path) -> None:
    messages = MessageService(renderer(tmp_path))
    template = "您的工单{case}已处理完毕：{result}"
    a = await messages.render(template, {"case": "1024", "result": "已修复"}, "zh")
    b = await messages.render(template, {"case": "1024", "result": "已修复"}, "zh")
    c = await messages.render(template, {"case": "1025", "result": "已修复"}, "zh")
    assert a == b and a.name != c.name and a.name.startswith("msg-") and a.seconds > 1
    assert a.text == "您的工单1024已处理完毕：已修复"
    assert messages.renderer.rendered == [a.name, c.name]  # the same content is rendered once
    with pytest.raises(speech.TextError, match="no placeholder named cse"):
        await messages.render(template, {"cse": "1", "result": "x"}, "zh")
    with pytest.raises(SynthesisError, match="no voice for language 'fr'"):
        await messages.render(template, {"case": "1", "result": "x"}, "fr")


async def test_many_requests_for_one_text_at_once_render_it_once(tmp_path: Path) -> None:
    """A resolve schedules hundreds of notices at once, all with one message: one synthesis."""
    import asyncio

    messages = MessageService(renderer(tmp_path))
    template = "The mobile data fault in Chaoyang is fixed."
    audio = await asyncio.gather(*(messages.render(template, {}, "en") for _ in range(20)),
                                 *(messages.render("朝阳的移动数据故障已修复。", {}, "zh") for _ in range(20)))
    assert len({a.name for a in audio}) == 2 and all(a.seconds > 1 for a in audio)
    assert sorted(messages.renderer.rendered) == sorted({a.name for a in audio})  # each once
    assert messages.renderer._inflight == {}
    r = renderer(tmp_path / "b")
    broken = MessageService(dataclasses.replace(
        r, synthesizer=dataclasses.replace(r.synthesizer, convert="false {wav} {out}")))
    failed = await asyncio.gather(*(broken.render("Fixed.", {}, "en") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(f, SynthesisError) for f in failed), failed  # one failed render reaches every waiter
    assert broken.renderer.rendered == [] and broken.renderer._inflight == {}


async def test_cleanup_removes_only_old_messages_no_call_references(tmp_path: Path) -> None:
    r = renderer(tmp_path)
    messages = MessageService(r)
    kept = await messages.render("提醒{x}", {"x": "1"}, "zh")
    gone = await messages.render("提醒{x}", {"x": "2"}, "zh")
    young = await messages.render("提醒{x}", {"x": "3"}, "zh")
    mf.check_text(MENU, "m.yaml", "m", None, r)  # menu clips share the directory
    old = time.time() - 7200
    for audio in (kept, gone):
        os.utime(r.path_for(audio.name), (old, old))
    for clip in r.cache_dir.glob("tts-*"):
        os.utime(clip, (old, old))
    tts = {p.name for p in r.cache_dir.glob("tts-*")}
    assert await messages.cleanup({kept.name}) == [gone.name]
    assert not r.path_for(gone.name).exists()
    assert r.path_for(kept.name).exists() and r.path_for(young.name).exists()  # referenced; rendered just now
    assert {p.name for p in r.cache_dir.glob("tts-*")} == tts  # menu clips are never touched
    assert await messages.cleanup(set(), grace=0) == sorted([kept.name, young.name])
