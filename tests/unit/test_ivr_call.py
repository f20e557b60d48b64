"""services/ivr_call.py over a small in-test fake channel.

The hotline's text prompts are rendered by the real synthesizer (espeak-ng + sox) into a
temporary cache, so the files streamed are the clips a real call streams.

Why a fake here: the engine is tested pure (test_menu_engine.py); what only this service does —
turning Collect into STREAM FILE/WAIT FOR DIGIT or GET DATA, saying looked-up values, the dialplan
contract variables, and the fallbacks on hang-up and AGI errors — needs a channel, and the real
one needs Asterisk (the SIPp integration tests cover that end to end). The fake only replays what
a caller does; it has no logic of ours.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ivrserver.config import PromptSettings
from ivrserver.domain import menu_engine as e
from ivrserver.domain.menu import TextPrompt
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import CallerSnapshot, Customer
from ivrserver.pbx.fastagi import AgiError, AgiHangup
from ivrserver.services.ivr_call import run_menu
from ivrserver.services.menus import MenuRegistry, MenuVersion
from ivrserver.services.speech import SpeechRenderer

HOTLINE = Path(__file__).resolve().parents[2] / "menus" / "hotline.yaml"
MONDAY_10 = datetime.fromisoformat("2025-06-02T10:00:00+08:00").timestamp()
ALL = "0123456789*#"


class Barge(str):
    """A key pressed while a prompt plays."""


class FakeChannel:
    """Replays a caller: each input command takes the next scripted item."""

    def __init__(self, *script: Any, fail_on: str = "") -> None:
        self.script = list(script)
        self.calls: list[tuple[Any, ...]] = []
        self.call_id = "call-1"
        self.hungup = False
        self.fail_on = fail_on

    def _next(self) -> Any:
        if not self.script:
            self.hungup = True
            raise AgiHangup("caller hung up")
        return self.script.pop(0)

    async def stream_file(self, file: str, escape_digits: str = "") -> str | None:
        self.calls.append(("stream", file, escape_digits))
        if file == self.fail_on:
            raise AgiError("STREAM FILE failed (result=-1)")
        if escape_digits and self.script and isinstance(self.script[0], Barge):
            return str(self.script.pop(0))
        return None

    async def get_data(self, file: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        self.calls.append(("get_data", file, timeout_ms, max_digits))
        digits = self._next()
        return digits, digits == ""

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        self.calls.append(("wait", timeout_ms))
        return self._next()

    async def say_number(self, n: int, escape_digits: str = "") -> str | None:
        self.calls.append(("say_number", n))
        return None

    async def say_digits(self, digits: str, escape_digits: str = "") -> str | None:
        self.calls.append(("say_digits", digits))
        return None

    async def say_date(self, epoch: int, escape_digits: str = "") -> str | None:
        self.calls.append(("say_date", epoch))
        return None

    async def set_variable(self, name: str, value: str) -> None:
        self.calls.append(("set", name, value))

    async def set_language(self, code: str) -> None:
        self.calls.append(("language", code))


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.paths: list[CallPath] = []
        self.fail = fail

    async def record(self, path: CallPath) -> None:
        if self.fail:
            raise ConnectionError("redis down")
        self.paths.append(path)


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> MenuVersion:
    d = tmp_path_factory.mktemp("menus")
    shutil.copy(HOTLINE, d / "hotline.yaml")
    speech = SpeechRenderer.from_settings(PromptSettings(cache_dir=str(d / "cache")), None)
    reg = MenuRegistry(d, speech=speech)
    assert reg.reload().ok
    return reg.current


def said(version: MenuVersion, node: str, lang: str = "en", index: int = 0) -> str:
    """The clip streamed for a node's text prompt in `lang`."""
    menu = version.menu("hotline")
    prompt = menu.nodes[node].prompts[index]
    assert isinstance(prompt, TextPrompt)
    return menu.clips[prompt.variant(lang, lang)[::-1]]


def word(version: MenuVersion, text: str, lang: str = "en") -> str:
    """The clip of a text or vocabulary word (handler texts, 'yuan', 四)."""
    return version.menu("hotline").clips[(text, lang)]


CUSTOMER = Customer(id="c42", name="Li", phones=("+8613800000000",), attributes={"balance": "42.50"})
KNOWN = CallerSnapshot(number="+8613800000000", customer=CUSTOMER)
UNKNOWN = CallerSnapshot(number="+8613900000000")


def stream(*files: str, escape: str = ALL) -> list[tuple[str, str, str]]:
    return [("stream", f, escape) for f in files]


def sets(**values: str) -> list[tuple[str, str, str]]:
    return [("set", k, v) for k, v in values.items()]


async def test_balance_self_service_for_a_known_caller(version: MenuVersion) -> None:
    ch, rec = FakeChannel("1", "2"), Recorder()
    outcome = await run_menu(ch, version, KNOWN, rec, MONDAY_10, menu="hotline", clock=lambda: MONDAY_10 + 1)
    v = version
    assert ch.calls == [
        *stream(said(v, "main")), ("wait", 5000),
        ("stream", said(v, "balance"), ""), ("say_number", 42), ("stream", word(v, "yuan"), ""),
        ("stream", word(v, "and"), ""), ("say_number", 50), ("stream", word(v, "fen"), ""),
        *stream(said(v, "after_balance")), ("wait", 5000),
        ("stream", word(v, "Thank you for calling. Goodbye."), ""),
        *sets(IVR_ACTION="hangup", IVR_REASON="ivr:self_served"),
    ]
    assert outcome.exit == e.Exit(e.ExitReason.SELF_SERVED, "after_balance")
    assert outcome.customer_id == "c42" and outcome.version == version.version and outcome.error == ""
    (recorded,) = rec.paths
    assert (recorded.call_id, recorded.menu, recorded.started_at) == ("call-1", "hotline", MONDAY_10)
    assert recorded.events == outcome.path and outcome.path[-1].kind is e.PathKind.EXIT


async def test_a_key_during_the_prompts_chooses_and_queue_variables_are_set(version: MenuVersion) -> None:
    ch = FakeChannel(Barge("3"), Barge("1"))
    outcome = await run_menu(ch, version, KNOWN, Recorder(), MONDAY_10, menu="hotline")
    assert ch.calls == [
        ("stream", said(version, "main"), ALL),  # '3' pressed here: no more prompts, no wait
        ("stream", said(version, "faults"), ALL),  # faults menu; '1' pressed during its prompt
        ("stream", word(version, "One moment please."), ""),
        *sets(IVR_ACTION="queue", IVR_QUEUE="faults", IVR_PRIORITY="2", IVR_REASON="ivr:faults:1"),
    ]
    assert outcome.exit is not None and outcome.exit.queue == "faults"


async def test_unknown_caller_identifies_with_account_and_pin(version: MenuVersion) -> None:
    asked: list[tuple[str, str]] = []

    async def identify(account: str, pin: str) -> Customer | None:
        asked.append((account, pin))
        return CUSTOMER

    ch = FakeChannel("1", "123456", "7890", "2")
    outcome = await run_menu(ch, version, UNKNOWN, Recorder(), MONDAY_10, menu="hotline", identify=identify)
    assert asked == [("123456", "7890")]
    assert ("get_data", said(version, "account"), 5000, 12) in ch.calls
    assert ("get_data", said(version, "pin"), 5000, 8) in ch.calls
    assert ("say_number", 42) in ch.calls
    assert outcome.customer_id == "c42" and outcome.exit == e.Exit(e.ExitReason.SELF_SERVED, "after_balance")
    details = [p.detail for p in outcome.path if p.kind is e.PathKind.COLLECTED]
    assert details == ["account:6", "pin:4"]


@pytest.mark.parametrize(("result", "queue", "priority"), [(None, "billing", "2"), ("locked", "billing", "3")])
async def test_identification_failed_or_locked(version: MenuVersion, result: Any, queue: str,
                                               priority: str) -> None:
    async def identify(account: str, pin: str) -> Any:
        return result

    ch = FakeChannel("1", "123456", "7890")
    await run_menu(ch, version, UNKNOWN, Recorder(), MONDAY_10, menu="hotline", identify=identify)
    assert ch.calls[-4:-2] == [("set", "IVR_ACTION", "queue"), ("set", "IVR_QUEUE", queue)]
    assert ch.calls[-2] == ("set", "IVR_PRIORITY", priority)


async def test_caller_hangs_up(version: MenuVersion) -> None:
    ch, rec = FakeChannel("3"), Recorder()
    outcome = await run_menu(ch, version, KNOWN, rec, MONDAY_10, menu="hotline")
    assert outcome.exit == e.Exit(e.ExitReason.CALLER_HANGUP, "faults")
    assert rec.paths[0].events[-1].detail == "caller_hangup"
    assert not [c for c in ch.calls if c[0] == "set"]


async def test_an_agi_error_sends_the_caller_to_the_human_queue(version: MenuVersion) -> None:
    ch, rec = FakeChannel("1", fail_on=said(version, "main")), Recorder()
    outcome = await run_menu(ch, version, KNOWN, rec, MONDAY_10, menu="hotline")
    assert outcome.exit is None and outcome.error.startswith("AgiError")
    assert ch.calls[-4:] == sets(IVR_ACTION="queue", IVR_QUEUE="general", IVR_PRIORITY="0",
                                 IVR_REASON="ivr:error:main")
    assert len(rec.paths) == 1


async def test_a_failing_recorder_does_not_cost_the_call(version: MenuVersion) -> None:
    ch = FakeChannel("4", "1")
    outcome = await run_menu(ch, version, KNOWN, Recorder(fail=True), MONDAY_10, menu="hotline")
    assert outcome.exit is not None and outcome.exit.queue == "sales"
    assert ("set", "IVR_QUEUE", "sales") in ch.calls


async def test_callback_offer_and_announcement(version: MenuVersion) -> None:
    offered: list[e.OfferCallback] = []

    async def offer(cmd: e.OfferCallback, snapshot: CallerSnapshot, customer_id: str | None) -> bool:
        offered.append(cmd)
        return customer_id == "c42"

    ch = FakeChannel("3", "2")
    outcome = await run_menu(ch, version, KNOWN, Recorder(), MONDAY_10, menu="hotline",
                             announcement=("ss-noservice",), offer_callback=offer)
    assert ch.calls[0] == ("stream", "ss-noservice", ALL)
    assert offered == [e.OfferCallback("faults", 2, "ivr:faults:2")]
    assert outcome.exit == e.Exit(e.ExitReason.CALLBACK, "faults", queue="faults", priority=2)
    assert ch.calls[-2:] == sets(IVR_ACTION="hangup", IVR_REASON="ivr:callback")


async def test_in_mandarin_the_balance_is_read_with_its_cents_from_rendered_words(version: MenuVersion) -> None:
    ch = FakeChannel("9", "2", "1", "2")
    outcome = await run_menu(ch, version, KNOWN, Recorder(), MONDAY_10, menu="hotline")
    v = version
    assert ("language", "zh") in ch.calls
    played = [c[1] for c in ch.calls if c[0] == "stream"]
    balance = played.index(said(v, "balance", "zh"))
    assert played[balance + 1:balance + 7] == [word(v, w, "zh") for w in "四十二元五角"]
    assert not [c for c in ch.calls if c[0].startswith("say_")]  # no Asterisk SAY: it has no Mandarin digits
    assert outcome.language == "zh" and outcome.exit == e.Exit(e.ExitReason.SELF_SERVED, "after_balance")


async def test_a_text_prompt_without_rendered_audio_is_skipped_not_streamed(tmp_path: Path) -> None:
    shutil.copy(HOTLINE, tmp_path / "hotline.yaml")
    reg = MenuRegistry(tmp_path)  # no synthesizer: text prompts load without audio
    assert reg.reload().ok
    ch = FakeChannel("5")
    await run_menu(ch, reg.current, KNOWN, Recorder(), MONDAY_10, menu="hotline")
    assert ch.calls[0] == ("wait", 5000) and not [c for c in ch.calls if c[0] == "stream" and not c[1]]


class _Request:
    def __init__(self, language: str) -> None:
        self.language = language
        self.script = "hotline"


@pytest.mark.parametrize(("channel_language", "menu_language", "first"), [
    ("en", "zh", ("language", "zh")),   # a Mandarin hotline on Asterisk's default channel language
    ("zh", "zh", None),                 # already aligned: no extra AGI round trip
    ("", "zh", None),                   # no agi_language header: leave the channel alone
])
async def test_the_channel_starts_in_the_menus_language(tmp_path: Path, channel_language: str,
                                                         menu_language: str, first: tuple[str, str] | None) -> None:
    (tmp_path / "hotline.yaml").write_text(HOTLINE.read_text(encoding="utf-8").replace(
        "\nlanguage: en", f"\nlanguage: {menu_language}", 1), encoding="utf-8")
    reg = MenuRegistry(tmp_path)
    assert reg.reload().ok, reg.reload().errors
    assert reg.current.menu("hotline").language == menu_language
    ch = FakeChannel("5")
    ch.request = _Request(channel_language)  # type: ignore[attr-defined]
    await run_menu(ch, reg.current, KNOWN, Recorder(), MONDAY_10, menu="hotline")
    languages = [c for c in ch.calls if c[0] == "language"]
    if first is None:
        assert languages == []
    else:
        assert ch.calls[0] == first and ("set", "IVR_LANGUAGE", menu_language) in ch.calls
