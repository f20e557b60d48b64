"""Screen-pop use case: AMI events about an agent's phone → pops on that agent's desktop.

Ringing (AgentCalled from a queue, or DialBegin towards an agent endpoint for direct routing and
agent-first callbacks) publishes the full card; answer, no-answer and hang-up publish phase
updates. The card is built from the call context the hotline saved under IVR_CONTEXT_ID plus the
customer's history, read in one pipelined round trip.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ivrserver.domain import privacy
from ivrserver.domain.model import Agent, ContactKind
from ivrserver.domain.screen_pop import (
    Phase,
    PopContext,
    Role,
    build_pop,
    customer_id_of,
    phase_update,
    steps_from_path,
)
from ivrserver.pbx import ami_events as ev
from ivrserver.pbx.asterisk_conf import ivr_queue
from ivrserver.store import call_context, pop_claims
from ivrserver.store import customers as customer_store
from ivrserver.store.call_context import CallContext
from ivrserver.store.grants import Grant, check_agent_id
from ivrserver.store.keys import Keys
from ivrserver.store.pops import EPOCH, PopStore, Replay

log = logging.getLogger("ivrserver.screen_pop")
_LEG_SUFFIX = re.compile(r"-[0-9a-f]{8}(;\d)?$")
RECENT_CONTACTS = 10
CLAIM_SECONDS = 6 * 3600  # longer than any ring + call; the claim only has to outlive the leg


class PopFeed:
    """Per-agent numbered pop events (store/pops.py) and the read access each pop grants
    (`domain.privacy.grant_until`). The websocket hub (web/agent_ws.py) publishes, replays and acks
    through it; one per app instance."""

    def __init__(self, pops: PopStore, keys: Keys) -> None:
        self.pops = pops
        self.channel = keys.pop_channel()  # pub/sub: "<agent> <epoch> <seq> <frame>"

    async def publish(self, agent_id: str, event: Mapping[str, Any], *, customer_id: str | None = None,
                      now: float | None = None) -> int:
        """Store, number and fan out one event for one agent (on every instance). A pop ("type":
        "pop") waits for the browser's ack; a pop or phase update grants the agent read access to its
        customer and write-back to its contact for `domain.privacy.GRANT_SECONDS[phase]`. Returns the
        event's number."""
        check_agent_id(agent_id)
        if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
            raise ValueError("event must be a mapping with a string 'type'")
        now = time.time() if now is None else now
        cid = customer_id or customer_id_of(event)
        contact_id = event.get("contact_id")
        until = privacy.grant_until(event.get("phase"), now)
        grant = None if until is None else Grant(
            until, customer_id=cid, contact_id=contact_id if isinstance(contact_id, str) and contact_id else None)
        stored = await self.pops.append(agent_id, event, needs_ack=event.get("type") == "pop", grant=grant)
        return stored.seq

    async def position(self, agent_id: str) -> tuple[int, str | None]:
        return await self.pops.position(agent_id)

    async def since(self, agent_id: str, last_seq: int, *, epoch: str | None = None) -> Replay:
        return await self.pops.since(agent_id, last_seq, epoch=epoch)

    async def ack(self, agent_id: str, seq: int) -> bool:
        return await self.pops.ack(agent_id, seq)

    async def unacked(self, *, now: float) -> list[dict[str, Any]]:
        return await self.pops.unacked(now=now)


def is_epoch(value: object) -> bool:
    """An epoch as the server makes them (the client echoes what it was sent)."""
    return isinstance(value, str) and EPOCH.match(value) is not None


class Publisher(Protocol):
    async def publish(self, agent_id: str, event: Mapping[str, Any], *, customer_id: str | None = None,
                      now: float | None = None) -> int: ...


@dataclass
class _Leg:
    agent_id: str
    call_id: str
    customer_id: str | None
    contact_id: str | None
    answered: bool = False
    owned: bool = True  # False: another instance publishes this leg's pops


class ScreenPopService:
    """Consumes AMI events; publishes pops through the hub (which numbers and fans them out)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, hub: Publisher, agents: Mapping[str, Agent], *,
                 contact_id_for: Callable[[str], str | None] | None = None, instance: str = "ivrserver",
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._keys = keys
        self._hub = hub
        self._agents = dict(agents)
        self._by_endpoint = {a.endpoint: a for a in agents.values()}
        self._contact_id_for = contact_id_for
        self._instance = instance
        self._clock = clock
        self._legs: OrderedDict[str, _Leg] = OrderedDict()  # agent leg uniqueid → pop on screen

    def agent_for_channel(self, channel: str) -> Agent | None:
        """`PJSIP/agent1003-0000002a` (or the interface itself) → the agent."""
        return self._by_endpoint.get(_LEG_SUFFIX.sub("", channel)) or self._by_endpoint.get(channel)

    def wants(self, event: object) -> bool:
        """Whether `handle` can act on the event (the fan-out's filter): from the event alone, no
        state, so an event never misses its pop because the ring before it is still queued."""
        if isinstance(event, ev.Hangup):
            return self.agent_for_channel(event.channel) is not None
        if isinstance(event, (ev.DialBegin, ev.DialEnd)):
            return self.agent_for_channel(event.dest_channel) is not None
        return isinstance(event, (ev.AgentCalled, ev.AgentConnect, ev.AgentRingNoAnswer))

    async def handle(self, event: object) -> None:
        if isinstance(event, ev.AgentCalled):
            agent = self.agent_for_channel(event.interface) or self.agent_for_channel(event.dest_channel)
            if agent is not None:
                await self._ringing(agent, event.dest_uniqueid, event, queue=ivr_queue(event.queue))
        elif isinstance(event, ev.DialBegin):
            agent = self.agent_for_channel(event.dest_channel)
            if agent is not None:
                await self._ringing(agent, event.dest_uniqueid, event, queue=None)
        elif isinstance(event, ev.AgentConnect):
            await self._phase(event.dest_uniqueid, Phase.ANSWERED)
        elif isinstance(event, ev.DialEnd):
            await self._phase(event.dest_uniqueid, Phase.ANSWERED if event.dial_status == "ANSWER" else Phase.ENDED,
                              detail=event.dial_status.lower())
        elif isinstance(event, ev.AgentRingNoAnswer):
            await self._phase(event.dest_uniqueid, Phase.ENDED, detail="not answered")
        elif isinstance(event, ev.Hangup):
            await self._phase(event.uniqueid, Phase.ENDED, detail=event.cause_txt)

    async def _ringing(self, agent: Agent, leg_id: str, event: ev.ChannelEvent, queue: str | None) -> None:
        if not leg_id or leg_id in self._legs:
            return  # a queue ring produces AgentCalled and DialBegin: one pop
        if not await self._claim(agent.id, leg_id):
            # Every instance reads the same AMI events: the first to claim the leg publishes its pops.
            self._remember(leg_id, _Leg(agent.id, "", None, None, owned=False))
            return
        now = self._clock()
        ctx = await self._load_context(event.context_id) if event.context_id else None
        number = ctx.number if ctx else event.caller_id_num
        customer_id = ctx.customer_id if ctx else None
        customer, contacts, cases = None, [], []
        if customer_id:
            customer, contacts, cases = await self._load_customer(customer_id)
        contact_id = (self._contact_id_for(event.linkedid) if self._contact_id_for else None) or (
            ctx.contact_id if ctx else None)
        pop_ctx = PopContext(
            call_id=event.linkedid or leg_id, number=number, phase=Phase.RINGING,
            kind=ContactKind(ctx.kind) if ctx else ContactKind.INBOUND, contact_id=contact_id, customer=customer,
            routing_reason=ctx.routing_reason if ctx else "", queue=queue,
            ivr_path=steps_from_path(ctx.ivr_path) if ctx else [],
            recent_contacts=contacts, open_cases=cases, callback=(ctx.callback or None) if ctx else None,
            incidents=ctx.incidents if ctx else ())
        pop = build_pop(pop_ctx, role=Role.SUPERVISOR if agent.supervisor else Role.AGENT, now=now)
        self._remember(leg_id, _Leg(agent.id, pop_ctx.call_id, customer_id, contact_id))
        await self._hub.publish(agent.id, pop, customer_id=customer_id, now=now)
        log.info("screen-pop sent", extra={"agent": agent.id, "call": pop_ctx.call_id,
                                           "customer": customer_id or "-"})

    async def _claim(self, agent_id: str, leg_id: str) -> bool:
        return await pop_claims.claim(self._redis, self._keys, agent_id, leg_id, instance=self._instance,
                                      seconds=CLAIM_SECONDS)

    def _remember(self, leg_id: str, leg: _Leg) -> None:
        self._legs[leg_id] = leg
        while len(self._legs) > 5000:
            self._legs.popitem(last=False)

    async def _phase(self, leg_id: str, phase: Phase, detail: str = "") -> None:
        leg = self._legs.get(leg_id)
        if leg is None:
            return
        if phase is Phase.ENDED:
            self._legs.pop(leg_id, None)
        if not leg.owned:
            return
        if phase is Phase.ANSWERED:
            if leg.answered:
                return
            leg.answered = True
        now = self._clock()
        await self._hub.publish(leg.agent_id, phase_update(leg.call_id, phase, now=now, contact_id=leg.contact_id,
                                                           detail=detail), customer_id=leg.customer_id, now=now)

    async def _load_context(self, context_id: str) -> CallContext | None:
        try:
            return await call_context.load(self._redis, self._keys, context_id)
        except (RedisError, OSError) as exc:
            log.error("call context unavailable for pop", extra={"error": str(exc)})
            return None

    async def _load_customer(self, customer_id: str) -> tuple[Any, list[Any], list[Any]]:
        """Profile, recent contacts and open cases: one pipelined round trip plus one for the records."""
        try:
            return await customer_store.customer_card(self._redis, self._keys, customer_id, recent=RECENT_CONTACTS)
        except (RedisError, OSError) as exc:
            log.error("customer record unavailable for pop", extra={"error": str(exc)})
            return None, [], []

    async def run(self, events: asyncio.Queue[Any]) -> None:
        while True:
            event = await events.get()
            try:
                await self.handle(event)
            except (RedisError, OSError) as exc:
                log.error("pop not published (Redis)", extra={"error": str(exc)})
            except Exception:
                log.exception("pop not published")
