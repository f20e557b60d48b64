"""domain/speech.py and text prompts in menus: tables, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ivrserver.domain import menu_engine as e
from ivrserver.domain import speech
from ivrserver.domain.menu import TextPrompt
from ivrserver.files.menus import check_text


@pytest.mark.parametrize(("n", "words"), [
    (0, "零"), (1, "一"), (10, "十"), (12, "十二"), (20, "二十"), (42, "四十二"), (105, "一百零五"),
    (110, "一百一十"), (1005, "一千零五"), (1050, "一千零五十"), (10005, "一万零五"), (110000, "十一万"),
    (100000005, "一亿零五"), (123456789, "一亿二千三百四十五万六千七百八十九"), (-3, "负三"),
])
def test_zh_numbers(n: int, words: str) -> None:
    assert speech.zh_number(n) == words


@pytest.mark.parametrize(("amount", "words"), [
    ("42.50", "四十二元五角"), ("42.5", "四十二元五角"), ("42.05", "四十二元零五分"), ("42.55", "四十二元五角五分"),
    ("42", "四十二元整"), ("42.00", "四十二元整"), ("0.50", "五角"), ("0.05", "五分"), ("0", "零元"),
    ("-42.50", "负四十二元五角"), ("-0", "零元"), ("10.1", "十元一角"),
])
def test_zh_money_in_yuan_jiao_fen(amount: str, words: str) -> None:
    assert speech.zh_money(amount) == words


def test_zh_digits_and_dates() -> None:
    assert speech.zh_digits("13800") == "幺三八零零"
    assert speech.zh_date(int(datetime(2025, 10, 1, tzinfo=UTC).timestamp())) == "二零二五年十月一日"


@pytest.mark.parametrize(("kind", "value", "lang", "parts"), [
    ("money", "42.50", "zh", (speech.Words(tuple("四十二元五角")),)),
    ("number", "42", "zh", (speech.Words(tuple("四十二")),)),
    ("number", "42", "zh_CN", (speech.Words(tuple("四十二")),)),
    ("number", "42", "en", (speech.AsteriskSay("number", "42"),)),
    ("digits", "007", "en", (speech.AsteriskSay("digits", "007"),)),
    ("money", "42.50", "en", (speech.AsteriskSay("number", "42"), speech.Words(("yuan",)), speech.Words(("and",)),
                              speech.AsteriskSay("number", "50"), speech.Words(("fen",)))),
    ("money", "42", "en", (speech.AsteriskSay("number", "42"), speech.Words(("yuan",)))),
    ("money", "-0.5", "en", (speech.Words(("minus",)), speech.AsteriskSay("number", "0"), speech.Words(("yuan",)),
                             speech.Words(("and",)), speech.AsteriskSay("number", "50"), speech.Words(("fen",)))),
])
def test_say_parts(kind: str, value: str, lang: str, parts: tuple[speech.SpokenPart, ...]) -> None:
    assert speech.say_parts(kind, value, lang) == parts


@pytest.mark.parametrize(("kind", "value", "ok"), [
    ("money", "42.50", True), ("money", "42.505", False), ("money", "4,2", False), ("money", "1e5", False),
    ("money", "٤٢", False), ("number", "-42", True), ("number", "4.2", False), ("digits", "12#", False),
    ("number", "9" * 19, False),
])
def test_sayable(kind: str, value: str, ok: bool) -> None:
    assert speech.sayable(kind, value) is ok


def test_every_word_a_number_can_need_is_in_the_vocabulary() -> None:
    vocab = set(speech.vocabulary("zh", {"money"}))
    for value in ("0", "10.05", "-987654321.99", "100000005"):
        (words,) = speech.say_parts("money", value, "zh")
        assert isinstance(words, speech.Words) and set(words.words) <= vocab
    assert set(speech.vocabulary("en", {"money"})) == {"minus", "yuan", "and", "fen"}
    assert speech.vocabulary("en", {"number"}) == () and speech.vocabulary("zh", set()) == ()


def test_clip_names_change_with_every_input_and_only_then() -> None:
    base = speech.clip_name("余额查询请按1", "zh", "cmn", "espeak")
    assert base == speech.clip_name("余额查询请按1", "zh", "cmn", "espeak")
    assert base.startswith("tts-") and len(base) == 28
    text = "余额查询请按1"
    others = {speech.clip_name("余额查询请按2", "zh", "cmn", "espeak"), speech.clip_name(text, "en", "cmn", "espeak"),
              speech.clip_name(text, "zh", "yue", "espeak"), speech.clip_name(text, "zh", "cmn", "other"),
              speech.clip_name(text, "zh", "cmn", "espeak", prefix="msg-")}
    assert base not in others and len(others) == 5


@pytest.mark.parametrize(("text", "error"), [
    ("", "is empty"), ("   ", "is empty"), ("a\x00b", r"U\+0000"), ("a\u202eb", r"U\+202E"),
    ("x" * 1001, "longer than"), (42, "must be text"),
])
def test_check_text_refuses(text: object, error: str) -> None:
    with pytest.raises(speech.TextError, match=error):
        speech.check_text(text)


def test_message_template_renders_per_customer_values() -> None:
    t = speech.MessageTemplate.parse("您的工单{case}已处理完毕：{result}")
    assert t.fields == ("case", "result")
    assert t.render({"case": 1024, "result": "已修复"}) == "您的工单1024已处理完毕：已修复"
    assert speech.MessageTemplate.parse("{{literal}} {a}").render({"a": "x"}) == "{literal} x"
    # values are not templates
    assert t.render({"case": "{result}", "result": "ok"}) == "您的工单{result}已处理完毕：ok"


@pytest.mark.parametrize(("template", "values", "error"), [
    ("工单{case}", {"case": "1", "cas": "2"}, "no placeholder named cas"),
    ("工单{case}", {}, "missing value for case"),
    ("工单{case}", {"case": "a\x1b[31m"}, "control"),
    ("工单{case}", {"case": "x" * 201}, "longer than 200"),
    ("工单{case}", {"case": "  "}, "empty"),
    ("工单{case}", {"case": True}, "text or a whole number"),
    ("工单{case.id}", {}, "not a plain name"),
    ("工单{0}", {}, "not a plain name"),
    ("工单{case!r}", {}, "not a plain name"),
    ("工单{case:>9}", {}, "not a plain name"),
    ("工单{case", {}, "unbalanced"),
    ("", {}, "empty"),
])
def test_message_template_errors(template: str, values: dict[str, object], error: str) -> None:
    with pytest.raises(speech.TextError, match=error):
        speech.MessageTemplate.parse(template).render(values)


MENU = """
language: en
entry: {open: main}
nodes:
  main:
    prompts:
      - {text: {en: "For your balance press 1", zh: "余额查询请按1"}, name: welcome}
      - {text: "只有中文", lang: zh}
    options:
      "1": {goto: balance}
      "9": {language: zh, goto: main}
  balance:
    type: lookup
    field: balance
    say: money
    prompts: [{text: {en: "Your balance is", zh: "您的余额是"}}]
    next: {goto: main}
"""


def test_text_prompts_are_built_with_their_languages_and_name() -> None:
    menu, issues = check_text(MENU, "m.yaml", "m")
    assert menu is not None and issues == []
    assert menu.nodes["main"].prompts == (
        TextPrompt((("en", "For your balance press 1"), ("zh", "余额查询请按1")), "welcome"),
        TextPrompt((("zh", "只有中文"),)))


def test_the_engine_speaks_the_calls_language_and_switches_with_the_language_key() -> None:
    menu, _ = check_text(MENU, "m.yaml", "m")
    assert menu is not None
    run = e.MenuRun(menu)
    (collect,) = run.start(e.StartContext(now=datetime(2025, 6, 2, tzinfo=UTC)))
    assert isinstance(collect, e.Collect)
    assert collect.prompts == (e.Spoken("For your balance press 1", "en"), e.Spoken("只有中文", "zh"))
    assert run.feed(e.DigitsEntered("1")) == [e.Lookup(("balance",))]
    play, _ = run.feed(e.LookupDone({"balance": "42.50"}))
    assert isinstance(play, e.Play) and play.prompts == (
        e.Spoken("Your balance is", "en"), e.Say(e.SayKind.NUMBER, "42"), e.Spoken("yuan", "en"),
        e.Spoken("and", "en"), e.Say(e.SayKind.NUMBER, "50"), e.Spoken("fen", "en"))
    language, collect = run.feed(e.DigitsEntered("9"))
    assert language == e.SetLanguage("zh") and isinstance(collect, e.Collect)
    assert collect.prompts[0] == e.Spoken("余额查询请按1", "zh")
    run.feed(e.DigitsEntered("1"))
    play, _ = run.feed(e.LookupDone({"balance": "42.05"}))
    assert isinstance(play, e.Play)
    assert play.prompts == (e.Spoken("您的余额是", "zh"), *(e.Spoken(w, "zh") for w in "四十二元零五分"))


def test_rendered_clips_are_what_the_engine_streams() -> None:
    menu, _ = check_text(MENU, "m.yaml", "m")
    assert menu is not None
    import dataclasses
    menu = dataclasses.replace(menu, clips={("For your balance press 1", "en"): "ivrserver/tts-1"})
    (collect,) = e.MenuRun(menu).start(e.StartContext(now=datetime(2025, 6, 2, tzinfo=UTC)))
    assert isinstance(collect, e.Collect) and collect.prompts[0].file == "ivrserver/tts-1"  # type: ignore[union-attr]


def test_a_bad_amount_is_never_said() -> None:
    menu, _ = check_text(MENU, "m.yaml", "m")
    assert menu is not None
    run = e.MenuRun(menu)
    run.start(e.StartContext(now=datetime(2025, 6, 2, tzinfo=UTC)))
    run.feed(e.DigitsEntered("1"))
    out = run.feed(e.LookupDone({"balance": "42.5.0"}))
    assert not any(isinstance(c, e.Play) for c in out)  # missing → the human queue


@pytest.mark.parametrize(("prompt", "expected"), [
    ('{text: "", lang: zh}', "5:14: error: nodes.main.prompts.0.text: text is empty"),
    ('{text: "  ", lang: zh}', "5:14: error: nodes.main.prompts.0.text: text is empty"),
    ('{text: {zh: ""}}', "5:19: error: nodes.main.prompts.0.text.zh: text is empty"),
    ('{text: "你好"}', "5:7: error: nodes.main.prompts.0: a text prompt needs 'lang' (e.g. lang: zh) "
                     "(or give one text per language: text: {zh: ..., en: ...})"),
    ('{text: {zh: "你好"}, lang: zh}', "5:32: error: nodes.main.prompts.0: 'lang' goes with a single text; "
                                     "per-language texts are keyed by language already"),
    ('{text: "x", lang: klingon}', "5:25: error: nodes.main.prompts.0.lang: 'klingon' is not valid "
                                  "(a language code such as 'zh' or 'en' (a key of prompts.voices))"),
    ('{text: "x", lang: zh, voice: cmn}', "5:29: error: nodes.main.prompts.0.voice: unknown key 'voice' "
                                          "(allowed: lang, name, text)"),
    ('{text: "x", lang: zh, name: "../x"}', "5:35: error: nodes.main.prompts.0.name: '../x' is not valid "
                                            "(a recorded sound of this name in the call language's sounds "
                                            "directory plays instead of the text)"),
    ('{say: money, var: amount}', None),
])
def test_text_prompt_errors_point_at_the_text(prompt: str, expected: str | None) -> None:
    text = ("entry: {open: main}\nnodes:\n  main:\n    prompts:\n"
            f"    - {prompt}\n    options: {{'1': {{goto: amount}}}}\n"
            "  amount: {type: collect, variable: amount, next: {hangup: true}}\n")
    menu, issues = check_text(text, "m.yaml", "m")
    if expected is None:
        assert menu is not None and issues == []
        return
    assert [i.format().removeprefix("m.yaml:") for i in issues][:1] == [expected]
