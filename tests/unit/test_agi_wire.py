"""AGI wire format: header parsing, safe argument encoding, reply parsing (lines as res_agi.c writes them)."""

import pytest

from ivrserver.pbx import agi_wire
from ivrserver.pbx.agi_wire import AgiEncodingError, AgiProtocolError


@pytest.mark.parametrize(("value", "encoded"), [
    ("hello", '"hello"'),
    ("", '""'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ('\\"', '"\\\\\\""'),
    ("José 1860", '"José 1860"'),
])
def test_quote_keeps_one_argument(value: str, encoded: str) -> None:
    assert agi_wire.quote(value) == encoded


@pytest.mark.parametrize("hostile", ["a\nHANGUP", "a\rb", "nul\x00byte", "x\n", "\r\n"])
def test_quote_refuses_line_breaks_and_nul(hostile: str) -> None:
    with pytest.raises(AgiEncodingError):
        agi_wire.quote(hostile)


def test_command_line_is_single_line_with_quoted_caller_data() -> None:
    caller_name = 'Eve" HANGUP "x'
    line = agi_wire.command("SET VARIABLE", "CALLER", caller_name)
    assert line == b'SET VARIABLE "CALLER" "Eve\\" HANGUP \\"x"\n'
    assert line.count(b"\n") == 1


def test_command_refuses_overlong_line_and_bad_verb() -> None:
    with pytest.raises(AgiEncodingError):
        agi_wire.command("VERBOSE", "x" * 9000)
    with pytest.raises(AgiEncodingError):
        agi_wire.command("exec\nHANGUP", "x")


@pytest.mark.parametrize(("name", "ok"), [
    ("IVR_ACTION", True), ("__IVR_CONTEXT_ID", True), ("CDR(userfield)", False), ("A B", False),
    ("${EVIL}", False), ("", False), ("1ABC", False),
])
def test_variable_names(name: str, ok: bool) -> None:
    if ok:
        assert agi_wire.check_var_name(name) == name
    else:
        with pytest.raises(AgiEncodingError):
            agi_wire.check_var_name(name)


@pytest.mark.parametrize(("name", "ok"), [
    ("vm-press", True), ("digits/1", True), ("custom/en/welcome", True), ("../../etc/passwd", False),
    ("/var/cache/ivrserver/prompts/tts-0a1b", True), ("/../etc/passwd", False), ("//etc", False),
    ("/", False), ("a b", False), ("a;b", False), ("/a\nVERBOSE x", False),
])
def test_sound_names(name: str, ok: bool) -> None:
    if ok:
        assert agi_wire.check_sound(name) == name
    else:
        with pytest.raises(AgiEncodingError):
            agi_wire.check_sound(name)


@pytest.mark.parametrize(("line", "code", "result", "data", "extra"), [
    ("200 result=0 endpos=12032", 200, "0", None, {"endpos": "12032"}),
    ("200 result=49 endpos=8000", 200, "49", None, {"endpos": "8000"}),
    ("200 result=123 (timeout)", 200, "123", "timeout", {}),
    ("200 result= (timeout)", 200, "", "timeout", {}),
    ("200 result=", 200, "", None, {}),
    ("200 result=-1", 200, "-1", None, {}),
    ("200 result=1 (hello world)", 200, "1", "hello world", {}),
    ("200 result=1 (a) b (c))", 200, "1", "a) b (c)", {}),
    ("200 result=0", 200, "0", None, {}),
    ("510 Invalid or unknown command", 510, "", None, {}),
    ("511 Command Not Permitted on a dead channel or intercept routine", 511, "", None, {}),
])
def test_parse_reply(line: str, code: int, result: str, data: str | None, extra: dict[str, str]) -> None:
    reply = agi_wire.parse_reply_line(line)
    assert (reply.code, reply.result, reply.data, reply.extra) == (code, result, data, extra)


def test_timeout_flag() -> None:
    assert agi_wire.parse_reply_line("200 result=12 (timeout)").timed_out
    assert not agi_wire.parse_reply_line("200 result=12").timed_out


@pytest.mark.parametrize("line", ["HELLO", "2000 result=1", "200 nothing", "200 result=1 (unbalanced"])
def test_parse_reply_rejects_garbage(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        agi_wire.parse_reply_line(line)


def test_headers_and_request() -> None:
    headers = dict(agi_wire.parse_header_line(line) for line in [
        "agi_network: yes",
        "agi_network_script: hotline?lang=fr&menu=billing&lang=de",
        "agi_request: agi://127.0.0.1:4573/hotline?lang=fr&menu=billing&lang=de",
        "agi_callerid: 15550001",
        "agi_calleridname: José: \"the boss\"",
        "agi_uniqueid: 1732330000.12",
        "agi_arg_1: first",
        "agi_arg_2: second",
    ])
    request = agi_wire.build_request(headers)
    assert request.script == "hotline"
    assert request.query == {"lang": "fr", "menu": "billing"}
    assert request.args == ("first", "second")
    assert request.callerid == "15550001"
    assert request.calleridname == 'José: "the boss"'
    assert request.uniqueid == "1732330000.12"


@pytest.mark.parametrize("line", ["callerid: 1", "agi_Caller: x", "nonsense", "agi_: x"])
def test_header_line_rejects_non_agi(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        agi_wire.parse_header_line(line)
