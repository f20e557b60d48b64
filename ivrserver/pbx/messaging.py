"""SMS through Asterisk: a SIP MESSAGE over PJSIP, sent with AMI `MessageSend`.

```
Action: MessageSend
Destination: pjsip:customers/sip:+8613812345678@trunk-host:5060   (sms.destination, {number})
From: 1860                                                       (a plain user: the hotline)
Base64Body: <the UTF-8 text, base64>
```

res_pjsip_messaging builds the request from the `customers` endpoint with that Request-URI; a
From that is a plain user becomes `<sip:1860@<transport address>>`. The text always travels as
`Base64Body` (a `Body:` header cannot carry a line break, and base64 keeps every UTF-8 byte of a
Mandarin text away from the AMI framing). Measured on Asterisk 22 with a SIPp phone: the body
arrives byte for byte, `Content-Type: text/plain` (a `Content-Type` message variable is not
applied by MessageSend; SIP's default charset for text is UTF-8).

Asterisk answers `Response: Success` ("Message successfully sent") once res_pjsip_messaging took
the message and handed it to the transport; the phone's own 200 OK (or an error) is not reported
back on AMI. So "sent" here means: accepted by Asterisk for sending.

Outcomes (`MessageOutcome`): sent; not_connected and refused (nothing left Asterisk: a later try
may send); unconfirmed (no answer from Asterisk: the message may have left). MessageSend is never
re-sent by panoramisk after a reconnect (pbx/ami.py lists it as forgettable).
The number and the text are checked (domain/sms.py) before anything is sent; the text is never
logged.
"""

from __future__ import annotations

import base64
import logging

from ivrserver.domain import phone, sms
from ivrserver.pbx.ami import AmiClient, AmiError

log = logging.getLogger("ivrserver.messaging")


class MessageNotSent(Exception):
    """The SMS did not leave: `why` is not_connected or refused (a later try may send it)."""

    def __init__(self, why: str, detail: str = "") -> None:
        super().__init__(f"{why}: {detail}" if detail else why)
        self.why = why


class MessageUnconfirmed(Exception):
    """MessageSend got no answer: the SMS may have left (never send it again for the same key)."""


def destination_for(template: str, number: str) -> str:
    """`template` (sms.destination) with {number} replaced; SmsInvalid for a bad number."""
    return template.replace("{number}", sms.check_number(number))


class AmiMessageSender:
    """The SMS transport over AMI MessageSend (services/sms.SmsService makes it exactly-once)."""

    def __init__(self, ami: AmiClient, *, destination: str, sender: str, timeout: float | None = None) -> None:
        if not destination.startswith("pjsip:") or destination.count("{number}") != 1:
            raise ValueError(f"sms.destination: expected pjsip:…{{number}}…, got {destination!r}")
        if not sender or not all(c in "0123456789+" for c in sender):
            raise ValueError(f"sms.sender: expected digits (and +), got {sender!r}")
        self._ami = ami
        self._destination = destination
        self._sender = sender
        self._timeout = timeout

    async def deliver(self, *, number: str, text: str, key: str = "") -> None:
        """Hand one SMS to Asterisk (`key` is not sent: a SIP MESSAGE has no idempotency key, the
        caller's marker is what stops a second send). SmsInvalid (nothing sent) for a bad number or text;
        MessageNotSent / MessageUnconfirmed as described in the module docstring."""
        destination = destination_for(self._destination, number)
        body = base64.b64encode(sms.check_text(text).encode("utf-8")).decode("ascii")
        fields = {"Destination": destination, "From": self._sender, "Base64Body": body}
        if not self._ami.logged_in:
            raise MessageNotSent("not_connected", "AMI is not connected")
        try:
            await self._ami.action("MessageSend", fields, timeout=self._timeout)
        except AmiError as exc:
            text_of = str(exc)
            if "not connected" in text_of:
                raise MessageNotSent("not_connected", text_of) from None
            if "no response within" in text_of:
                raise MessageUnconfirmed(text_of) from None
            # Asterisk answered Error: the message never left (bad destination, module not loaded)
            log.warning("MessageSend refused", extra={"number": phone.masked(number), "error": text_of[:200]})
            raise MessageNotSent("refused", text_of[:200]) from None
