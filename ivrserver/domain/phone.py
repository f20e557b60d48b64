"""Phone numbers: one normal form for what callers, files, agents and callbacks give us.

Pure (no I/O, no clock): the one normaliser used for identification (the caller-ID lookup),
customer import, the REST API, contact history and callbacks, with the default region passed in.

It uses `phonenumbers` (Google's libphonenumber metadata) — the one non-stdlib import of
domain/: the library is a deterministic function of its bundled metadata (no network, no clock,
no state we rely on), like `zoneinfo` over the `tzdata` package that domain/callbacks.py uses, and
numbering plans (trunk prefixes, international prefixes, which ranges are real) are data that
nobody should hand-maintain. Its only side effect is importing a region's metadata module the
first time that region is used (`check_region` does it for the default region at start).

Normal form:
- E.164 (``+8613812345678``) for every number that libphonenumber says is a valid number, however
  it was written: national (``13812345678``), with the trunk prefix (``013812345678``), with the
  country code but no prefix (``8613812345678``), with ``+`` or with the ``00`` prefix.
- anything else as dialled, separators removed: service and short codes (``10086``, ``95555``),
  the hotline (``1860``), extensions (``1001``), test numbers (``15550001``); ``+`` is kept when
  the number was written internationally (``+15550001``).

Caller ID is hostile input: anything that is not, after removing the usual punctuation, an
optional ``+`` (or ``00``) followed by ASCII digits is rejected (no Unicode digits, no letters —
libphonenumber would read letters as a vanity number —, no control characters), and withheld
numbers are recognised explicitly instead of being looked up.

    >>> normalise("013812345678", "CN")
    '+8613812345678'
    >>> normalise("008613812345678", "CN")
    '+8613812345678'
    >>> normalise("10086", "CN")
    '10086'
    >>> normalise(" (650) 253-0000 ", "US")
    '+16502530000'
    >>> normalise("(555) 000-1234")
    '5550001234'
"""

from __future__ import annotations

import phonenumbers

MAX_RAW_LENGTH = 64
MAX_DIGITS = 15  # E.164
# A number as dialled may carry an international prefix longer than '00' (US '011', AU '0011').
MAX_DIALLED_DIGITS = MAX_DIGITS + 4
MIN_DIGITS = 2

_DIGITS = frozenset("0123456789")
# Punctuation people and switches put in numbers; removed before validation.
_SEPARATORS = str.maketrans("", "", " \t-.()/")

# Caller IDs that mean "no number": the caller withheld it or the network did not send one.
# Compared after stripping and lower-casing; "<unknown>" etc. come from SIP display forms.
ANONYMOUS_CALLER_IDS = frozenset({
    "", "anonymous", "anonymous.invalid", "unknown", "<unknown>", "restricted", "private",
    "withheld", "unavailable", "unavail", "blocked", "no caller id", "nocallerid", "none",
    "null", "asterisk", "p", "o", "-", "0",
})


class InvalidPhone(ValueError):
    """The text is not a phone number (the message says why, without echoing the input)."""


def check_region(region: str) -> str:
    """`region` as libphonenumber knows it (ISO 3166 alpha-2, upper case), '' for none.

    ValueError names what is allowed. Loads the region's metadata, so a service that checks its
    default region at start does not import it on the event loop at the first call.
    """
    if not isinstance(region, str):
        raise ValueError("region must be text")
    if not region:
        return ""
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region {region!r}: expected an ISO 3166 two-letter code that "
                         f"libphonenumber knows (e.g. CN, US, GB), or '' for none")
    phonenumbers.PhoneMetadata.metadata_for_region(code)
    return code


def is_anonymous(raw: str | None) -> bool:
    """True when a caller ID says the number is withheld or missing."""
    if raw is None:
        return True
    text = raw.strip().strip('"').strip().lower()
    if text.startswith("sip:"):
        text = text[4:].split("@", 1)[0]
    return text in ANONYMOUS_CALLER_IDS or text.startswith("anonymous@")


def _as_dialled(raw: str) -> str:
    """`raw` checked and stripped of separators: '+' and digits, or digits (InvalidPhone)."""
    if not isinstance(raw, str):
        raise InvalidPhone("expected text")
    if len(raw) > MAX_RAW_LENGTH:
        raise InvalidPhone(f"longer than {MAX_RAW_LENGTH} characters")
    text = raw.strip().translate(_SEPARATORS)
    if not text:
        raise InvalidPhone("empty")
    international = False
    if text.startswith("+"):
        international, text = True, text[1:]
    elif text.startswith("00"):
        international, text = True, text[2:]
    if not text or not set(text) <= _DIGITS:
        raise InvalidPhone("only digits, spaces, dashes, dots, parentheses and a leading + are allowed")
    if international and text.startswith("0"):
        raise InvalidPhone("country code cannot start with 0")
    if not MIN_DIGITS <= len(text) <= MAX_DIALLED_DIGITS:
        raise InvalidPhone(f"must have {MIN_DIGITS} to {MAX_DIGITS} digits")
    return ("+" + text) if international else text


def _valid(dialled: str, region: str) -> phonenumbers.PhoneNumber | None:
    """The parsed number when libphonenumber says it is a valid number, else None."""
    if not dialled.startswith("+") and not region:
        return None  # a national number without a region cannot be placed
    try:
        parsed = phonenumbers.parse(dialled, region or None)
    except phonenumbers.NumberParseException:
        return None
    return parsed if phonenumbers.is_valid_number(parsed) else None


def normalise(raw: str, region: str = "") -> str:
    """The normal form of `raw` (E.164 for valid numbers, else as dialled), or InvalidPhone.

    `region` (ISO 3166 alpha-2, e.g. "CN"; '' for none) says how national numbers are read: the
    region of the network the caller IDs come from. Without it only numbers written
    internationally become E.164.
    """
    region = check_region(region)
    dialled = _as_dialled(raw)
    parsed = _valid(dialled, region)
    if parsed is None:
        if len(dialled.lstrip("+")) > MAX_DIGITS:
            raise InvalidPhone(f"must have {MIN_DIGITS} to {MAX_DIGITS} digits")
        return dialled
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def try_normalise(raw: str | None, region: str = "") -> str | None:
    """The normal form, or None for anonymous or invalid caller IDs."""
    if raw is None or is_anonymous(raw):
        return None
    try:
        return normalise(raw, region)
    except InvalidPhone:
        return None


def lookup_forms(raw: str | None, region: str = "") -> tuple[str, ...]:
    """The normal form first, then the forms customers imported before the normal form was E.164
    may be indexed under: the number as dialled (the old normal form), its national digits
    (``13812345678``) and E.164 without the ``+`` (``8613812345678``, the old callback form).

    () for anonymous or invalid caller IDs. Re-saving a customer (import, REST) re-indexes it
    under the normal form only.
    """
    normal = try_normalise(raw, region)
    if normal is None or raw is None:
        return ()
    forms = [normal, _as_dialled(raw)]
    if normal.startswith("+"):
        forms.append(normal[1:])
        parsed = _valid(normal, "")
        if parsed is not None:
            forms.append(str(parsed.national_number))
    return tuple(dict.fromkeys(forms))


def masked(number: str) -> str:
    """A number safe for logs: only the last 4 digits visible."""
    if len(number) <= 4:
        return "*" * len(number)
    return "*" * (len(number) - 4) + number[-4:]
