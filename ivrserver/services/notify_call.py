"""The `notify` FastAGI script: the customer pressed 1 on a notice call ([ivrserver-notify] runs
`AGI(agi://…/notify?id=<NOTIFY_ID>)`, then [ivrserver-route] executes what this sets).

1. the id (a customer-first call's id) is checked before anything reads it: an unknown or
   malformed id sets nothing, so the dialplan's fallback takes the caller to the general queue;
2. every notice the call carries is marked pressed_1 (on the notice and on its case);
3. the route, as the hotline's case-owner rule decides it: the case owner's phone when they are
   logged in and not paused (then the customer's tier queue), else the tier queue;
4. a call context of kind notification, so the agent's pop shows the customer, the case and that
   this is a notice call-back (what the customer heard), then the dialplan contract variables.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping

import redis.asyncio as aioredis

from ivrserver.domain.callbacks import Callback, CallbackMode
from ivrserver.domain.contact_tracking import CallFacts
from ivrserver.domain.model import Agent, AgentStatus, Case, Customer
from ivrserver.domain.notices import route_to_owner
from ivrserver.pbx.fastagi import AgiChannel
from ivrserver.services.contact_tracker import ContactTracker
from ivrserver.services.notices import NoticeService
from ivrserver.services.routing import RoutingService
from ivrserver.store import call_context
from ivrserver.store.call_context import CallContext
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.keys import Keys

log = logging.getLogger("ivrserver.notify")

CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
CaseOf = Callable[[str], Awaitable[Case | None]]
CustomerOf = Callable[[str], Awaitable[Customer | None]]
StatusesOf = Callable[[Collection[str], float], Awaitable[Mapping[str, AgentStatus]]]


class NotifyCall:
    """Handles one FastAGI `notify` call (register `handle` as the route "notify")."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, calls: CallbackStore, notices: NoticeService,
                 routing: RoutingService, *, customer: CustomerOf, case: CaseOf | None, statuses: StatusesOf,
                 tracker: ContactTracker | None = None, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._keys = keys
        self._calls = calls
        self._notices = notices
        self._routing = routing
        self._customer = customer
        self._case = case
        self._statuses = statuses
        self._tracker = tracker
        self._clock = clock

    async def handle(self, channel: AgiChannel) -> None:
        raw = channel.request.query.get("id", "")
        if not CALL_ID.match(raw):
            log.warning("notify: malformed id; the dialplan's fallback queues the caller")
            return
        cb = await self._calls.get(raw)
        if cb is None or cb.mode is not CallbackMode.CUSTOMER_FIRST:
            log.warning("notify: no notice call %s; the dialplan's fallback queues the caller", raw)
            return
        notices = await self._notices.pressed(cb.id) if cb.notice else []
        case_id = cb.case_id or next((n.case_id for n in notices if n.case_id), None)
        case = await self._case(case_id) if case_id and self._case is not None else None
        customer = await self._customer(cb.customer_id)
        owner = case.owner_agent if case is not None else cb.preferred_agent
        agent: Agent | None = self._routing.agent_defs.get(owner) if owner else None
        now = self._clock()
        status = (await self._statuses([owner], now)).get(owner) if owner and agent else None
        policy = self._routing.policy
        route = route_to_owner(owner, status, agent.endpoint if agent else None,
                               policy.tier_queue(customer.tier.value if customer else None), policy.ring_seconds,
                               case_id)
        heard = " / ".join(n.text for n in notices if n.text) or cb.context
        context_id = f"n-{uuid.uuid4().hex[:16]}"
        ctx = CallContext(
            id=context_id, number=cb.number, started_at=now, kind="notification", customer_id=cb.customer_id,
            routing_reason=route.reason, menu="notify",
            callback=_pop_entry(cb, case_id, owner, heard))
        await call_context.save(self._redis, self._keys, ctx)
        await self._routing.apply_route(channel, route, context_id)
        log.info("notify: call %s pressed 1 -> %s", cb.id, route.action.value,
                 extra={"case": case_id or "-", "customer": cb.customer_id})
        if self._tracker is not None:
            await self._tracker.report(channel.request.uniqueid, CallFacts(
                customer_id=cb.customer_id, routing_reason=route.reason, ivr_step="notify/pressed_1",
                context_id=context_id))


def _pop_entry(cb: Callback, case_id: str | None, owner: str | None, heard: str) -> dict[str, object]:
    """What the pop's `callback` block shows: a notice call-back, the case, what the customer heard."""
    return {"id": cb.id, "reason": "notice call-back: the customer pressed 1", "case_id": case_id,
            "context": f"Notice heard: {heard}" if heard else "Notice call-back", "attempt": cb.attempts,
            "requested_at": cb.created_at, "preferred_agent": owner}
