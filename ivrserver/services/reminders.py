"""Reminders from data: the scanner over customers' attributes and the posted events (issue 18 §4).

```
reminders = ReminderService(ReminderStore(redis, keys, kept_seconds=90 * 86400), notices, rules,
                            instance="ivr-a", interval=3600)
supervise("reminder-scanner", reminders.run)           # every interval: one walk (one instance)
customers.on_saved.append(reminders.customer_changed)   # a saved customer is looked at at once
await reminders.post_event("c1", "roaming_started", "evt-42", at=time.time())
```

The rules (domain/reminders.py) decide; this module reads customers and what was handled before,
and calls the notice service (`schedule` / `cancel`, contract §3) — which owns consent, hours,
budget and the call or SMS itself and is idempotent on the notice key.

Exactly once per (customer, rule, value): for an attribute rule the value handled is remembered
per customer (`reminders:handled:{id}`) after its notice was scheduled; for an event the key is
marked fired after. Scheduling first and remembering after means a crash in between schedules the
same key again, which the notice service answers `existing`: nothing is lost, nothing is doubled —
also when two instances look at the same customer at the same time. A renewed card (a new date)
cancels the old date's notice before the new one is scheduled; a removed attribute cancels it.

The walk reads customers in pages (reminders.page_size) by id with a pause between pages
(page_pause), never blocking the call path; one instance walks per interval (a lease). A failure
on one customer is logged with its id and counted, the walk goes on, and the next walk retries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ivrserver.domain import reminders as rm
from ivrserver.domain.model import Customer
from ivrserver.domain.notices import NoticeInvalid, NoticeRequest, NoticeResult
from ivrserver.metrics import Metrics
from ivrserver.store.reminders import ReminderStore

log = logging.getLogger("ivrserver.reminders")

Audit = Callable[..., Awaitable[object]]  # store/audit.AuditLog.append
CHANGED_QUEUE = 10_000  # customers saved and not yet looked at, at most (the walk catches the rest)
YIELD_EVERY = 20  # customers checked between two yields to the event loop


class NoticeScheduler(Protocol):
    """The part of services/notices.NoticeService reminders use (contract §3)."""

    async def schedule(self, req: NoticeRequest) -> NoticeResult: ...

    async def cancel(self, key: str, *, reason: str) -> bool: ...


class UnknownEvent(ValueError):
    """A posted event no rule reacts to; `known` lists the event names the rules know."""

    def __init__(self, event: str, known: tuple[str, ...]) -> None:
        super().__init__("unknown event")
        self.event = event
        self.known = known


class NoSuchCustomer(LookupError):
    pass


@dataclass
class ScanStats:
    customers: int = 0
    scheduled: int = 0
    cancelled: int = 0
    skipped: int = 0
    failed: int = 0
    walked: bool = False  # False: another instance holds this interval's walk

    def add(self, other: ScanStats) -> None:
        self.customers += other.customers
        self.scheduled += other.scheduled
        self.cancelled += other.cancelled
        self.skipped += other.skipped
        self.failed += other.failed


@dataclass(frozen=True)
class Fired:
    """What one rule did with a posted event (the REST answer lists these)."""

    rule: str
    key: str
    status: str  # scheduled | deferred | sms_sent | existing | refused | skipped
    reason: str = ""
    notice_id: str | None = None
    not_before: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "key": self.key, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.notice_id is not None:
            out["notice_id"] = self.notice_id
        if self.not_before is not None:
            out["not_before"] = self.not_before
        return out


def notice_request(reminder: rm.Reminder) -> NoticeRequest:
    return NoticeRequest(key=reminder.key, customer_id=reminder.customer_id, kind=reminder.kind,
                         text=dict(reminder.text), channel=reminder.channel, not_before=reminder.not_before,
                         expires_at=reminder.expires_at)


class ReminderService:
    def __init__(self, store: ReminderStore, notices: NoticeScheduler, rules: rm.Rules, *,
                 instance: str = "ivrserver", interval: float = 3600.0, page_size: int = 100,
                 page_pause: float = 0.05, horizon: float | None = 2 * 86400.0,
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None,
                 audit: Audit | None = None) -> None:
        """`horizon` (seconds): attribute reminders are scheduled once they are due within it (the
        notice, its synthesized message and its place in the budget are made close to the time,
        not a month ahead); None: at once."""
        self.store = store
        self.notices = notices
        self.rules = rules
        self.instance = instance
        self.interval = interval
        self.page_size = page_size
        self.page_pause = page_pause
        self.horizon = horizon
        self.clock = clock
        self.metrics = metrics
        self.audit = audit
        self._changed: asyncio.Queue[str] = asyncio.Queue(maxsize=CHANGED_QUEUE)

    # ------------------------------------------------------------------ attribute rules
    async def _schedule(self, reminder: rm.Reminder) -> NoticeResult | None:
        """Schedule through the notice service; None when it refused the request as invalid
        (logged: a rule's text the notice service will not take)."""
        try:
            return await self.notices.schedule(notice_request(reminder))
        except NoticeInvalid as exc:
            log.warning("reminder %s for customer %s not schedulable: %s", reminder.rule, reminder.customer_id,
                        "; ".join(f"{k}: {v}" for k, v in exc.errors.items()))
            return None

    async def check_customer(self, customer: Customer, handled: Mapping[str, str] | None = None) -> ScanStats:
        """Apply every attribute rule to one customer (`handled`: what was handled before, read here
        when not given)."""
        stats = ScanStats(customers=1)
        rules = self.rules.attributes  # once: a reload swaps `self.rules` whole, this check keeps its set
        if not rules:
            return stats
        if handled is None:
            handled = (await self.store.handled([customer.id]))[customer.id]
        now = self.clock()
        for rule in rules:
            step = rm.attribute_step(rule, customer, handled.get(rule.name), now, self.horizon)
            if step is None:
                continue
            moot = f"moot: {rule.attribute} changed"
            if step.cancel is not None and await self.notices.cancel(step.cancel, reason=moot):
                stats.cancelled += 1
                log.info("reminder %s for customer %s cancelled: %s changed", rule.name, customer.id, rule.attribute)
            if step.schedule is not None:
                result = await self._schedule(step.schedule)
                if result is not None:
                    stats.scheduled += 1
                    log.info("reminder %s for customer %s: %s%s", rule.name, customer.id, result.status,
                             f" ({result.reason})" if result.reason else "")
            elif step.skipped is not None and step.skipped.why in ("invalid", "past"):
                stats.skipped += 1
            await self.store.set_handled(customer.id, rule.name, step.handled)
        return stats

    async def check_customer_id(self, customer_id: str) -> ScanStats:
        customer = await self.store.get_customer(customer_id)
        return await self.check_customer(customer) if customer is not None else ScanStats()

    async def _page(self, page: list[Customer]) -> ScanStats:
        stats = ScanStats()
        handled = await self.store.handled([c.id for c in page])
        for n, customer in enumerate(page):
            if n and not n % YIELD_EVERY:
                await asyncio.sleep(0)  # calls on this instance wait for at most YIELD_EVERY checks
            try:
                stats.add(await self.check_customer(customer, handled[customer.id]))
            except Exception:  # this customer again at the next walk; the others go on
                stats.failed += 1
                log.exception("reminders for customer %s failed", customer.id)
        return stats

    async def scan_once(self, *, force: bool = False) -> ScanStats:
        """One walk over every customer, unless another instance took this interval's walk."""
        stats = ScanStats()
        if not self.rules.attributes:
            return stats
        if not force and not await self.store.take_scan(self.instance, self.interval):
            return stats
        stats.walked = True
        last = ""
        while True:
            page = await self.store.customers_after(last, self.page_size)
            if not page:
                break
            stats.add(await self._page(page))
            last = page[-1].id
            if not force:  # a walk longer than the interval keeps its lease: no second walk joins
                await self.store.extend_scan(self.instance, self.interval)
            if self.page_pause:
                await asyncio.sleep(self.page_pause)
        log.info("reminders walk: %d customers, %d scheduled, %d cancelled, %d skipped, %d failed",
                 stats.customers, stats.scheduled, stats.cancelled, stats.skipped, stats.failed)
        self._count(stats)
        return stats

    def _count(self, stats: ScanStats) -> None:
        if self.metrics is None:
            return
        for result in ("scheduled", "cancelled", "skipped", "failed"):
            if getattr(stats, result):
                self.metrics.child(self.metrics.reminders, result).inc(getattr(stats, result))

    def customer_changed(self, customer_id: str) -> None:
        """A customer was saved (REST, import): look at them soon. Never blocks; when the queue is
        full the walk catches them."""
        with contextlib.suppress(asyncio.QueueFull):
            self._changed.put_nowait(customer_id)

    async def run(self) -> None:
        """Walk every interval; in between, look at saved customers as they come (supervised)."""
        loop = asyncio.get_running_loop()
        next_walk = loop.time()
        while True:
            if loop.time() >= next_walk:
                await self.scan_once()
                next_walk = loop.time() + self.interval
            try:
                async with asyncio.timeout(max(0.0, next_walk - loop.time())):
                    customer_id = await self._changed.get()
            except TimeoutError:
                continue
            try:
                self._count(await self.check_customer_id(customer_id))
            except Exception:  # the next walk retries this customer
                self._count(ScanStats(failed=1))
                log.exception("reminders for saved customer %s failed", customer_id)

    # ------------------------------------------------------------------ posted events
    async def post_event(self, customer_id: str, event: str, event_id: str, at: float, *,
                         who: str = "system", role: str = "system", source: str = "") -> list[Fired]:
        """Every rule for `event` (UnknownEvent when none), once per (customer, rule, event id).
        Audited (what customer.event, target the customer) when an audit log is attached."""
        rules = self.rules.for_event(event)
        if not rules:
            raise UnknownEvent(event, self.rules.event_names())
        customer = await self.store.get_customer(customer_id)
        if customer is None:
            raise NoSuchCustomer(customer_id)
        now = self.clock()
        if self.audit is not None:
            await self.audit(who=who, role=role, what="customer.event", target=customer.id,
                             why=f"{event} {event_id}", allowed=True, at=now, source=source)
        out = []
        for rule in rules:
            key = rm.reminder_key(rule.name, customer.id, event_id)
            if await self.store.fired(key):
                out.append(Fired(rule.name, key, "existing"))
                continue
            planned = rm.event_reminder(rule, customer, event_id, at, now)
            if isinstance(planned, rm.Skipped):
                out.append(Fired(rule.name, key, "skipped", reason=planned.why))
                continue
            result = await self._schedule(planned)
            if result is None:
                out.append(Fired(rule.name, key, "refused", reason="invalid"))
                continue
            await self.store.mark_fired(key, str(result.status))
            log.info("event %s for customer %s: rule %s %s", event, customer.id, rule.name, result.status)
            out.append(Fired(rule.name, key, str(result.status), reason=result.reason, notice_id=result.notice_id,
                             not_before=planned.not_before))
        return out
