from __future__ import annotations

import pytest

from ivrserver.domain import phone


@pytest.mark.parametrize(("raw", "country", "expected"), [
    ("15550001", "", "15550001"),
    (" 555-000 1234 ", "", "5550001234"),
    ("(555) 000.1234", "", "5550001234"),
    ("+49 30 1234567", "", "+49301234567"),
    ("0049 (30) 1234-567", "", "+49301234567"),
    ("030 1234567", "49", "+49301234567"),
    ("030 1234567", "", "0301234567"),          # no default country: national form kept
    ("+1 555 0001", "49", "+15550001"),         # explicit international wins over the default
    ("15550001", "49", "15550001"),             # no trunk prefix: local number kept
    ("1001", "", "1001"),                       # extension
    ("+123456789012345", "", "+123456789012345"),  # 15 digits: the E.164 maximum
])
def test_normalise(raw: str, country: str, expected: str) -> None:
    assert phone.normalise(raw, default_country=country) == expected


@pytest.mark.parametrize("raw", [
    "", "   ", "+", "00", "abc", "555-CALL-NOW", "1234\x00", "12;34", "12\n34", "1' OR '1'='1",
    "١٢٣٤٥",                 # Arabic-Indic digits are not ASCII digits
    "１２３４",               # full-width digits
    "+0123456",              # country codes never start with 0
    "1" * 16,                # more than 15 digits
    "1",                     # too short
    "+49+30",
    "5" * 100,               # overlong raw input
    "sip:1234@example.com",
    "*99#",
])
def test_normalise_rejects_hostile_or_malformed(raw: str) -> None:
    with pytest.raises(phone.InvalidPhone):
        phone.normalise(raw)


def test_normalise_error_does_not_echo_input() -> None:
    with pytest.raises(phone.InvalidPhone) as info:
        phone.normalise("secret-9999-abc")
    assert "secret" not in str(info.value)


def test_bad_default_country_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="default_country"):
        phone.normalise("0301234", default_country="4a")


@pytest.mark.parametrize(("raw", "anonymous"), [
    (None, True), ("", True), ("  ", True), ("anonymous", True), ("Anonymous", True), ("unknown", True),
    ("<unknown>", True), ("RESTRICTED", True), ("private", True), ("Withheld", True),
    ("unavailable", True), ('"Anonymous"', True), ("sip:anonymous@anonymous.invalid", True),
    ("anonymous@anonymous.invalid", True), ("15550001", False), ("+4930123", False), ("garbage!", False),
])
def test_is_anonymous(raw: str | None, anonymous: bool) -> None:
    assert phone.is_anonymous(raw) is anonymous


@pytest.mark.parametrize(("raw", "expected"), [
    ("anonymous", None), (None, None), ("no digits", None), ("0301234567", "+49301234567"),
    ("+1 (555) 0001", "+15550001"),
])
def test_try_normalise(raw: str | None, expected: str | None) -> None:
    assert phone.try_normalise(raw, default_country="49") == expected


@pytest.mark.parametrize(("number", "expected"), [("15550001", "****0001"), ("123", "***"), ("", "")])
def test_masked(number: str, expected: str) -> None:
    assert phone.masked(number) == expected
