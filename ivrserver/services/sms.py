"""SMS to customers, exactly once per key (contract: `SmsSender.send(*, number, text, key) -> str`).

```
sms = SmsService(SmsMarkers(redis, keys, kept_seconds=30 * 86400), AmiMessageSender(ami, ...))
await sms.send(number="+8613812345678", text="您的卡将于2027年1月31日到期。", key="reminder:card_expiry:c1:2027-01-31")
# → "sent" | "failed:<why>" (domain/sms.py FAILURES)
```

Before anything is sent the key is claimed in Redis (a Lua SET-if-absent: store/sms.py); the
outcome is recorded on the same marker after. A second send with the same key sends nothing and
answers the recorded outcome ("sent" again for an SMS that went out), or `failed:in_progress`
while the first is still running, or `failed:unconfirmed` when an instance died mid-send (it may
have left: never sent twice). Only failures where nothing left (`not_connected`, `refused`) let a
later send with the key try again. Invalid numbers and texts are refused before the claim.

Two transports: `AmiMessageSender` (pbx/messaging.py: Asterisk MessageSend over PJSIP) and
`GatewaySms` (the webhook event `sms.send` to the operator's SMS gateway, durable and idempotent
on the key: services/webhooks.py). The text is never logged; numbers are logged masked.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from ivrserver.domain import phone, sms
from ivrserver.domain.webhooks import check_key, routed
from ivrserver.metrics import Metrics
from ivrserver.pbx.messaging import MessageNotSent, MessageUnconfirmed
from ivrserver.services.webhooks import Webhooks
from ivrserver.store.sms import SmsMarkers

log = logging.getLogger("ivrserver.sms")

GATEWAY_EVENT = "sms.send"
# A "sending" marker older than this belongs to an instance that died mid-send.
STALE_SENDING_SECONDS = 60.0


class SmsTransport(Protocol):
    """Hands one SMS over (`key`: the SMS key, for a transport that passes it on); raises
    SmsInvalid, MessageNotSent (nothing left) or MessageUnconfirmed (it may have left)."""

    async def deliver(self, *, number: str, text: str, key: str) -> None: ...


class GatewaySms:
    """The SMS transport through the operator's gateway: the webhook event `sms.send` with
    {"number", "text", "sender"}; Idempotency-Key `sms:<key>` (or `sms:sha256-<hex>` for a key that
    is not plain ASCII or too long). Needs an endpoint subscribed to sms.send (webhooks.yaml)."""

    def __init__(self, webhooks: Webhooks, *, sender: str) -> None:
        self._webhooks = webhooks
        self._sender = sender

    @staticmethod
    def gateway_key(key: str) -> str:
        candidate = f"sms:{key}"
        try:
            return check_key(candidate)
        except ValueError:
            return "sms:sha256-" + hashlib.sha256(key.encode("utf-8")).hexdigest()

    def configured(self) -> bool:
        """Whether some webhook endpoint takes sms.send."""
        return bool(routed(self._webhooks.endpoints, GATEWAY_EVENT))

    async def deliver(self, *, number: str, text: str, key: str) -> None:
        number = sms.check_number(number)
        text = sms.check_text(text)
        if not self.configured():
            raise MessageNotSent("not_connected", "no webhook endpoint takes sms.send")
        try:
            await self._webhooks.publish(GATEWAY_EVENT, {"number": number, "text": text, "sender": self._sender},
                                         key=self.gateway_key(key))
        except (OSError, ConnectionError) as exc:  # Redis unreachable: nothing queued
            raise MessageNotSent("not_connected", type(exc).__name__) from None


class SmsService:
    """`SmsSender` of contract §3: exactly once per key, over one transport (or none: disabled)."""

    def __init__(self, markers: SmsMarkers, transport: SmsTransport | None, *,
                 instance: str = "ivrserver", clock: Callable[[], float] = time.time,
                 metrics: Metrics | None = None) -> None:
        self.markers = markers
        self.transport = transport
        self.instance = instance
        self.clock = clock
        self.metrics = metrics

    async def send(self, *, number: str, text: str, key: str) -> str:
        """Send `text` to `number` once for `key`: "sent" or "failed:<why>"."""
        try:
            number = sms.check_number(number)
            sms.check_text(text)
        except sms.SmsInvalid as exc:
            log.warning("SMS not sent: %s", exc.why, extra={"number": _masked(number)})
            return sms.failed(exc.why)
        if not key or len(key) > 200:
            raise ValueError("key: expected 1..200 characters")
        if self.transport is None:
            return sms.failed("disabled")
        now = self.clock()
        existing = await self.markers.claim(key, now=now, instance=self.instance)
        if existing is not None:
            return self._earlier(existing, now)
        outcome, retry = await self._deliver(number, text, key)
        await self.markers.finish(key, outcome, retry=retry)
        if self.metrics is not None:
            self.metrics.child(self.metrics.sms, outcome).inc()
        log.info("SMS %s", outcome, extra={"number": phone.masked(number), "sms_key": key[:80]})
        return outcome

    async def _deliver(self, number: str, text: str, key: str) -> tuple[str, bool]:
        """(outcome, retry: nothing left so a later send may try again)."""
        assert self.transport is not None
        try:
            await self.transport.deliver(number=number, text=text, key=key)
        except sms.SmsInvalid as exc:
            return sms.failed(exc.why), True
        except MessageNotSent as exc:
            return sms.failed(exc.why), True
        except MessageUnconfirmed:
            return sms.failed("unconfirmed"), False
        except Exception:  # unknown: it may have left — recorded, never sent twice
            log.exception("SMS transport failed", extra={"number": phone.masked(number)})
            return sms.failed("unconfirmed"), False
        return sms.SENT, False

    def _earlier(self, marker: str, now: float) -> str:
        """The answer for a key sent (or being sent) before."""
        state, _, rest = marker.partition(" ")
        if state == "done" and rest:
            return rest
        if state == "sending":
            started = rest.split(" ", 1)[0]
            try:
                age = now - float(started)
            except ValueError:
                age = STALE_SENDING_SECONDS
            return sms.failed("in_progress" if age < STALE_SENDING_SECONDS else "unconfirmed")
        return sms.failed("unconfirmed")

    async def outcome(self, key: str) -> str | None:
        """What happened to `key` (the marker's value: "done sent", "sending …"), or None."""
        return await self.markers.state(key)


def _masked(number: object) -> str:
    return phone.masked(number) if isinstance(number, str) and number.isprintable() else "?"
