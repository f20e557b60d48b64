from __future__ import annotations

from typing import Any

import pytest

from ivrserver.domain import customer_validation as cv
from ivrserver.domain import identification
from ivrserver.domain.model import ContactPreferences, Customer, Segment, Tier
from tests.conftest import TEST_PEPPER

GOOD: dict[str, Any] = {
    "id": "c1", "name": "Wang Lei", "phones": ["155 5000-1", "+49 30 123"], "tier": "vip",
    "segment": "enterprise", "language": "zh_CN", "account_manager": "agent1001",
    "account_number": "80010001", "pin": "0987",
    "preferences": {"timezone": "Asia/Shanghai", "allowed_from": "08:30", "allowed_until": "24:00",
                    "do_not_call": "no"},
    "attributes": {"balance": "12.50", "count": 3, "flag": True},
}


def fields_of(errors: list[cv.FieldError]) -> list[str]:
    return [e.field for e in errors]


def test_good_customer() -> None:
    result, errors = cv.validate_customer(GOOD)
    assert errors == [] and result is not None
    c = result.customer
    assert c == Customer(
        id="c1", name="Wang Lei", phones=("15550001", "+4930123"), tier=Tier.VIP, segment=Segment.ENTERPRISE,
        language="zh_CN", account_manager="agent1001", account_number="80010001", pin_hash=None,
        preferences=ContactPreferences("Asia/Shanghai", "08:30", "24:00", False),
        attributes={"balance": "12.50", "count": "3", "flag": "true"})
    assert result.pin == "0987" and result.pin_given
    assert "0987" not in repr(result)
    stored = result.to_customer(b"0123456789abcdef", TEST_PEPPER)
    assert stored.pin_hash is not None and identification.verify_pin("0987", stored.pin_hash, TEST_PEPPER)


def test_minimal_customer_gets_defaults() -> None:
    result, errors = cv.validate_customer({"id": "x", "name": "X"})
    assert errors == [] and result is not None
    assert result.customer == Customer(id="x", name="X", phones=())
    assert result.pin is None and not result.pin_given
    assert result.to_customer(b"0123456789abcdef", TEST_PEPPER) is result.customer


def test_duplicate_phones_after_normalisation_are_merged() -> None:
    result, _ = cv.validate_customer({"id": "x", "name": "X", "phones": ["15550001", "1555-0001"]})
    assert result is not None and result.customer.phones == ("15550001",)


@pytest.mark.parametrize(("change", "field", "fragment"), [
    ({"id": None}, "id", "required"),
    ({"id": "../etc"}, "id", "letters, digits"),
    ({"id": "a b"}, "id", "letters, digits"),
    ({"id": "x" * 65}, "id", "letters, digits"),
    ({"name": ""}, "name", "empty"),
    ({"name": None}, "name", "required"),
    ({"name": 5}, "name", "must be text"),
    ({"name": "A\x1b[31mB"}, "name", "control characters"),
    ({"name": "x" * 201}, "name", "at most 200"),
    ({"phones": "15550001"}, "phones", "list"),
    ({"phones": [15550001]}, "phones[0]", "as text"),
    ({"phones": ["ok1234", "anonymous"]}, "phones[0]", "not a phone number"),
    ({"phones": ["15550001", "anonymous"]}, "phones[1]", "anonymous"),
    ({"phones": ["1"] * 11}, "phones", "at most 10"),
    ({"tier": "platinum"}, "tier", "vip, gold, standard"),
    ({"tier": 1}, "tier", "vip, gold, standard"),
    ({"segment": "martians"}, "segment", "government, enterprise, family, individual"),
    ({"language": "english!"}, "language", "language code"),
    ({"account_manager": "agent 1001"}, "account_manager", "agent id"),
    ({"account_number": "12ab"}, "account_number", "4-20 digits"),
    ({"account_number": 80010001}, "account_number", "quote it"),
    ({"pin": "123"}, "pin", "4-8 digits"),
    ({"pin": 1234}, "pin", "quote it"),
    ({"pin": "123456789"}, "pin", "4-8 digits"),
    ({"pin_hash": "md5$abc"}, "pin_hash", "scrypt"),
    ({"pin_hash": identification.hash_pin("1111", b"saltsalt", TEST_PEPPER)}, "pin", "either pin or pin_hash"),
    ({"account_number": None}, "pin", "needs an account_number"),
    ({"preferences": "UTC"}, "preferences", "mapping"),
    ({"preferences": {"timezone": "Mars/Olympus"}}, "preferences.timezone", "IANA"),
    ({"preferences": {"timezone": "../../etc/passwd"}}, "preferences.timezone", "IANA"),
    ({"preferences": {"timezone": "Europe"}}, "preferences.timezone", "IANA"),
    ({"preferences": {"allowed_from": "9:00"}}, "preferences.allowed_from", "HH:MM"),
    ({"preferences": {"allowed_from": "25:00"}}, "preferences.allowed_from", "HH:MM"),
    ({"preferences": {"allowed_until": "24:30"}}, "preferences.allowed_until", "HH:MM"),
    ({"preferences": {"allowed_from": "20:00", "allowed_until": "09:00"}}, "preferences.allowed_until",
     "later than"),
    ({"preferences": {"do_not_call": "maybe"}}, "preferences.do_not_call", "true or false"),
    ({"preferences": {"colour": "red"}}, "preferences.colour", "unknown field"),
    ({"attributes": ["balance"]}, "attributes", "mapping"),
    ({"attributes": {"bad key!": "1"}}, "attributes", "names must be"),
    ({"attributes": {"balance": None}}, "attributes.balance", "null"),
    ({"attributes": {"balance": "x" * 1001}}, "attributes.balance", "at most 1000"),
    ({"attributes": {f"k{i}": "v" for i in range(51)}}, "attributes", "at most 50"),
    ({"favourite_colour": "red"}, "favourite_colour", "unknown field"),
])
def test_each_bad_field_is_named(change: dict[str, Any], field: str, fragment: str) -> None:
    data = {**GOOD, **change}
    result, errors = cv.validate_customer(data)
    assert result is None
    matching = [e for e in errors if e.field == field]
    assert matching, errors
    assert fragment in matching[0].message


def test_pin_never_echoed_in_errors() -> None:
    _, errors = cv.validate_customer({**GOOD, "pin": "98765432109"})
    assert errors and all("98765432109" not in str(e) for e in errors)


@pytest.mark.parametrize("data", [None, [], "customer", 5])
def test_not_a_mapping(data: Any) -> None:
    result, errors = cv.validate_customer(data)
    assert result is None and fields_of(errors) == ["customer"]


def test_all_errors_reported_at_once_with_prefix() -> None:
    _, errors = cv.validate_customer({"id": "", "name": "", "tier": "x", "pin": "1"}, prefix="row.")
    assert fields_of(errors) == ["row.id", "row.name", "row.tier", "row.pin"]


def test_id_optional_when_not_required() -> None:
    result, errors = cv.validate_customer({"name": "X"}, id_required=False)
    assert errors == [] and result is not None and result.customer.id == ""


def test_default_country_applies_to_phones() -> None:
    result, _ = cv.validate_customer({"id": "x", "name": "X", "phones": ["030 123456"]}, default_country="DE")
    assert result is not None and result.customer.phones == ("+4930123456",)
    result, _ = cv.validate_customer({"id": "x", "name": "X", "phones": ["013800000001", "+86 138 0000 0001",
                                                                          "10086"]}, default_country="CN")
    assert result is not None and result.customer.phones == ("+8613800000001", "10086")


def test_holidays_ok_preference() -> None:
    result, errors = cv.validate_customer({"id": "x", "name": "X", "preferences": {"holidays_ok": "yes"}})
    assert not errors and result is not None and result.customer.preferences.holidays_ok is True
    result, errors = cv.validate_customer({"id": "x", "name": "X"})
    assert result is not None and result.customer.preferences.holidays_ok is False
    _, errors = cv.validate_customer({"id": "x", "name": "X", "preferences": {"holidays_ok": "maybe"}})
    assert any(e.field == "preferences.holidays_ok" for e in errors)


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), ("yes", True), ("No", False), ("1", True), ("0", False), ("", False),
    ("on", True), ("maybe", None), (1, None), (None, None),
])
def test_parse_bool(value: Any, expected: bool | None) -> None:
    assert cv.parse_bool(value) is expected


def test_flat_row_round_trip() -> None:
    pin_hash = identification.hash_pin("1234", b"12345678", TEST_PEPPER)
    result, _ = cv.validate_customer({**GOOD, "pin": None, "pin_hash": pin_hash})
    assert result is not None
    row = cv.to_flat_row(result.customer)
    again, errors = cv.validate_customer(cv.from_flat_row(row))
    assert errors == [] and again is not None
    assert again.customer == result.customer


def test_from_flat_row_shapes_csv_columns() -> None:
    row = {"id": "c1", "name": "N", "phones": "1555 0001; ;15550002", "timezone": "UTC", "do_not_call": "yes",
           "attr.balance": "3.20", "pin": "", "segment": None}
    assert cv.from_flat_row(row) == {
        "id": "c1", "name": "N", "phones": ["1555 0001", "15550002"],
        "preferences": {"timezone": "UTC", "do_not_call": "yes"}, "attributes": {"balance": "3.20"}}


@pytest.mark.parametrize(("columns", "fields"), [
    (["id", "name", "phones", "attr.balance"], []),
    (["id", "phones"], ["name"]),
    (["id", "name", "colour"], ["colour"]),
    (["id", "name", "name"], ["name"]),
    (["id", "name", "attr.bad key"], ["attr.bad key"]),
])
def test_check_flat_columns(columns: list[str], fields: list[str]) -> None:
    assert fields_of(cv.check_flat_columns(columns)) == fields


def test_customer_to_dict_hides_pin_hash_unless_asked() -> None:
    customer = Customer(id="c", name="N", phones=("1",), pin_hash="scrypt$x")
    assert "pin_hash" not in cv.customer_to_dict(customer)
    assert cv.customer_to_dict(customer)["has_pin"] is True
    assert cv.customer_to_dict(customer, include_pin_hash=True)["pin_hash"] == "scrypt$x"


@pytest.mark.parametrize(("data", "fields"), [
    ({"customer_id": "c1", "summary": "Refund"}, []),
    ({"customer_id": "c1", "summary": "Refund\nsecond line", "severity": 1, "owner_agent": "agent1003"}, []),
    ({"summary": "x"}, ["customer_id"]),
    ({"customer_id": "c1"}, ["summary"]),
    ({"customer_id": "c1", "summary": "x", "severity": 0}, ["severity"]),
    ({"customer_id": "c1", "summary": "x", "severity": "2"}, []),
    ({"customer_id": "c1", "summary": "x", "severity": "2.5"}, ["severity"]),
    ({"customer_id": "c1", "summary": "x", "severity": 2.0}, ["severity"]),
    ({"customer_id": "c1", "summary": "x", "severity": True}, ["severity"]),
    ({"customer_id": "c1", "summary": "x", "owner_agent": "a b"}, ["owner_agent"]),
    ({"customer_id": "c1", "summary": "x", "status": "open"}, ["status"]),
    ([], ["case"]),
])
def test_validate_case_create(data: Any, fields: list[str]) -> None:
    result, errors = cv.validate_case_create(data)
    assert fields_of(errors) == fields
    assert (result is None) == bool(fields)


def test_case_create_defaults() -> None:
    result, _ = cv.validate_case_create({"customer_id": "c1", "summary": " Refund "})
    assert result == {"customer_id": "c1", "summary": "Refund", "owner_agent": None, "still_needed": "",
                      "next_step": "", "severity": 3}


@pytest.mark.parametrize(("data", "fields", "expected"), [
    ({"status": "closed"}, [], {"status": "closed"}),
    ({"owner_agent": None}, [], {"owner_agent": None}),
    ({"next_step": "call back", "severity": 5}, [], {"next_step": "call back", "severity": 5}),
    ({}, ["case"], None),
    ({"status": "pending"}, ["status"], None),
    ({"summary": ""}, ["summary"], None),
    ({"customer_id": "c2"}, ["customer_id"], None),
])
def test_validate_case_update(data: Any, fields: list[str], expected: dict[str, Any] | None) -> None:
    result, errors = cv.validate_case_update(data)
    assert fields_of(errors) == fields
    assert result == expected
