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

from ivrserver.domain.model import Agent, ContactKind
from ivrserver.domain.screen_pop import Phase, PopContext, Role, build_pop, phase_update
from ivrserver.pbx import ami_events as ev
from ivrserver.pbx.asterisk_conf import ivr_queue
from ivrserver.store import cases as case_store
from ivrserver.store import contacts as contact_store
from ivrserver.store.call_context import CallContext
from ivrserver.store.customers import customer_from_json
from ivrserver.store.keys import Keys

log = logging.getLogger("ivrserver.screen_pop")
_LEG_SUFFIX = re.compile(r"-[0-9a-f]{8}(;\d)?$")
RECENT_CONTACTS = 10
CLAIM_SECONDS = 6 * 3600  # longer than any ring + call; the claim only has to outlive the leg


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


def ivr_steps_from_path(path: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """The recorded IVR path (menu_engine PathEvents as dicts) as the pop's steps."""
    steps: list[dict[str, Any]] = []
    for p in path:
        kind, node = p.get("kind"), p.get("node", "")
        if kind == "key":
            steps.append({"menu": node, "input": p.get("key", ""), "label": p.get("target", "")})
        elif kind == "collected":
            detail = str(p.get("detail", ""))
            steps.append({"menu": node, "input": detail, "label": "entered",
                          "sensitive": any(w in detail.lower() for w in ("pin", "pass", "card"))})
        elif kind in ("invalid", "timeout", "identified", "lookup", "language"):
            steps.append({"menu": node, "label": f"{kind} {p.get('detail', '')}".strip(), "input": p.get("key", "")})
        elif kind == "exit":
            steps.append({"menu": node, "label": f"exit: {p.get('detail', '')} {p.get('target', '')}".strip()})
    return steps


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
            ivr_path=ivr_steps_from_path(ctx.ivr_path) if ctx else [],
            recent_contacts=contacts, open_cases=cases, callback=(ctx.callback or None) if ctx else None)
        pop = build_pop(pop_ctx, role=Role.SUPERVISOR if agent.supervisor else Role.AGENT, now=now)
        self._remember(leg_id, _Leg(agent.id, pop_ctx.call_id, customer_id, contact_id))
        await self._hub.publish(agent.id, pop, customer_id=customer_id, now=now)
        log.info("screen-pop sent", extra={"agent": agent.id, "call": pop_ctx.call_id,
                                           "customer": customer_id or "-"})

    async def _claim(self, agent_id: str, leg_id: str) -> bool:
        return bool(await self._redis.set(self._keys.pop_claim(agent_id, leg_id), self._instance, nx=True,
                                          ex=CLAIM_SECONDS))

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
            raw = await self._redis.get(self._keys.call_context(context_id))
        except (RedisError, OSError) as exc:
            log.error("call context unavailable for pop", extra={"error": str(exc)})
            return None
        return CallContext.from_json(raw) if raw else None

    async def _load_customer(self, customer_id: str) -> tuple[Any, list[Any], list[Any]]:
        """Profile, recent contacts and open cases: one pipelined round trip plus one for the records."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(self._keys.customer(customer_id))
                pipe.zrevrange(self._keys.timeline(customer_id), 0, RECENT_CONTACTS - 1)
                pipe.zrange(self._keys.open_cases(customer_id), 0, 49)
                profile, contact_ids, case_ids = await pipe.execute()
                for cid in contact_ids:
                    pipe.get(self._keys.contact(cid))
                for cid in case_ids:
                    pipe.get(self._keys.case(cid))
                records = await pipe.execute() if contact_ids or case_ids else []
        except (RedisError, OSError) as exc:
            log.error("customer record unavailable for pop", extra={"error": str(exc)})
            return None, [], []
        contacts = [c for c in (contact_store.contact_from_json(r) for r in records[:len(contact_ids)]) if c]
        cases = [c for c in (case_store.case_from_json(r) for r in records[len(contact_ids):]) if c]
        return customer_from_json(profile), contacts, cases

    async def run(self, events: asyncio.Queue[Any]) -> None:
        while True:
            event = await events.get()
            try:
                await self.handle(event)
            except (RedisError, OSError) as exc:
                log.error("pop not published (Redis)", extra={"error": str(exc)})
            except Exception:
                log.exception("pop not published")
