"""Proactive notices: schedule (exactly once per key), cancel when moot, follow the call's outcome.

```
notices = NoticeService(NoticeStore(redis, keys), callback_store, messages, NoticePolicy(), calling_policy,
                        customer=customer_lookup(redis, keys), cases=case_service, sms=sms_sender)
result = await notices.schedule(NoticeRequest(key="case-result:K-7:1700-0", customer_id="c1",
                                              kind="case_result", text={"en": "…", "zh": "…"}, case_id="K-7"))
await notices.cancel("case-result:K-7:1700-0", reason="case_reopened")
```

A notice call is a customer-first callback (mode customer_first, `notice` = its kinds), so the
callback scheduler's guarantees hold for it: a lease per placement, a placed marker per attempt,
ChannelId "<call id>-<attempt>". Its `prompt` is the rendered message (services/messages.py, in the
customer's language) that [ivrserver-notify] plays; notices of one customer batched into one call
are joined with '&' and played in turn. The rules (consent, do-not-call, hours, budget, batching)
are domain/notices.py's; this module looks up what they need and writes what they decide, under a
short per-customer lock so two instances never both create a call for the same batch.

Before it dials: the placer asks `before_dial(callback, at)` (under its lease, before the placed
marker) what the customer says now — a notice whose kind lost consent is cancelled
`consent_withdrawn`, one whose expiry comes before the call (waiting for the customer's hours as of
now) fails `expired`; the call goes on with the others, or is cancelled when none is left.

Outcomes: the placer tells `on_placed(callback)` after every dial or give-up; each notice the call
carries gets the outcome (heard / no_answer → retried / failed) on its case (CaseService.note_event,
kind "notice") and in its own record; the notify FastAGI script marks pressed_1 (`pressed`: a
notice not yet marked heard gets heard first, so "press 1" during the message reads heard,
pressed_1 whichever of the two is written first). Every change of a notice is a compare-and-set
(NoticeStore.replace): of two writers racing on one notice exactly one wins and notes its case.
The call itself is a contact record of kind notification (pbx/callback_dialer.py).

Reconcile (`reconcile`, run by `run_reconcile` under the supervisor): an instance that dies between
writing a call's outcome and following it here leaves the notices pending. Every notice call is
watched (NoticeStore open calls, from its due time on); the sweep looks at those due, and once a call
is over for longer than `reconcile_grace` its notices still pending get the outcome on_placed would
have given (domain.notices.settle: heard, failed, cancelled; its call gone → failed call_missing),
each noted on its case once; a connected call is marked done, and the call is then forgotten.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from redis.exceptions import RedisError

from ivrserver.domain import callbacks as cbm
from ivrserver.domain import notices as nm
from ivrserver.domain.callbacks import AttemptOutcome, Callback, CallbackMode, CallbackPolicy, CallbackState
from ivrserver.domain.cases import CaseChange
from ivrserver.domain.model import Customer
from ivrserver.domain.notices import (
    Notice,
    NoticePolicy,
    NoticeRequest,
    NoticeResult,
    NoticeState,
    NoticeStatus,
    Plan,
)
from ivrserver.domain.speech import MessageTemplate, TextError
from ivrserver.services.messages import MessageService
from ivrserver.services.speech import SynthesisError
from ivrserver.store.callbacks import CallbackStore, UpdateResult
from ivrserver.store.notices import NoticeStore

log = logging.getLogger("ivrserver.notices")

ACTOR = "system"
SMS_NOW_SECONDS = 1.0  # an SMS allowed within this long is sent at once, not held
# a notice call waiting longer than this past its due time (the customer's hours changed) is deferred
DEFER_SLACK_SECONDS = 60.0
CustomerOf = Callable[[str], Awaitable[Customer | None]]


class SmsSender(Protocol):
    """Sends one SMS (pbx/messaging.py: Asterisk MessageSend, or the operator's gateway by webhook);
    returns "sent" or "failed:<why>"; exactly once per key."""

    async def send(self, *, number: str, text: str, key: str) -> str: ...


class CaseNotes(Protocol):
    """The part of services/cases.CaseService notices use."""

    async def note_event(self, case_id: str, kind: str, detail: Mapping[str, Any], *, actor: str,
                         why: str = "") -> None: ...


def _escape(text: str) -> str:
    """Plain text as a message template without placeholders."""
    return text.replace("{", "{{").replace("}", "}}")


class NoticeService:
    def __init__(self, store: NoticeStore, calls: CallbackStore, messages: MessageService | None,
                 policy: NoticePolicy, calling: CallbackPolicy, *, customer: CustomerOf,
                 sms: SmsSender | None = None, cases: CaseNotes | None = None,
                 templates: Mapping[str, str] | None = None,
                 call_texts: Mapping[str, Mapping[str, str]] | None = None, on_due: Callable[[], None] | None = None,
                 business_timezone: Callable[[], str] = lambda: "UTC", sms_lease_seconds: float = 60.0,
                 reconcile_grace: float = 120.0, clock: Callable[[], float] = time.time) -> None:
        """`templates`: the case_result text per language ({case}, {result}); `call_texts`: what a
        notice call says after the message, {"press": {language: text}, "bye": {…}} (rendered in
        the message's language; none, or not rendered: Asterisk's stock English); `on_due`: wake this
        instance's callback scheduler when a call is due; `business_timezone`: the company's time
        zone (routing.yaml's), the hours of a number without a customer record whose region has
        no single time zone; `sms_lease_seconds`: how long a scheduled SMS being sent is held by
        one instance (past it another may claim it: the SmsSender's key keeps it sent once);
        `reconcile_grace`: how long a call is over before the reconcile sweep gives its notices the
        outcome nobody followed (on_placed, seconds after the outcome, comes first)."""
        self.store = store
        self.calls = calls
        self.messages = messages
        self.policy = policy
        self.calling = calling
        self.customer = customer
        self.sms = sms
        self.cases = cases
        self.templates = dict(templates or {})
        self.call_texts = {what: dict(texts) for what, texts in (call_texts or {}).items()}
        self.on_due = on_due
        self.business_timezone = business_timezone
        self.sms_lease_seconds = sms_lease_seconds
        self.reconcile_grace = reconcile_grace
        self.clock = clock
        self.sms_results: dict[str, int] = {}  # outcome → count, for the bench and the logs
        # told once per outcome noted "heard" / "sms_sent" of a notice with an incident_id (a
        # pressed_1 always follows a noted heard): services/incidents counts notices delivered
        self.on_delivered: Callable[[str, str], Awaitable[None]] | None = None

    def attach_cases(self, cases: CaseNotes) -> None:
        self.cases = cases

    def attach_sms(self, sms: SmsSender) -> None:
        self.sms = sms

    # ------------------------------------------------------------------ schedule
    async def schedule(self, req: NoticeRequest) -> NoticeResult:
        """Exactly once per key: scheduled (or deferred), sent by SMS, or refused with a reason;
        a key seen before answers `existing` with the notice's state. NoticeInvalid for a bad request."""
        req = nm.validate(req, self.calling.phone_region)
        nid = nm.notice_id(req.key)
        found = await self.store.get(nid)
        if found is not None and not await self._call_missing(found):
            return _existing(found)
        customer = await self.customer(req.customer_id)
        who = nm.recipient(req, customer, self.calling.phone_region, self.business_timezone())
        async with self.store.locked(req.customer_id):
            found = await self.store.get(nid)
            if found is not None:
                if not await self._call_missing(found):
                    return _existing(found)
                log.warning("notice %s: its call was never created (an instance died half-way); making it", nid)
                await self.store.detach(found.call_id or "", nid)
                await self.store.forget(nid)
            now = self.clock()
            facts = nm.Facts(
                number=who.number, preferences=who.preferences, sms_available=self.sms is not None,
                counted=await self.store.counted(req.customer_id, now - self.policy.budget_seconds),
                consent=nm.consents(who.attributes, req.kind, self.policy.default_consent))
            decided = nm.plan(req, facts, self.policy, self.calling, now)
            if decided.channel == "call":
                return await self._by_call(req, nid, who, facts, decided, now)
            return await self._not_by_call(req, nid, who, decided, now)

    async def _call_missing(self, n: Notice) -> bool:
        """A pending call notice whose own call does not exist (its scheduler died in between)."""
        return (n.state in nm.PENDING and n.channel == "call" and n.call_id == nm.call_id_for(n.id)
                and await self.calls.get(n.call_id) is None)

    async def _not_by_call(self, req: NoticeRequest, nid: str, who: nm.Recipient, decided: Plan,
                           now: float) -> NoticeResult:
        if decided.channel == "sms" and who.number:
            if decided.at is not None and decided.at > now + SMS_NOW_SECONDS:
                return await self._hold_sms(req, nid, who, decided, now)
            return await self._send_sms(req, nid, who, decided.reason, now)
        return await self._refuse(req, nid, decided.reason or "refused", now)

    async def _by_call(self, req: NoticeRequest, nid: str, who: nm.Recipient, facts: nm.Facts, decided: Plan,
                       now: float) -> NoticeResult:
        chosen = nm.choose_text(req.text, who.language)
        if chosen is None:  # validate() makes this unreachable
            return await self._refuse(req, nid, "no_text", now)
        language, text = chosen
        sound = await self._render(text, language)
        if sound is None:
            if req.channel == "auto" and self.sms is not None and decided.sms_at is not None:
                return await self._not_by_call(req, nid, who, Plan("sms", at=decided.sms_at, reason="synthesis_failed",
                                                                   latest=decided.latest), now)
            return await self._refuse(req, nid, "synthesis_failed", now)
        notice = Notice(id=nid, key=req.key, customer_id=req.customer_id, kind=req.kind,
                        state=NoticeState.SCHEDULED, created_at=now, text=text, language=language, sound=sound,
                        channel="call", case_id=req.case_id, incident_id=req.incident_id,
                        expires_at=decided.latest, updated_at=now)
        joined = await self._join(notice, req, decided, now)
        if joined is not None:
            return joined
        budgeted = nm.within_budget(decided, req, facts, self.policy, self.calling)
        if budgeted.channel != "call":
            return await self._not_by_call(req, nid, who, budgeted, now)
        return await self._new_call(notice, req, who, budgeted, now)

    async def _render(self, text: str, language: str) -> str | None:
        if self.messages is None:
            log.error("notice not rendered: no speech synthesizer configured")
            return None
        try:
            audio = await self.messages.render(MessageTemplate.parse(_escape(text)), {}, language)
        except (TextError, SynthesisError) as exc:
            log.error("notice message not rendered: %s", exc)
            return None
        return audio.sound

    async def _call_prompts(self, language: str) -> tuple[str, str]:
        """("press 1", "goodbye") of a notice call in the message's language, rendered like the
        message (cached by content: once per text, language and voice); "" for one without a
        text in that language or not rendered (the dialplan then plays its stock English sound)."""
        sounds = []
        for what in ("press", "bye"):
            text = self.call_texts.get(what, {}).get(language, "").strip()
            sounds.append((await self._render(text, language) or "") if text else "")
        return sounds[0], sounds[1]

    async def _join(self, notice: Notice, req: NoticeRequest, decided: Plan, now: float) -> NoticeResult | None:
        """Ride on a pending call of the customer due close to this notice's time (batching)."""
        assert decided.at is not None
        pending = await self.store.pending_calls(req.customer_id)
        for call_id in nm.batch_target(decided.at, req.not_before, pending, self.policy.batch_seconds):
            cb = await self.calls.get(call_id)
            if cb is None or cb.state in cbm.TERMINAL_STATES:
                await self.store.call_settled(req.customer_id, call_id)  # a stale entry
                continue
            if cb.state not in cbm.WAITING_STATES or cb.due_at is None or (
                    decided.latest is not None and cb.due_at > decided.latest):
                continue
            kinds = sorted({*filter(None, cb.notice.split(",")), notice.kind})
            carried = dataclasses.replace(
                cb, prompt=nm.batch_prompt([cb.prompt, notice.sound]), notice=",".join(kinds),
                latest=max(cb.latest, decided.latest or cb.latest), updated_at=now, version=cb.version + 1)
            # the notice and its place on the call first: the call may be dialed the moment it carries it
            await self.store.attach(call_id, notice.id, req.customer_id, cb.due_at)
            await self.store.create(dataclasses.replace(notice, call_id=call_id, due_at=cb.due_at))
            if await self.calls.update(carried, expected_version=cb.version, due=cb.due_at) is not UpdateResult.OK:
                await self.store.detach(call_id, notice.id)
                await self.store.forget(notice.id)
                continue  # being dialed right now, or changed: try the next one or a call of its own
            log.info("notice %s batched into call %s", notice.id, call_id)
            return NoticeResult(NoticeStatus.SCHEDULED, notice.id, reason="batched", call_id=call_id,
                                due_at=cb.due_at, state=NoticeState.SCHEDULED, channel="call")
        return None

    async def _new_call(self, notice: Notice, req: NoticeRequest, who: nm.Recipient, decided: Plan,
                        now: float) -> NoticeResult:
        assert decided.at is not None and decided.latest is not None
        call_id = nm.call_id_for(notice.id)
        if not who.number:
            return await self._refuse(req, notice.id, "no_phone", now)
        request = cbm.CallbackRequest(
            customer_id=who.id, number=who.number, earliest=decided.at, latest=max(decided.latest, decided.at + 60),
            tier=who.tier, reason=f"notice {req.kind}", case_id=req.case_id, context=notice.text,
            mode=CallbackMode.CUSTOMER_FIRST, prompt=notice.sound)
        cb = cbm.new_callback(request, call_id, now, cbm.merged_preferences(request, who.preferences),
                              requested_by="notices")
        press, bye = await self._call_prompts(notice.language)
        try:
            cb = cbm.schedule(dataclasses.replace(cb, notice=req.kind, press_prompt=press, bye_prompt=bye),
                              self.calling, now)
        except cbm.RequestInvalid as exc:
            return await self._refuse(req, notice.id, "no_calling_hours", now, detail=str(exc))
        due = cb.due_at if cb.due_at is not None else decided.at
        # the notice, what its call carries and the budget first: the call may be dialed (by any
        # instance) the moment it exists, and its outcome must find the notice. An instance dying
        # before the call is created leaves a notice without its call: the key's next schedule
        # makes it (schedule → _call_missing).
        await self.store.attach(call_id, notice.id, who.id, due)
        await self.store.create(dataclasses.replace(notice, call_id=call_id, due_at=due,
                                                    reason="budget" if decided.deferred else ""))
        await self.store.count(who.id, call_id, due, self.policy.budget_seconds)
        if not await self.calls.create(cb):
            log.warning("notice %s: its call %s existed already (an earlier attempt died half-way)", notice.id,
                        call_id)
        if self.on_due is not None:
            self.on_due()
        log.info("notice %s: call %s due at %.0f%s", notice.id, call_id, due, " (budget: deferred)"
                 if decided.deferred else "")
        return NoticeResult(NoticeStatus.DEFERRED if decided.deferred else NoticeStatus.SCHEDULED, notice.id,
                            reason=decided.reason, call_id=call_id, due_at=due, state=NoticeState.SCHEDULED,
                            channel="call")

    def _sms_notice(self, req: NoticeRequest, nid: str, who: nm.Recipient, now: float) -> Notice:
        chosen = nm.choose_text(req.text, who.language)
        language, text = chosen if chosen is not None else ("", "")
        return Notice(id=nid, key=req.key, customer_id=req.customer_id, kind=req.kind, state=NoticeState.SCHEDULED,
                      created_at=now, text=text, language=language, channel="sms", case_id=req.case_id,
                      incident_id=req.incident_id, expires_at=req.expires_at, updated_at=now,
                      number=who.number or "")

    async def _hold_sms(self, req: NoticeRequest, nid: str, who: nm.Recipient, decided: Plan,
                        now: float) -> NoticeResult:
        """An SMS outside the recipient's allowed hours waits for them: the notices' SMS scheduler
        (run_sms) sends it when due, exactly once."""
        assert decided.at is not None
        notice = dataclasses.replace(self._sms_notice(req, nid, who, now), due_at=decided.at, reason=decided.reason,
                                     expires_at=decided.latest)
        await self.store.create_held_sms(notice, decided.at)
        log.info("notice %s: SMS held until %.0f (allowed hours)", nid, decided.at)
        return NoticeResult(NoticeStatus.SCHEDULED, nid, reason=decided.reason, due_at=decided.at,
                            state=NoticeState.SCHEDULED, channel="sms")

    async def _send_sms(self, req: NoticeRequest, nid: str, who: nm.Recipient, why: str, now: float) -> NoticeResult:
        notice = self._sms_notice(req, nid, who, now)
        done = await self._deliver_sms(notice, why, now)
        await self.store.create(done)
        await self._note(done, "sms_sent" if done.state is NoticeState.SMS_SENT else "failed", reason=done.reason)
        if done.state is NoticeState.SMS_SENT:
            return NoticeResult(NoticeStatus.SMS_SENT, nid, reason=why, state=done.state, channel="sms")
        return NoticeResult(NoticeStatus.REFUSED, nid, reason="sms_failed", state=done.state, channel="sms")

    async def _deliver_sms(self, notice: Notice, why: str, now: float) -> Notice:
        """Send the notice's SMS (exactly once per notice key: the SmsSender's contract) → the
        notice as sent or failed."""
        assert self.sms is not None
        try:
            outcome = await self.sms.send(number=notice.number, text=notice.text, key=notice.key)
        except Exception as exc:  # the sender could not tell: recorded as failed, never silently lost
            log.exception("notice %s: SMS sender raised", notice.id)
            outcome = f"failed:{type(exc).__name__}"
        self.sms_results[outcome] = self.sms_results.get(outcome, 0) + 1
        sent = outcome == "sent"
        state = NoticeState.SMS_SENT if sent else NoticeState.SMS_FAILED
        return dataclasses.replace(notice, state=state, reason=why if sent else outcome, updated_at=now,
                                   outcomes=(*notice.outcomes, (str(state), now)))

    # ------------------------------------------------------------------ held SMS: sent when due
    async def send_due_sms(self, *, limit: int = 100) -> int:
        """Claim the held SMS that are due (and any whose sender's lease ran out) and send each;
        the number claimed. Two instances never claim the same one at once; an instance killed
        mid-send leaves a lease that runs out, and the next claimer's send with the same key
        answers the recorded outcome instead of sending again (SmsSender: exactly once per key)."""
        if self.sms is None:
            return 0
        now = self.clock()
        ids = await self.store.claim_due_sms(now, now + self.sms_lease_seconds, limit)
        if ids:
            await asyncio.gather(*(self._send_held(i) for i in ids))
        return len(ids)

    async def _send_held(self, nid: str) -> None:
        notice = await self.store.get(nid)
        if notice is None or notice.state not in nm.PENDING or notice.channel != "sms":
            await self.store.sms_done(nid)  # cancelled meanwhile (or gone): nothing to send
            return
        now = self.clock()
        if notice.expires_at is not None and notice.expires_at <= now:
            done = dataclasses.replace(notice, state=NoticeState.FAILED, reason="expired", updated_at=now,
                                       outcomes=(*notice.outcomes, ("failed", now)))
        else:
            done = await self._deliver_sms(notice, notice.reason, now)
        await self.store.save(done)
        await self.store.sms_done(nid)
        await self._note(done, "sms_sent" if done.state is NoticeState.SMS_SENT else "failed", reason=done.reason)

    async def run_sms(self, *, poll_interval: float = 1.0) -> None:
        """The notices' SMS scheduler (under the supervisor): sends held SMS when due."""
        while True:
            try:
                claimed = await self.send_due_sms()
            except (OSError, ConnectionError) as exc:  # Redis away: look again next round
                log.error("held SMS not claimed: %s", exc)
                claimed = 0
            if claimed == 0:
                await asyncio.sleep(poll_interval)

    async def _refuse(self, req: NoticeRequest, nid: str, reason: str, now: float, detail: str = "") -> NoticeResult:
        notice = Notice(id=nid, key=req.key, customer_id=req.customer_id, kind=req.kind, state=NoticeState.REFUSED,
                        created_at=now, channel="none", case_id=req.case_id, incident_id=req.incident_id,
                        expires_at=req.expires_at, reason=reason, updated_at=now)
        await self.store.create(notice)
        log.info("notice %s refused: %s%s", nid, reason, f" ({detail})" if detail else "")
        await self._note(notice, "failed", reason=reason)
        return NoticeResult(NoticeStatus.REFUSED, nid, reason=reason, state=NoticeState.REFUSED, channel="none")

    # ------------------------------------------------------------------ cancel (moot)
    async def cancel(self, key: str, *, reason: str) -> bool:
        """Cancel the notice before its call dials or its held SMS is sent (moot); False when there
        is none pending or its call is being dialed or already went out (or its SMS is being sent).
        A batched call goes on with the other notices."""
        nid = nm.notice_id(key)
        found = await self.store.get(nid)
        if found is None or found.state not in nm.PENDING:
            return False
        async with self.store.locked(found.customer_id):
            notice = await self.store.get(nid)
            if notice is None or notice.state not in nm.PENDING:
                return False
            if notice.call_id is not None and not await self._take_off_call(notice, reason):
                return False
            if notice.channel == "sms" and not await self.store.sms_cancel(nid):
                return False  # being sent right now
            now = self.clock()
            done = dataclasses.replace(notice, state=NoticeState.CANCELLED, reason=reason[:200], updated_at=now,
                                       outcomes=(*notice.outcomes, ("cancelled", now)))
            await self.store.save(done)
        await self._note(done, "cancelled", reason=reason[:200])
        log.info("notice %s cancelled: %s", nid, reason[:200])
        return True

    async def _take_off_call(self, notice: Notice, reason: str) -> bool:
        assert notice.call_id is not None
        cb = await self.calls.get(notice.call_id)
        if cb is None or cb.state in cbm.TERMINAL_STATES:
            return True
        if cb.state not in cbm.WAITING_STATES:
            return False  # dialing or connected: too late
        others = await self.store.get_many(i for i in await self.store.call_notices(cb.id) if i != notice.id)
        others = [n for n in others if n.state in nm.PENDING]
        now = self.clock()
        if others:
            kept = dataclasses.replace(cb, prompt=nm.batch_prompt([n.sound for n in sorted(others, key=_order)]),
                                       notice=",".join(sorted({n.kind for n in others})), updated_at=now,
                                       version=cb.version + 1)
            if await self.calls.update(kept, expected_version=cb.version, due=cb.due_at) is not UpdateResult.OK:
                return False
        else:
            gone = cbm.cancel(cb, now, f"notice moot: {reason[:100]}")
            if await self.calls.update(gone, expected_version=cb.version, due=None) is not UpdateResult.OK:
                return False
            if cb.attempts == 0:
                await self.store.uncount(cb.customer_id, cb.id)  # never dialed: the budget is given back
            await self.store.call_settled(cb.customer_id, cb.id)
        await self.store.detach(cb.id, notice.id)
        return True

    # ------------------------------------------------------------------ the last look before it dials
    async def before_dial(self, cb: Callback, at: float) -> Callback:
        """The placer's look at a notice call it holds the lease of, about to dial at `at` (now, or
        the next opening of the customer's hours as of now when it has to wait): the call as it
        goes — unchanged when every notice on it is still wanted, without the notices no longer
        wanted (consent for their kind withdrawn → cancelled `consent_withdrawn`; their own expiry
        before `at` → failed `expired`; each noted on its case), or cancelled when none is left.
        A call that has to wait notes `deferred` (and the new time) on the notices it keeps.

        Cheap on the common path: one read of the customer; the notices are read only when a kind
        on the call lost consent, the call waits past its due time, or it is a retry (a notice's
        own expiry may have passed). No lock: the placer's lease keeps every other writer off the
        call (a cancel or a batch join meanwhile is refused and retried on their side), and each
        notice changes by compare-and-set. The notices end first, then the placer writes the call:
        an instance dying in between leaves ended notices on a pending call, which the next look
        takes off (they are not pending)."""
        if not cb.notice:
            return cb
        customer = await self.customer(cb.customer_id)
        attributes: Mapping[str, str] = customer.attributes if customer is not None else {}
        refused = [k for k in cb.notice.split(",") if k and not nm.consents(attributes, k, self.policy.default_consent)]
        deferred = cb.due_at is not None and at > cb.due_at + DEFER_SLACK_SECONDS
        if not refused and not deferred and cb.attempts == 0:
            return cb
        notices = await self.store.get_many(await self.store.call_notices(cb.id))
        look = nm.look_before_dial(cb, notices, attributes, self.policy.default_consent, at)
        for n, s in look.drop:
            detail: dict[str, Any] = {"attempt": s.attempt, "reason": s.reason, "before_dial": True}
            await self._change(n, lambda n, t, s=s: nm.settled(n, s, t), s.outcome, **detail)
            await self.store.detach(cb.id, n.id)
            log.info("notice %s taken off call %s before it dials: %s", n.id, cb.id, s.reason)
        now = self.clock()
        if not look.prompt:
            log.info("notice call %s cancelled before it dials: %s", cb.id, look.reason)
            return cbm.cancel(cb, now, f"notice moot: {look.reason}")
        if deferred:
            for n in look.keep:
                await self._change(n, lambda n, t: dataclasses.replace(n, due_at=at, updated_at=t,
                                                                       outcomes=(*n.outcomes, ("deferred", t))),
                                   "deferred", reason="calling_hours", due_at=at)
            await self.store.attach_due(cb.id, cb.customer_id, at)
        if not look.changed(cb):
            return cb
        first = look.keep[0]
        return dataclasses.replace(cb, prompt=look.prompt, notice=look.kinds, case_id=first.case_id or cb.case_id,
                                   context=first.text or cb.context, updated_at=now, version=cb.version + 1)

    # ------------------------------------------------------------------ the call's outcome
    async def on_placed(self, cb: Callback) -> None:
        """The placer wrote an outcome of a call (or gave up): follow it on every notice it carries."""
        if not cb.notice:
            return
        if cb.state is CallbackState.CANCELLED:
            # cancelled by its last look (before_dial ended its notices): the budget slot goes back
            if cb.attempts == 0:
                await self.store.uncount(cb.customer_id, cb.id)
            await self.store.call_settled(cb.customer_id, cb.id, close=True)
            return
        last = cb.history[-1] if cb.history else None
        if last is not None and last.outcome is AttemptOutcome.ANSWERED:
            await self._follow(cb, NoticeState.HEARD, "heard", {"attempt": last.number})
            if cb.state is CallbackState.CONNECTED:
                # customer-first: the message plays on answer; the call needs nobody's hang-up to be done
                done = cbm.finish(cb, self.clock(), "notice heard")
                if await self.calls.update(done, expected_version=cb.version, due=None) is not UpdateResult.OK:
                    log.warning("notice call %s: not marked done (changed meanwhile)", cb.id)
            await self.store.call_settled(cb.customer_id, cb.id, close=True)
        elif cb.state is CallbackState.RETRY_WAIT:
            outcome = last.outcome.value if last is not None and last.outcome is not None else "no_answer"
            await self._follow(cb, None, "no_answer", {"attempt": cb.attempts, "dial": outcome,
                                                       "retry_at": cb.due_at})
            if cb.due_at is not None:
                await self.store.attach_due(cb.id, cb.customer_id, cb.due_at)
        elif cb.state is CallbackState.FAILED:
            await self._follow(cb, NoticeState.FAILED, "failed", {"attempt": cb.attempts, "reason": cb.final_reason})
            if cb.attempts == 0:
                await self.store.uncount(cb.customer_id, cb.id)
            await self.store.call_settled(cb.customer_id, cb.id, close=True)

    async def _follow(self, cb: Callback, state: NoticeState | None, outcome: str, detail: Mapping[str, Any]) -> None:
        notices = await self.store.get_many(await self.store.call_notices(cb.id))
        for n in notices:
            if state is NoticeState.HEARD and not nm.carried(n, cb):
                # attached by an instance that died before the call carried it: never played
                await self._change(n, lambda n, now: _outcome(n, NoticeState.FAILED, "failed", now, "not_carried"),
                                   "failed", attempt=cb.attempts, reason="not_carried")
                continue

            def follow(n: Notice, now: float) -> Notice:
                return dataclasses.replace(n, state=state or n.state, updated_at=now,
                                           due_at=cb.due_at if state is None else n.due_at,
                                           reason=str(detail.get("reason", "")) if state is NoticeState.FAILED
                                           else n.reason, outcomes=(*n.outcomes, (outcome, now)))
            await self._change(n, follow, outcome, **{k: v for k, v in detail.items() if v is not None})

    async def _change(self, n: Notice, change: Callable[[Notice, float], Notice], outcome: str,
                      **detail: Any) -> Notice | None:
        """Apply `change` to a pending notice by compare-and-set, re-reading it when another writer
        got there first; the winner notes `outcome` on the case (once). None when the notice is not
        pending (any more: cancelled, or already told by another writer) or gone."""
        found: Notice | None = n
        for _ in range(8):
            if found is None or found.state not in nm.PENDING:
                return None
            changed = change(found, self.clock())
            if await self.store.replace(found, changed):
                await self._note(changed, outcome, **detail)
                return changed
            found = await self.store.get(n.id)
        log.warning("notice %s: %s not written (changed concurrently too often)", n.id, outcome)
        return None

    async def pressed(self, call_id: str) -> list[Notice]:
        """The customer pressed 1 on this notice call: every notice it carries is pressed_1. The
        press may come during the message, before the placer's answered outcome reaches a notice:
        such a notice is marked heard (the call was answered) first, in the same write."""
        out = []
        attempt: int | None = None
        for n in await self.store.get_many(await self.store.call_notices(call_id)):
            if n.state in (NoticeState.SCHEDULED, NoticeState.HEARD):
                if n.state is NoticeState.SCHEDULED and attempt is None:
                    cb = await self.calls.get(call_id)
                    attempt = cb.attempts if cb is not None else 0
                n = await self._press(n, attempt or 0)
            out.append(n)
        return sorted(out, key=_order)

    async def _press(self, n: Notice, attempt: int) -> Notice:
        found: Notice | None = n
        for _ in range(8):
            if found is None or found.state not in (NoticeState.SCHEDULED, NoticeState.HEARD):
                return found or n
            now = self.clock()
            heard = found.state is NoticeState.SCHEDULED
            outcomes = (*found.outcomes, *((("heard", now),) if heard else ()), ("pressed_1", now))
            changed = dataclasses.replace(found, state=NoticeState.PRESSED_1, updated_at=now, outcomes=outcomes)
            if await self.store.replace(found, changed):
                if heard:
                    await self._note(changed, "heard", attempt=attempt)
                await self._note(changed, "pressed_1")
                return changed
            found = await self.store.get(n.id)
        log.warning("notice %s: pressed_1 not written (changed concurrently too often)", n.id)
        return found or n

    # ------------------------------------------------------------------ reconcile
    async def reconcile(self, *, batch: int = 200, max_batches: int = 50) -> int:
        """One sweep: look at the watched notice calls due for longer than the grace, give every
        notice whose call is over the outcome nobody followed, mark a connected call done, forget
        the calls that are settled; the number of notices settled. Safe on every instance at once
        and next to on_placed: each notice changes once (compare-and-set). Every call looked at is
        closed or watched again from now or later, so each batch takes new ones."""
        now = self.clock()
        count = 0
        for _ in range(max_batches):
            ids = await self.store.open_calls(now - self.reconcile_grace, batch)
            for call_id in ids:
                count += await self._reconcile_call(call_id, now)
            if len(ids) < batch:
                break
        return count

    async def _reconcile_call(self, call_id: str, now: float) -> int:
        cb = await self.calls.get(call_id)
        notices = await self.store.get_many(await self.store.call_notices(call_id))
        review = nm.review_call(cb, notices, now, self.reconcile_grace)
        count = 0
        for n, s in review.settle:
            detail: dict[str, Any] = {"attempt": s.attempt, "reconciled": True}
            if s.reason and s.state is not NoticeState.HEARD:
                detail["reason"] = s.reason
            if await self._change(n, lambda n, t, s=s: nm.settled(n, s, t), s.outcome, **detail) is not None:
                count += 1
                log.warning("notice %s: %s by the reconcile sweep (its call %s was %s; nobody followed it)",
                            n.id, s.outcome, call_id, cb.state.value if cb is not None else "gone")
        if review.finish_call and cb is not None:
            done = cbm.finish(cb, now, "notice heard")
            if await self.calls.update(done, expected_version=cb.version, due=None) is not UpdateResult.OK:
                log.warning("notice call %s: not marked done by the sweep (changed meanwhile)", cb.id)
        customer = cb.customer_id if cb is not None else next((n.customer_id for n in notices), None)
        if review.closed:
            if customer is not None and review.give_back_budget:
                await self.store.uncount(customer, call_id)
            if customer is not None:
                await self.store.call_settled(customer, call_id, close=True)
            else:
                await self.store.close_call(call_id)
        elif review.look_again_from is not None:
            await self.store.look_again(call_id, review.look_again_from)
        return count

    async def run_reconcile(self, *, interval: float = 30.0) -> None:
        """The reconcile sweep (under the supervisor): every `interval` seconds, until cancelled."""
        while True:
            try:
                settled = await self.reconcile()
            except (OSError, RedisError) as exc:  # Redis away: look again next round
                log.error("notice reconcile sweep failed: %s", exc)
                settled = 0
            if settled:
                log.warning("notice reconcile: %d notices settled that nobody followed", settled)
            await asyncio.sleep(interval)

    async def _note(self, n: Notice, outcome: str, **detail: Any) -> None:
        if n.incident_id and outcome in ("heard", "sms_sent") and self.on_delivered is not None:
            await self.on_delivered(n.incident_id, n.id)
        if self.cases is None or not n.case_id:
            return
        try:
            await self.cases.note_event(n.case_id, "notice", {"notice_id": n.id, "outcome": outcome,
                                                              "kind": n.kind, "call_id": n.call_id, **detail},
                                        actor=ACTOR, why=f"notice {n.kind}: {outcome}")
        except Exception:
            # the notice's own record has the outcome; the case misses one event line
            log.exception("notice %s: outcome %s not noted on case %s", n.id, outcome, n.case_id)

    # ------------------------------------------------------------------ cases
    def case_result_request(self, change: CaseChange) -> NoticeRequest:
        """The case_result notice of a resolved case: its text from the result (the change's why or
        the back office's result, else the case summary), in every language with a template."""
        case = change.case
        result = str(change.detail.get("result") or change.why or case.summary or "")
        values = nm.case_result_values(case.id, result)
        texts = {}
        for language, template in self.templates.items():
            try:
                parsed = MessageTemplate.parse(template)
                texts[language] = parsed.render({k: v for k, v in values.items() if k in parsed.fields})
            except TextError as exc:
                log.error("notices.case_result_%s: %s", language, exc)
        return NoticeRequest(key=case_result_key(case.id, change.event_id), customer_id=case.customer_id,
                             kind="case_result", text=texts or {"en": f"Your case {case.id}: {values['result']}"},
                             case_id=case.id)

    async def on_case_change(self, change: CaseChange) -> None:
        """CaseFollowup handler: resolved → schedule the case_result notice; reopened or closed
        (confirmed with the customer: they know the result already) → cancel the pending one(s)
        as moot, reason case_reopened / case_closed. Idempotent: the notice key is the change's
        event id, and a notice no longer pending is not cancelled again."""
        if change.kind == "resolved":
            result = await self.schedule(self.case_result_request(change))
            log.info("case %s resolved: notice %s %s %s", change.case.id, result.notice_id, result.status.value,
                     result.reason)
        elif change.kind in MOOT_CASE_CHANGES:
            for key in await self.store.case_notice_keys(change.case.id):
                await self.cancel(key, reason=f"case_{change.kind}")


# case changes that make its pending notices moot
MOOT_CASE_CHANGES = frozenset({"reopened", "closed"})


def case_result_key(case_id: str, event_id: str) -> str:
    return f"case-result:{case_id}:{event_id}"


def _order(n: Notice) -> tuple[float, str]:
    return (n.created_at, n.id)


def _outcome(n: Notice, state: NoticeState, outcome: str, now: float, reason: str) -> Notice:
    return dataclasses.replace(n, state=state, updated_at=now, reason=reason, outcomes=(*n.outcomes, (outcome, now)))


def _existing(n: Notice) -> NoticeResult:
    return NoticeResult(NoticeStatus.EXISTING, n.id, reason=n.reason, call_id=n.call_id, due_at=n.due_at, state=n.state,
                        channel=n.channel)


__all__ = ["CaseNotes", "NoticeService", "SmsSender", "case_result_key"]
