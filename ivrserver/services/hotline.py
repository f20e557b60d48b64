"""The inbound hotline call, end to end on the ivrserver side.

Caller ID → caller snapshot (one Redis round trip) → routing decision (VIP / repeat callers skip
the menu) → otherwise the menu → the call context the agent's screen-pop will show. Every step
that fails leaves the dialplan's fallback in charge: the caller still reaches a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ivrserver.domain import menu_engine as e
from ivrserver.domain.contact_tracking import CallFacts
from ivrserver.domain.hashing import Pepper
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import CallerSnapshot, ContactKind, Customer
from ivrserver.domain.routing import Action
from ivrserver.pbx.fastagi import AgiChannel
from ivrserver.services.callbacks import CallbackService
from ivrserver.services.contact_tracker import ContactTracker
from ivrserver.services.customers import identify_by_account
from ivrserver.services.incidents import IncidentService
from ivrserver.services.ivr_call import run_menu
from ivrserver.services.menus import MenuRegistry
from ivrserver.services.routing import RoutingService
from ivrserver.store import call_context, callpath, customers
from ivrserver.store.call_context import CallContext
from ivrserver.store.callpath import RedisPathRecorder
from ivrserver.store.keys import Keys

log = logging.getLogger("ivrserver.hotline")


def path_dicts(path: tuple[e.PathEvent, ...]) -> tuple[dict[str, Any], ...]:
    """The path as JSON-ready dicts without empty fields (for the call context)."""
    # not dataclasses.asdict: it deep-copies every field and was 2 % of a call's CPU
    names = [f.name for f in dataclasses.fields(e.PathEvent)]
    return tuple({n: v for n in names if (v := getattr(p, n)) not in (None, "")} for p in path)


class HotlineService:
    """Handles one FastAGI `hotline` call (register `handle` as the route)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, menus: MenuRegistry, routing: RoutingService,
                 tracker: ContactTracker | None, *, entry: str, retention_days: int, default_country: str = "",
                 callbacks: CallbackService | None = None, snapshot_timeout: float = 0.3,
                 pepper: Pepper | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._keys = keys
        self._menus = menus
        self._entry = entry
        self._routing = routing
        self._tracker = tracker
        self._recorder = RedisPathRecorder(redis, keys, retention_days * 86400)
        self._country = default_country
        self._callbacks = callbacks
        self._pepper = pepper  # keys PIN hashes; without it account + PIN identification is refused
        self._clock = clock
        # A frozen Redis must cost a caller a fraction of a second, not the socket timeout (5 s):
        # the snapshot before the first prompt has its own deadline, and the end-of-call writes
        # wait at most as long (not at all when the snapshot already failed) and finish unawaited.
        self._snapshot_timeout = snapshot_timeout
        self._pending_writes: set[asyncio.Task[None]] = set()
        self._incidents: IncidentService | None = None

    def attach_callbacks(self, callbacks: CallbackService) -> None:
        """The callback service is built after the hotline (it needs the AMI dialer)."""
        self._callbacks = callbacks

    def attach_incidents(self, incidents: IncidentService) -> None:
        """Mass-fault incidents: complaints counted, matching callers hear the announcement."""
        self._incidents = incidents

    def _lookup(self, number: str) -> asyncio.Task[tuple[CallerSnapshot, str, list[str]]]:
        """Start the caller snapshot, the entry announcement and the active incidents: one round
        trip before the first prompt."""
        return asyncio.ensure_future(customers.snapshot_for_call(
            self._redis, self._keys, number, menu=self._entry, default_country=self._country,
            incidents=self._incidents is not None))

    async def _snapshot(self, lookup: asyncio.Task[tuple[CallerSnapshot, str, list[str]]],
                        deadline: float) -> tuple[CallerSnapshot, tuple[str, ...], list[str]] | None:
        """The lookup's result, or None when Redis failed or did not answer by `deadline` (loop time).

        Past the deadline the caller goes on as unknown but the lookup is not cut off: redis-py
        would drop its connection, and under a load spike (Redis slow, not frozen) every late
        lookup reconnecting made the next ones later still. It ends on its own, bounded by the
        client's socket timeout."""
        try:
            async with asyncio.timeout_at(deadline):
                snapshot, raw, active = await asyncio.shield(lookup)
        except TimeoutError:
            lookup.add_done_callback(_consume)
            log.error("caller lookup took longer than %ss; serving the caller as unknown", self._snapshot_timeout)
            return None
        except (RedisError, OSError) as exc:
            # Redis down: the caller is served as unknown (menu, then a human), never dropped.
            log.error("caller lookup failed; serving the caller as unknown", extra={"error": str(exc)})
            return None
        return snapshot, callpath.parse_announcement(raw), active

    async def offer_callback(self, cmd: e.OfferCallback, snapshot: CallerSnapshot, customer_id: str | None) -> bool:
        """"Press 2 to be called back": keep the caller's place in the queue (virtual hold)."""
        if self._callbacks is None or not snapshot.number:
            return False  # withheld number: nothing to call back
        digits = snapshot.number.lstrip("+")
        now = self._clock()
        request: dict[str, object] = {
            "customer_id": customer_id or f"tel-{digits}", "number": digits, "at": now,
            "queue": cmd.queue, "joined_at": now, "priority": cmd.priority, "reason": cmd.reason or "ivr"}
        if customer_id is None:
            # No profile to say when this caller may be called: the business's own time zone (the
            # routing policy's), within the company calling hours the scheduler enforces anyway.
            request.update(timezone=self._routing.policy.timezone, allowed_from="00:00", allowed_until="23:59")
        try:
            cb = await self._callbacks.request(request, requested_by="ivr")
        except Exception as exc:  # refused or store down: the menu says so and offers a human
            log.warning("callback request from the IVR refused", extra={"error": str(exc)})
            return False
        log.info("virtual hold: callback requested", extra={"callback": cb.id, "queue": cmd.queue})
        return True

    async def _identify(self, account: str, pin: str) -> object:
        if self._pepper is None:
            log.warning("identification refused: no pepper configured for PIN hashes")
            return None
        return await identify_by_account(self._redis, self._keys, account, pin, self._clock(), pepper=self._pepper)

    async def handle(self, channel: AgiChannel) -> None:
        started = self._clock()
        version = self._menus.current  # the call keeps this version even if menus reload meanwhile
        context_id = f"c-{uuid.uuid4().hex[:16]}"
        # The caller lookup (one Redis round trip) runs while Asterisk answers the first command,
        # which needs nothing from it: the call-context id, first in the dialplan contract.
        deadline = asyncio.get_running_loop().time() + self._snapshot_timeout
        lookup = self._lookup(channel.request.callerid)
        try:
            await channel.set_variable("IVR_CONTEXT_ID", context_id)
        except BaseException:
            lookup.cancel()
            with contextlib.suppress(BaseException):
                await lookup
            raise
        looked_up = await self._snapshot(lookup, deadline)
        redis_ok = looked_up is not None
        snapshot, announcement, active = looked_up if looked_up is not None else (CallerSnapshot(number=""), (), [])
        customer: Customer | None = snapshot.customer
        incidents = self._incidents
        offer = incidents.offer(snapshot, active) if incidents is not None else None
        if offer is not None and customer is not None and customer.language in offer.prompts:
            offer = dataclasses.replace(offer, prompts={customer.language: offer.prompts[customer.language]},
                                        thanks={k: v for k, v in offer.thanks.items() if k == customer.language})
        await self._report(channel, CallFacts(kind=ContactKind.INBOUND, number=snapshot.number or None,
                                              customer_id=customer.id if customer else None, context_id=context_id),
                           in_ivr=True)
        decision = await self._routing.route(snapshot)
        await self._routing.apply_route(channel, decision, context_id=None)  # the context id is set
        reason = decision.reason
        path: tuple[dict[str, Any], ...] = ()
        recorded: CallPath | None = None
        counters: list[list[str]] = []
        customer_id = customer.id if customer else None
        if decision.action is Action.MENU and self._entry not in version.menus:
            # no valid menu is live (an invalid file at start): no decision, the dialplan's
            # fallback queues the caller in the general queue
            log.warning("no valid menu %r live: caller handed to the dialplan fallback", self._entry)
            reason = f"{reason}; no menu live: dialplan fallback"
            await self._report(channel, CallFacts(routing_reason=reason))
        elif decision.action is Action.MENU:
            outcome = await run_menu(channel, version, snapshot, None, started, menu=self._entry,
                                     announcement=announcement, identify=self._identify,
                                     offer_callback=self.offer_callback, clock=self._clock, incident=offer,
                                     subscribe=(lambda i, c: incidents.subscribe(i, snapshot, c))
                                     if incidents is not None else None)
            if incidents is not None:
                contact = self._tracker.contact_id(channel.request.uniqueid) if self._tracker is not None else None
                counters = incidents.complaint_ops(self._clock(), snapshot, outcome.path, outcome.customer_id,
                                                   contact)
            recorded = CallPath(outcome.call_id, outcome.menu, outcome.version, started, outcome.path)
            path = path_dicts(outcome.path)
            customer_id = outcome.customer_id
            exit_ = outcome.exit
            if exit_ is not None and exit_.reason is e.ExitReason.QUEUE and customer_id and customer is None:
                reason = await self._reroute_identified(channel, customer_id, context_id, reason)
            ivr = e.exit_summary(outcome.path, exit_) if exit_ else f"ivr error {outcome.error}"
            reason = f"{reason}; {ivr}"
            await self._report(channel, CallFacts(
                customer_id=customer_id, routing_reason=reason,
                ivr_step=" > ".join(p["node"] for p in path if p.get("kind") == "enter") or None,
                self_served=e.served_by_ivr(outcome.path, exit_),
                callback_requested=exit_ is not None and exit_.reason is e.ExitReason.CALLBACK))
        else:
            await self._report(channel, CallFacts(routing_reason=reason))
        ctx = CallContext(id=context_id, number=snapshot.number, started_at=started, customer_id=customer_id,
                          routing_reason=reason, menu=self._entry, menu_version=version.version,
                          ivr_path=path, incidents=tuple(incidents.pop_entries(snapshot, active)) if incidents else ())
        # the IVR path, the context and the complaint counters in one round trip, before the
        # dialplan rings an agent; the call waits for it only as long as for the snapshot (not at
        # all if Redis already failed)
        write = asyncio.create_task(self._save(ctx, recorded, counters), name="call-context-write")
        self._pending_writes.add(write)
        write.add_done_callback(self._pending_writes.discard)
        if redis_ok:
            await asyncio.wait([write], timeout=self._snapshot_timeout)
        if not write.done():
            log.warning("call context write still pending after %ss; the call goes on without waiting",
                        self._snapshot_timeout if redis_ok else 0)

    async def _save(self, ctx: CallContext, recorded: CallPath | None, counters: list[list[str]]) -> None:
        try:
            if recorded is not None:
                await self._recorder.record(recorded, context=call_context.as_write(self._keys, ctx),
                                            counters=counters)
            else:
                await call_context.save(self._redis, self._keys, ctx)
        except (RedisError, OSError) as exc:
            log.error("call context and IVR path not saved; the agent's pop will be thin",
                      extra={"error": str(exc)})
        except Exception:  # an unawaited task must not lose its error
            log.exception("call context and IVR path not saved")

    async def close(self, timeout: float = 2.0) -> None:
        """At shutdown: give end-of-call writes still in flight `timeout` seconds, then cancel them."""
        pending = list(self._pending_writes)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _reroute_identified(self, channel: AgiChannel, customer_id: str, context_id: str, reason: str) -> str:
        """Identified by account + PIN on the way to a human: route as if their number had been
        known (a VIP reaches their account manager or the vip queue, not the general one)."""
        try:
            found = await customers.get_customer(self._redis, self._keys, customer_id)
            if found is None or not found.phones:
                return reason
            snapshot = await customers.snapshot_by_number(self._redis, self._keys, found.phones[0],
                                                          default_country=self._country)
            if snapshot.customer is None or snapshot.customer.id != customer_id:
                return reason  # a shared line: keep the menu's choice
            decision = await self._routing.route(snapshot)
        except (RedisError, OSError):
            return reason
        if decision.action is Action.MENU:
            return reason
        await self._routing.apply_route(channel, decision, context_id)
        return f"{reason}; identified by account: {decision.reason}"

    async def _report(self, channel: AgiChannel, facts: CallFacts, *, in_ivr: bool = False) -> None:
        if self._tracker is not None:
            await self._tracker.report(channel.request.uniqueid, facts, in_ivr=in_ivr)


def _consume(task: asyncio.Future[object]) -> None:
    """A lookup nobody waits for any more: retrieve its outcome so no error goes unobserved."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("late caller lookup failed: %s", task.exception())
