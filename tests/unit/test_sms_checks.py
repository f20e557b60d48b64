"""What may be sent as an SMS (domain/sms.py) and the MessageSend destination (pbx/messaging.py)."""

from __future__ import annotations

import pytest

from ivrserver.domain import sms
from ivrserver.pbx.messaging import destination_for


@pytest.mark.parametrize("number", ["+8613812345678", "13812345678", "1860", " 5551234 "])
def test_numbers_accepted(number: str) -> None:
    assert sms.check_number(number) == number.strip()


@pytest.mark.parametrize("number", [
    "", "12", "+", "138 1234 5678", "1381234567@evil", "138;user=phone", "138>x", "138\r\nX: y",
    "+" + "1" * 21, "١٢٣٤٥", None, 13812345678,
])
def test_numbers_refused(number: object) -> None:
    with pytest.raises(sms.SmsInvalid) as err:
        sms.check_number(number)
    assert err.value.why == "invalid_number"


@pytest.mark.parametrize("text", [
    "您的卡将于2027年1月31日到期。", "Card expires 31 January 2027.", "x" * sms.MAX_CHARS,
    "中" * sms.MAX_CHARS,  # 960 bytes of UTF-8
    "Emoji 👍 and a zero-width joiner 👩\u200d💻",
])
def test_texts_accepted(text: str) -> None:
    assert sms.check_text(text) == text


@pytest.mark.parametrize("text", [
    "", "   ", "x" * (sms.MAX_CHARS + 1), "line\nbreak", "tab\there", "nul\x00", "del\x7f", "esc\x1b[31m",
    "bidi \u202eevil", "isolate \u2067x", "lone surrogate \ud800", "unassigned \U000e0080x", "private \ue000",
    None, b"bytes",
])
def test_texts_refused(text: object) -> None:
    with pytest.raises(sms.SmsInvalid) as err:
        sms.check_text(text)
    assert err.value.why == "invalid_text"
    if isinstance(text, str) and text.strip():
        assert text.strip() not in str(err.value) or len(text.strip()) < 3  # the text is never echoed


def test_the_byte_limit() -> None:
    with pytest.raises(sms.SmsInvalid):
        sms.check_text("𠀀" * 300)  # 300 characters, 1,200 bytes


@pytest.mark.parametrize(("template", "number", "expected"), [
    ("pjsip:customers/sip:{number}@127.0.0.1:5090", "+8613812345678",
     "pjsip:customers/sip:+8613812345678@127.0.0.1:5090"),
    ("pjsip:trunk/sip:{number}@sms.example.net", "13812345678", "pjsip:trunk/sip:13812345678@sms.example.net"),
])
def test_destination(template: str, number: str, expected: str) -> None:
    assert destination_for(template, number) == expected


def test_destination_refuses_a_number_that_would_change_the_uri() -> None:
    with pytest.raises(sms.SmsInvalid):
        destination_for("pjsip:customers/sip:{number}@h", "1@evil.example;transport=tcp")
