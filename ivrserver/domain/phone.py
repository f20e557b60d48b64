"""Phone numbers: normalise what callers, files and agents type into one comparable form.

Pure. Caller ID is hostile input: anything that is not, after removing the usual punctuation,
an optional ``+`` followed by ASCII digits is rejected (no Unicode digits, no letters, no control
characters), and withheld numbers are recognised explicitly instead of being looked up.

Normal form:
- ``+<country><number>`` for international numbers: written with ``+`` or the ``00`` prefix, or
  national numbers written with the trunk prefix (``0``) when a default country code is set.
- plain digits otherwise (extensions, short codes, numbers in a dial plan without country codes).

    >>> normalise(" (555) 000-1234 ")
    '5550001234'
    >>> normalise("0049 30 1234567")
    '+49301234567'
    >>> normalise("030 1234567", default_country="49")
    '+49301234567'
"""

from __future__ import annotations

MAX_RAW_LENGTH = 64
MAX_DIGITS = 15  # E.164
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


def is_anonymous(raw: str | None) -> bool:
    """True when a caller ID says the number is withheld or missing."""
    if raw is None:
        return True
    text = raw.strip().strip('"').strip().lower()
    if text.startswith("sip:"):
        text = text[4:].split("@", 1)[0]
    return text in ANONYMOUS_CALLER_IDS or text.startswith("anonymous@")


def normalise(raw: str, default_country: str = "", trunk_prefix: str = "0") -> str:
    """The normal form of `raw`, or InvalidPhone.

    `default_country` (digits, e.g. "49") turns national numbers written with `trunk_prefix` into
    ``+49…``; without it those keep their leading zero.
    """
    if not isinstance(raw, str):
        raise InvalidPhone("expected text")
    if default_country and not (set(default_country) <= _DIGITS and 1 <= len(default_country) <= 3):
        raise ValueError("default_country must be 1-3 digits")
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
    if not international and default_country and trunk_prefix and text.startswith(trunk_prefix) \
            and len(text) > len(trunk_prefix):
        international, text = True, default_country + text[len(trunk_prefix):]
    if international and text.startswith("0"):
        raise InvalidPhone("country code cannot start with 0")
    if not MIN_DIGITS <= len(text) <= MAX_DIGITS:
        raise InvalidPhone(f"must have {MIN_DIGITS} to {MAX_DIGITS} digits")
    return ("+" + text) if international else text


def try_normalise(raw: str | None, default_country: str = "", trunk_prefix: str = "0") -> str | None:
    """The normal form, or None for anonymous or invalid caller IDs."""
    if raw is None or is_anonymous(raw):
        return None
    try:
        return normalise(raw, default_country, trunk_prefix)
    except InvalidPhone:
        return None


def masked(number: str) -> str:
    """A number safe for logs: only the last 4 digits visible."""
    if len(number) <= 4:
        return "*" * len(number)
    return "*" * (len(number) - 4) + number[-4:]
