"""What may be sent as an SMS: the number and the text, checked before anything leaves.

Both end up in places an attacker would like to reach: the number inside a SIP URI (AMI
`MessageSend` Destination, `pjsip:customers/sip:<number>@host`), the text in a SIP MESSAGE body
and in a webhook to the operator's gateway. So the number is digits with an optional leading `+`
(nothing that could end the URI or add a parameter), the text is printable (no control characters,
no bidirectional overrides that would make a message read differently than it was written) and
bounded: MAX_CHARS characters (a five-part concatenated SMS in UCS-2, which Mandarin needs, is
5 × 67 = 335) and MAX_BYTES bytes of UTF-8 (the SIP MESSAGE stays one UDP datagram).

Outcomes of a send (contract: `SmsSender.send` returns one): "sent", or "failed:<why>" with `why`
one of the FAILURES below.
"""

from __future__ import annotations

import re
import unicodedata

MAX_CHARS = 320
MAX_BYTES = 1000
NUMBER = re.compile(r"^\+?[0-9]{3,20}$")
SENT = "sent"
# why an SMS was not sent (or may not have been): the part after "failed:"
FAILURES = (
    "invalid_number",  # not digits with an optional leading +
    "invalid_text",  # empty, too long, or a control character
    "not_connected",  # the transport was not reachable: nothing left, a later try may send
    "refused",  # the transport refused it (Asterisk answered Error): nothing left
    "unconfirmed",  # sent, but no answer came: it may have left; never sent again for this key
    "in_progress",  # another send with the same key is running right now
    "disabled",  # sms.transport is off
)
# Bidirectional embedding/override/isolate controls: a message must read as it was written.
_BIDI = {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"}


class SmsInvalid(ValueError):
    """The number or the text may not be sent; `why` is the outcome's reason (invalid_…)."""

    def __init__(self, why: str, message: str) -> None:
        super().__init__(message)
        self.why = why


def failed(why: str) -> str:
    """The outcome "failed:<why>"."""
    return f"failed:{why}"


def check_number(number: object) -> str:
    """The number as it goes into the SIP URI (stripped); SmsInvalid otherwise."""
    if not isinstance(number, str) or not NUMBER.match(number.strip()):
        raise SmsInvalid("invalid_number", "expected 3-20 digits with an optional leading +")
    return number.strip()


def check_text(text: object) -> str:
    """The text unchanged when it may be sent; SmsInvalid (never echoing the text) otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise SmsInvalid("invalid_text", "expected a non-empty text")
    if len(text) > MAX_CHARS:
        raise SmsInvalid("invalid_text", f"at most {MAX_CHARS} characters, got {len(text)}")
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise SmsInvalid("invalid_text", f"at most {MAX_BYTES} bytes of UTF-8")
    for c in text:
        if c in _BIDI or unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn"):
            raise SmsInvalid("invalid_text", f"character U+{ord(c):04X} is not allowed")
    return text
