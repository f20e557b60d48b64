from __future__ import annotations

import pytest

from ivrserver.domain import phone

CN_MOBILE = "+8613812345678"


@pytest.mark.parametrize(("raw", "region", "expected"), [
    # one mainland mobile, every way operators' networks and people write it
    ("13812345678", "CN", CN_MOBILE),
    ("013812345678", "CN", CN_MOBILE),
    ("8613812345678", "CN", CN_MOBILE),
    ("+8613812345678", "CN", CN_MOBILE),
    ("008613812345678", "CN", CN_MOBILE),
    ("+86 138 1234 5678", "CN", CN_MOBILE),
    ("+86 138 1234 5678", "US", CN_MOBILE),        # international forms do not need the region
    ("0086-138-1234-5678", "GB", CN_MOBILE),
    ("011 86 138 1234 5678", "US", CN_MOBILE),     # the US international prefix
    ("+8613812345678", "", CN_MOBILE),
    ("010 6234 5678", "CN", "+861062345678"),      # Beijing landline with the trunk prefix
    ("400 810 8888", "CN", "+864008108888"),       # national service number: a real number
    # service and short codes, the hotline, extensions: kept as dialled
    ("10086", "CN", "10086"),
    ("95555", "CN", "95555"),
    ("1860", "CN", "1860"),
    ("10000", "CN", "10000"),
    ("1001", "CN", "1001"),
    ("911", "US", "911"),
    ("999", "GB", "999"),
    # the demo's and the tests' numbers (not real numbers anywhere): kept as dialled
    ("15550001", "CN", "15550001"),
    ("15559999", "CN", "15559999"),
    ("15550001", "US", "15550001"),
    # US
    ("(650) 253-0000", "US", "+16502530000"),
    ("650.253.0000", "US", "+16502530000"),
    ("1 650 253 0000", "US", "+16502530000"),
    ("+1 (650) 253-0000", "US", "+16502530000"),
    ("+1 (650) 253-0000", "CN", "+16502530000"),
    ("+1 555 0001", "US", "+15550001"),            # international but not a real number: as written
    # UK
    ("07911 123456", "GB", "+447911123456"),
    ("+44 7911 123456", "GB", "+447911123456"),
    ("0044 7911 123456", "GB", "+447911123456"),
    ("447911123456", "GB", "+447911123456"),
    ("020 7946 0018", "GB", "+442079460018"),
    ("0044 20 7946 0018", "CN", "+442079460018"),
    # no region: only international forms become E.164, the rest is kept as dialled
    ("13812345678", "", "13812345678"),
    ("013812345678", "", "013812345678"),
    (" (555) 000-1234 ", "", "5550001234"),
    ("0049 (30) 1234-567", "", "+49301234567"),
    ("+123456789012345", "", "+123456789012345"),  # 15 digits: the E.164 maximum
    ("030 1234567", "DE", "+49301234567"),
    ("13812345678", "cn", CN_MOBILE),              # region case does not matter
])
def test_normalise(raw: str, region: str, expected: str) -> None:
    assert phone.normalise(raw, region) == expected


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
    "1-800-FLOWERS",         # libphonenumber would read letters as a vanity number: refused
    "13812345678 ext. 12",
])
@pytest.mark.parametrize("region", ["", "CN", "US"])
def test_normalise_rejects_hostile_or_malformed(raw: str, region: str) -> None:
    with pytest.raises(phone.InvalidPhone):
        phone.normalise(raw, region)


def test_normalise_error_does_not_echo_input() -> None:
    with pytest.raises(phone.InvalidPhone) as info:
        phone.normalise("secret-9999-abc", "CN")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("region", ["49", "XX", "China", "C N"])
def test_bad_region_is_a_configuration_error(region: str) -> None:
    with pytest.raises(ValueError, match="unknown region"):
        phone.normalise("0301234", region)
    with pytest.raises(ValueError, match="unknown region"):
        phone.check_region(region)


@pytest.mark.parametrize(("region", "expected"), [("", ""), ("CN", "CN"), ("gb", "GB"), (" us ", "US")])
def test_check_region(region: str, expected: str) -> None:
    assert phone.check_region(region) == expected


@pytest.mark.parametrize(("raw", "anonymous"), [
    (None, True), ("", True), ("  ", True), ("anonymous", True), ("Anonymous", True), ("unknown", True),
    ("<unknown>", True), ("RESTRICTED", True), ("private", True), ("Withheld", True),
    ("unavailable", True), ('"Anonymous"', True), ("sip:anonymous@anonymous.invalid", True),
    ("anonymous@anonymous.invalid", True), ("15550001", False), ("+4930123", False), ("garbage!", False),
])
def test_is_anonymous(raw: str | None, anonymous: bool) -> None:
    assert phone.is_anonymous(raw) is anonymous


@pytest.mark.parametrize(("raw", "expected"), [
    ("anonymous", None), (None, None), ("no digits", None), ("013812345678", CN_MOBILE),
    ("+1 (650) 253-0000", "+16502530000"), ("10086", "10086"),
])
def test_try_normalise(raw: str | None, expected: str | None) -> None:
    assert phone.try_normalise(raw, "CN") == expected


@pytest.mark.parametrize(("raw", "region", "expected"), [
    # the normal form first, then the keys of customers imported before numbers were E.164
    ("013812345678", "CN", (CN_MOBILE, "013812345678", "8613812345678", "13812345678")),
    ("13812345678", "CN", (CN_MOBILE, "13812345678", "8613812345678")),
    ("+8613812345678", "CN", (CN_MOBILE, "8613812345678", "13812345678")),
    ("15550001", "CN", ("15550001",)),
    ("+1 555 0001", "CN", ("+15550001", "15550001")),
    ("anonymous", "CN", ()),
    ("garbage!", "CN", ()),
])
def test_lookup_forms(raw: str, region: str, expected: tuple[str, ...]) -> None:
    assert phone.lookup_forms(raw, region) == expected


@pytest.mark.parametrize(("number", "expected"), [("15550001", "****0001"), ("123", "***"), ("", "")])
def test_masked(number: str, expected: str) -> None:
    assert phone.masked(number) == expected
