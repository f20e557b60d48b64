"""The one place that knows which customer, case and contact fields exist and what they may hold.

Pure. Used by the file import (CSV/YAML), the REST API and the export, so a rule is written once.
Every input is hostile: wrong types, control characters, huge values and unknown fields are
reported as `FieldError(field, message)` — the message says what is allowed and never echoes a PIN.

Canonical mapping of a customer (JSON body, YAML item, export)::

    id: "c1"                       # [A-Za-z0-9][A-Za-z0-9_.-]{0,63}
    name: "Ada Lovelace"
    phones: ["15550001", "+4930123"]
    tier: vip | gold | standard
    segment: government | enterprise | family | individual
    language: "en"                 # en, fr, pt_BR, zh-CN ...
    account_manager: "agent1001"   # optional agent id
    account_number: "100200300"    # optional, 4-20 digits
    pin: "1234"                    # optional, write-only, 4-8 digits (needs account_number)
    pin_hash: "scrypt$..."         # optional, from an export; instead of pin
    preferences: {timezone: Europe/Berlin, allowed_from: "09:00", allowed_until: "20:00",
                  do_not_call: false, holidays_ok: false}   # holidays_ok: callbacks on public holidays
    attributes: {balance: "12.50"} # free-form text for self-service

A CSV row is the flat form of the same: `phones` separated by `;`, the preference fields as
columns of their own, one `attr.NAME` column per attribute (see `from_flat_row`).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ivrserver.domain import identification, phone
from ivrserver.domain.hashing import Pepper
from ivrserver.domain.model import Case, CaseStatus, ContactPreferences, Customer, Segment, Tier

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
AGENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
LANGUAGE_RE = re.compile(r"[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?")
ATTRIBUTE_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
TIMEZONE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+){0,2}")
HHMM_RE = re.compile(r"([01]\d|2[0-4]):([0-5]\d)")

MAX_NAME = 200
MAX_PHONES = 10
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_VALUE = 1000
MAX_TEXT = 4000
SEVERITIES = range(1, 6)

CUSTOMER_FIELDS = ("id", "name", "phones", "tier", "segment", "language", "account_manager",
                   "account_number", "pin", "pin_hash", "preferences", "attributes")
PREFERENCE_FIELDS = ("timezone", "allowed_from", "allowed_until", "do_not_call", "holidays_ok")
ATTRIBUTE_COLUMN_PREFIX = "attr."
FLAT_COLUMNS = tuple(f for f in CUSTOMER_FIELDS if f not in ("preferences", "attributes")) + PREFERENCE_FIELDS
PHONE_SEPARATOR = ";"

_TRUE = frozenset({"true", "yes", "1", "on", "y"})
_FALSE = frozenset({"false", "no", "0", "off", "n", ""})


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class ValidCustomer:
    """A validated customer. `customer.pin_hash` holds an imported hash; `pin` a clear PIN to hash."""

    customer: Customer
    pin: str | None = dataclasses.field(default=None, repr=False)
    pin_given: bool = False  # the input had a `pin` or `pin_hash` key (even null: remove the PIN)

    def to_customer(self, salt: bytes, pepper: Pepper) -> Customer:
        """The customer to store: a clear PIN is hashed with `salt` (use a fresh random salt) and
        keyed with the server's `pepper`."""
        if self.pin is None:
            return self.customer
        return dataclasses.replace(self.customer, pin_hash=identification.hash_pin(self.pin, salt, pepper))


class _Errors:
    def __init__(self, prefix: str = "") -> None:
        self.items: list[FieldError] = []
        self.prefix = prefix

    def add(self, field: str, message: str) -> None:
        self.items.append(FieldError(self.prefix + field, message))


def _has_control(text: str, allow_newlines: bool = False) -> bool:
    for ch in text:
        if allow_newlines and ch in "\n\t":
            continue
        if unicodedata.category(ch).startswith("C"):
            return True
    return False


def _text(errors: _Errors, field: str, value: Any, *, max_len: int, required: bool = False,
          multiline: bool = False) -> str | None:
    if value is None:
        if required:
            errors.add(field, "is required")
        return None
    if not isinstance(value, str):
        errors.add(field, f"must be text, got {_type_name(value)}")
        return None
    value = value.strip()
    if not value and required:
        errors.add(field, "must not be empty")
        return None
    if len(value) > max_len:
        errors.add(field, f"must be at most {max_len} characters")
        return None
    if _has_control(value, allow_newlines=multiline):
        errors.add(field, "must not contain control characters")
        return None
    return value


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


def _pattern(errors: _Errors, field: str, value: Any, regex: re.Pattern[str], allowed: str, *,
             required: bool = False) -> str | None:
    text = _text(errors, field, value, max_len=200, required=required)
    if text is None or (not text and not required):
        return None
    if not regex.fullmatch(text):
        errors.add(field, f"must be {allowed}")
        return None
    return text


def _choice(errors: _Errors, field: str, value: Any, enum_type: type[Tier] | type[Segment],
            default: Any) -> Any:
    if value is None or value == "":
        return default
    allowed = ", ".join(m.value for m in enum_type)
    if not isinstance(value, str):
        errors.add(field, f"must be one of {allowed}, got {_type_name(value)}")
        return None
    try:
        return enum_type(value.strip().lower())
    except ValueError:
        errors.add(field, f"must be one of {allowed}")
        return None


def parse_bool(value: Any) -> bool | None:
    """A boolean from a bool or the usual words (true/false, yes/no, 1/0, on/off); None if neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return None


def _hhmm(errors: _Errors, field: str, value: Any, default: str) -> str | None:
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        errors.add(field, f"must be a time HH:MM as text, got {_type_name(value)}")
        return None
    match = HHMM_RE.fullmatch(value.strip())
    if not match or (match.group(1) == "24" and match.group(2) != "00"):
        errors.add(field, "must be a time HH:MM between 00:00 and 24:00")
        return None
    return value.strip()


def is_valid_timezone(name: str) -> bool:
    if not TIMEZONE_RE.fullmatch(name) or len(name) > 64:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):
        return False
    return True


def _preferences(errors: _Errors, value: Any) -> ContactPreferences | None:
    default = ContactPreferences()
    if value is None:
        return default
    if not isinstance(value, Mapping):
        errors.add("preferences", f"must be a mapping with {', '.join(PREFERENCE_FIELDS)}")
        return None
    for key in value:
        if key not in PREFERENCE_FIELDS:
            errors.add(f"preferences.{key}", f"unknown field; allowed: {', '.join(PREFERENCE_FIELDS)}")
    tz = value.get("timezone")
    timezone: str | None = default.timezone
    if tz not in (None, ""):
        timezone = _text(errors, "preferences.timezone", tz, max_len=64)
        if timezone is not None and not is_valid_timezone(timezone):
            errors.add("preferences.timezone", "must be an IANA time zone such as Europe/Berlin or UTC")
            timezone = None
    start = _hhmm(errors, "preferences.allowed_from", value.get("allowed_from"), default.allowed_from)
    end = _hhmm(errors, "preferences.allowed_until", value.get("allowed_until"), default.allowed_until)
    if start is not None and end is not None and start >= end:
        errors.add("preferences.allowed_until", "must be later than allowed_from (same day, local time)")
    raw_dnc = value.get("do_not_call")
    dnc = False if raw_dnc is None else parse_bool(raw_dnc)
    if dnc is None:
        errors.add("preferences.do_not_call", "must be true or false")
    raw_holidays_ok = value.get("holidays_ok")
    holidays_ok = False if raw_holidays_ok is None else parse_bool(raw_holidays_ok)
    if holidays_ok is None:
        errors.add("preferences.holidays_ok", "must be true or false")
    if timezone is None or start is None or end is None or dnc is None or holidays_ok is None:
        return None
    return ContactPreferences(timezone=timezone, allowed_from=start, allowed_until=end, do_not_call=dnc,
                              holidays_ok=holidays_ok)


def _phones(errors: _Errors, value: Any, default_country: str) -> tuple[str, ...] | None:
    """The numbers in `phone.normalise` form; `default_country` is the region (e.g. "CN")."""
    if value is None:
        return ()
    if isinstance(value, str):
        errors.add("phones", "must be a list of phone numbers")
        return None
    if not isinstance(value, Sequence):
        errors.add("phones", f"must be a list of phone numbers, got {_type_name(value)}")
        return None
    if len(value) > MAX_PHONES:
        errors.add("phones", f"at most {MAX_PHONES} numbers")
        return None
    out: list[str] = []
    ok = True
    for i, raw in enumerate(value):
        field = f"phones[{i}]"
        if not isinstance(raw, str):
            errors.add(field, f"must be a phone number as text, got {_type_name(raw)}")
            ok = False
            continue
        if phone.is_anonymous(raw):
            errors.add(field, "is empty or an anonymous caller ID, not a phone number")
            ok = False
            continue
        try:
            number = phone.normalise(raw, default_country)
        except phone.InvalidPhone as exc:
            errors.add(field, f"not a phone number: {exc}")
            ok = False
            continue
        if number not in out:
            out.append(number)
    return tuple(out) if ok else None


def _attributes(errors: _Errors, value: Any) -> dict[str, str] | None:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.add("attributes", f"must be a mapping of name to text, got {_type_name(value)}")
        return None
    if len(value) > MAX_ATTRIBUTES:
        errors.add("attributes", f"at most {MAX_ATTRIBUTES} attributes")
        return None
    out: dict[str, str] = {}
    for key, raw in value.items():
        if not isinstance(key, str) or not ATTRIBUTE_KEY_RE.fullmatch(key):
            errors.add("attributes", "names must be 1-64 letters, digits, '_', '.' or '-'")
            return None
        field = f"attributes.{key}"
        if isinstance(raw, bool):
            raw = "true" if raw else "false"
        elif isinstance(raw, (int, float)):
            raw = str(raw)
        text = _text(errors, field, raw, max_len=MAX_ATTRIBUTE_VALUE)
        if text is not None:
            out[key] = text
        elif raw is None:
            errors.add(field, "must be text, got null")
    return out


def _digits(errors: _Errors, field: str, value: Any, lo: int, hi: int, *, secret: bool = False) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        errors.add(field, f"must be {lo}-{hi} digits as text (quote it), got {_type_name(value)}")
        return None
    text = value.strip()
    if not (lo <= len(text) <= hi and text.isascii() and text.isdigit()):
        errors.add(field, f"must be {lo}-{hi} digits" + ("" if secret else f", got {len(text)} characters"))
        return None
    return text


def validate_customer(data: Any, *, default_country: str = "", id_required: bool = True,
                      prefix: str = "") -> tuple[ValidCustomer | None, list[FieldError]]:
    """Validate one customer mapping; returns (result, []) or (None, errors)."""
    errors = _Errors(prefix)
    if not isinstance(data, Mapping):
        errors.add("customer", f"must be a mapping of fields, got {_type_name(data)}")
        return None, errors.items
    for key in data:
        if key not in CUSTOMER_FIELDS:
            errors.add(str(key)[:64], f"unknown field; allowed: {', '.join(CUSTOMER_FIELDS)}")
    cid = _pattern(errors, "id", data.get("id"), ID_RE,
                   "1-64 letters, digits, '_', '.' or '-' starting with a letter or digit",
                   required=id_required)
    name = _text(errors, "name", data.get("name"), max_len=MAX_NAME, required=True)
    phones = _phones(errors, data.get("phones"), default_country)
    tier = _choice(errors, "tier", data.get("tier"), Tier, Tier.STANDARD)
    segment = _choice(errors, "segment", data.get("segment"), Segment, Segment.INDIVIDUAL)
    language = data.get("language")
    language = "en" if language in (None, "") else _pattern(
        errors, "language", language, LANGUAGE_RE, "a language code such as en, fr or pt_BR")
    manager = _pattern(errors, "account_manager", data.get("account_manager"), AGENT_ID_RE,
                       "an agent id (letters, digits, '_', '.', '@', '-')")
    account = _digits(errors, "account_number", data.get("account_number"),
                      identification.ACCOUNT_MIN_DIGITS, identification.ACCOUNT_MAX_DIGITS)
    pin = _digits(errors, "pin", data.get("pin"), identification.PIN_MIN_DIGITS,
                  identification.PIN_MAX_DIGITS, secret=True)
    pin_hash = data.get("pin_hash")
    if pin_hash in (None, ""):
        pin_hash = None
    elif not identification.is_pin_hash(pin_hash):
        errors.add("pin_hash", "must be a PIN hash made by ivrserver ($scrypt$... or scrypt$...); "
                               "give a clear pin instead")
        pin_hash = None
    if pin is not None and pin_hash is not None:
        errors.add("pin", "give either pin or pin_hash, not both")
    if (pin is not None or pin_hash is not None) and data.get("account_number") in (None, ""):
        errors.add("pin", "needs an account_number to identify with")
    preferences = _preferences(errors, data.get("preferences"))
    attributes = _attributes(errors, data.get("attributes"))
    if errors.items:
        return None, errors.items
    assert name is not None and phones is not None and preferences is not None and attributes is not None
    customer = Customer(id=cid or "", name=name, phones=phones, tier=tier, segment=segment,
                        language=language or "en", account_manager=manager, account_number=account,
                        pin_hash=pin_hash, preferences=preferences, attributes=attributes)
    return ValidCustomer(customer=customer, pin=pin,
                         pin_given="pin" in data or "pin_hash" in data), []


def customer_to_dict(customer: Customer, *, include_pin_hash: bool = False) -> dict[str, Any]:
    """The canonical mapping of a customer (REST output, YAML export). The PIN hash only on request."""
    out: dict[str, Any] = {
        "id": customer.id, "name": customer.name, "phones": list(customer.phones),
        "tier": customer.tier.value, "segment": customer.segment.value, "language": customer.language,
        "account_manager": customer.account_manager, "account_number": customer.account_number,
    }
    if include_pin_hash:
        out["pin_hash"] = customer.pin_hash
    else:
        out["has_pin"] = customer.pin_hash is not None
    out["preferences"] = dataclasses.asdict(customer.preferences)
    out["attributes"] = dict(customer.attributes)
    return out


def from_flat_row(row: Mapping[str, str | None]) -> dict[str, Any]:
    """A CSV row (column → text) in the canonical shape. Empty cells count as absent."""
    out: dict[str, Any] = {}
    prefs: dict[str, Any] = {}
    attrs: dict[str, Any] = {}
    for column, value in row.items():
        if value is None or value == "":
            continue
        if column == "phones":
            out["phones"] = [p for p in (s.strip() for s in value.split(PHONE_SEPARATOR)) if p]
        elif column in PREFERENCE_FIELDS:
            prefs[column] = value
        elif column.startswith(ATTRIBUTE_COLUMN_PREFIX):
            attrs[column[len(ATTRIBUTE_COLUMN_PREFIX):]] = value
        else:
            out[column] = value
    if prefs:
        out["preferences"] = prefs
    if attrs:
        out["attributes"] = attrs
    return out


def check_flat_columns(columns: Sequence[str]) -> list[FieldError]:
    """Errors for CSV header columns that are not customer fields."""
    errors: list[FieldError] = []
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            errors.append(FieldError(column, "column appears twice"))
        seen.add(column)
        if column.startswith(ATTRIBUTE_COLUMN_PREFIX):
            if not ATTRIBUTE_KEY_RE.fullmatch(column[len(ATTRIBUTE_COLUMN_PREFIX):]):
                errors.append(FieldError(column[:70], "attribute columns are attr.NAME with NAME of 1-64 "
                                                      "letters, digits, '_', '.' or '-'"))
        elif column not in FLAT_COLUMNS:
            errors.append(FieldError(column[:70], f"unknown column; allowed: {', '.join(FLAT_COLUMNS)}, "
                                                  f"attr.NAME"))
    if "name" not in seen:
        errors.append(FieldError("name", "column is required"))
    return errors


def to_flat_row(customer: Customer) -> dict[str, str]:
    """The CSV row of a customer (with the PIN hash, so that an export can be imported back)."""
    row = {
        "id": customer.id, "name": customer.name, "phones": PHONE_SEPARATOR.join(customer.phones),
        "tier": customer.tier.value, "segment": customer.segment.value, "language": customer.language,
        "account_manager": customer.account_manager or "", "account_number": customer.account_number or "",
        "pin_hash": customer.pin_hash or "", "timezone": customer.preferences.timezone,
        "allowed_from": customer.preferences.allowed_from,
        "allowed_until": customer.preferences.allowed_until,
        "do_not_call": "true" if customer.preferences.do_not_call else "false",
        "holidays_ok": "true" if customer.preferences.holidays_ok else "false",
    }
    for key, value in customer.attributes.items():
        row[ATTRIBUTE_COLUMN_PREFIX + key] = value
    return row


# --- cases and contacts --------------------------------------------------------------------------

CASE_CREATE_FIELDS = ("customer_id", "summary", "owner_agent", "severity", "still_needed", "next_step")
CASE_UPDATE_FIELDS = ("summary", "owner_agent", "severity", "still_needed", "next_step", "status")


def _severity(errors: _Errors, value: Any) -> int | None:
    """A severity 1-5; digits as text are accepted too (CSV cells, YAML read as text)."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value) < 4:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value not in SEVERITIES:
        errors.add("severity", f"must be a whole number {SEVERITIES.start}-{SEVERITIES.stop - 1} "
                               f"(1 = most severe)")
        return None
    return value


def _unknown(errors: _Errors, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            errors.add(str(key)[:64], f"unknown field; allowed: {', '.join(allowed)}")


def validate_case_create(data: Any) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """Fields for opening a case: customer_id and summary required; returns keyword arguments."""
    errors = _Errors()
    if not isinstance(data, Mapping):
        errors.add("case", f"must be a mapping of fields, got {_type_name(data)}")
        return None, errors.items
    _unknown(errors, data, CASE_CREATE_FIELDS)
    out: dict[str, Any] = {
        "customer_id": _pattern(errors, "customer_id", data.get("customer_id"), ID_RE, "a customer id",
                                required=True),
        "summary": _text(errors, "summary", data.get("summary"), max_len=MAX_TEXT, required=True,
                         multiline=True),
        "owner_agent": _pattern(errors, "owner_agent", data.get("owner_agent"), AGENT_ID_RE, "an agent id"),
        "still_needed": _text(errors, "still_needed", data.get("still_needed"), max_len=MAX_TEXT,
                              multiline=True) or "",
        "next_step": _text(errors, "next_step", data.get("next_step"), max_len=MAX_TEXT,
                           multiline=True) or "",
    }
    out["severity"] = _severity(errors, data["severity"]) if "severity" in data else 3
    return (None, errors.items) if errors.items else (out, [])


def validate_case_update(data: Any) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """Changes to a case: only the given fields; `owner_agent: null` clears the owner."""
    errors = _Errors()
    if not isinstance(data, Mapping):
        errors.add("case", f"must be a mapping of fields, got {_type_name(data)}")
        return None, errors.items
    _unknown(errors, data, CASE_UPDATE_FIELDS)
    if not data:
        errors.add("case", f"give at least one of {', '.join(CASE_UPDATE_FIELDS)}")
    out: dict[str, Any] = {}
    if "summary" in data:
        out["summary"] = _text(errors, "summary", data["summary"], max_len=MAX_TEXT, required=True,
                               multiline=True)
    for key in ("still_needed", "next_step"):
        if key in data:
            out[key] = _text(errors, key, data[key], max_len=MAX_TEXT, multiline=True) or ""
    if "owner_agent" in data:
        out["owner_agent"] = _pattern(errors, "owner_agent", data["owner_agent"], AGENT_ID_RE, "an agent id")
    if "severity" in data:
        out["severity"] = _severity(errors, data["severity"])
    if "status" in data:
        status = data["status"]
        if status not in [s.value for s in CaseStatus]:
            errors.add("status", f"must be one of {', '.join(s.value for s in CaseStatus)}")
        else:
            out["status"] = CaseStatus(status)
    return (None, errors.items) if errors.items else (out, [])


def apply_case_update(case: Case, changes: Mapping[str, Any]) -> Case:
    """The case with validated `changes` applied."""
    return dataclasses.replace(case, **changes)
