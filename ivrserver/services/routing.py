"""Routing use case: caller snapshot + agents' live state → Route → dialplan channel variables.

The decision itself is domain.routing.route(); this module only fetches the agents' state (one
pipelined Redis round trip, only for the agents the policy may pick for this caller — none at
all for a caller with no case owner, last agent or account manager) and writes the channel
variables the dialplan reads (dialplans/ivrserver.conf; README "Point ivrserver at your own
Asterisk": IVR_ACTION, IVR_QUEUE, IVR_PRIORITY, IVR_AGENT, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Protocol

import redis.asyncio as aioredis

from ivrserver.domain.model import Agent, AgentStatus, CallerSnapshot
from ivrserver.domain.routing import Action, Policy, Route, candidate_agent_ids, route
from ivrserver.store import agents as agent_store
from ivrserver.store.keys import Keys

log = logging.getLogger("ivrserver.routing")


class VariableChannel(Protocol):
    """What apply_route needs of ivrserver.pbx.fastagi.AgiChannel."""

    async def set_variable(self, name: str, value: str) -> None: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def channel_variables(decision: Route, context_id: str | None) -> list[tuple[str, str]]:
    """The SET VARIABLEs for a decision, in order; IVR_ACTION last so a half-set call falls back.

    A MENU decision sets only IVR_CONTEXT_ID: the IVR keeps the call and the menu's exit sets the
    rest, IVR_REASON included (an empty IVR_ACTION is the dialplan's general-queue fallback). The
    routing reason of a menu call is in its contact record and log; an AGI round trip per call to
    show it in a NoOp that the menu's exit overwrites anyway is not worth it.
    """
    out = [] if context_id is None else [("IVR_CONTEXT_ID", context_id)]  # None: already set
    if decision.action is Action.MENU:
        return out
    out.append(("IVR_REASON", decision.reason.replace("→", "->")))  # ASCII for the PBX's verbose log
    if decision.queue is None:
        raise ValueError(f"a {decision.action} route needs a queue: {decision}")
    out += [("IVR_QUEUE", decision.queue), ("IVR_PRIORITY", str(decision.priority))]
    if decision.action is Action.AGENT:
        if decision.dial is None or decision.ring_seconds is None:
            raise ValueError(f"an agent route needs a dial string and ring seconds: {decision}")
        out += [("IVR_AGENT", decision.dial), ("IVR_AGENT_TIMEOUT", str(decision.ring_seconds))]
    out.append(("IVR_ACTION", decision.action.value))
    return out


StatusesOf = Callable[[Collection[str], float], Awaitable[Mapping[str, AgentStatus]]]


class RoutingService:
    def __init__(self, redis: aioredis.Redis, keys: Keys, policy: Policy, agent_defs: Mapping[str, Agent],
                 *, clock: Callable[[], datetime] = _utc_now, statuses: StatusesOf | None = None) -> None:
        """`statuses` reads the candidates' live state; default: Redis (one MGET). The server passes
        its own AgentStateService's view, folded from the same AMI events every instance receives,
        which costs no round trip."""
        self._redis = redis
        self._keys = keys
        self._policy = policy
        self._agents = dict(agent_defs)
        self._clock = clock
        self._statuses: StatusesOf = statuses or self._statuses_from_redis

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def agent_defs(self) -> Mapping[str, Agent]:
        return self._agents

    def reload(self, policy: Policy, agent_defs: Mapping[str, Agent]) -> None:
        """Swap in a new policy and agent definitions (already validated); calls in flight keep theirs."""
        self._policy = policy
        self._agents = dict(agent_defs)

    async def route(self, snapshot: CallerSnapshot, *, pin_locked_out: bool = False,
                    now: datetime | None = None) -> Route:
        """Decide for this caller: at most one Redis round trip (the candidates' live state)."""
        policy, agent_defs = self._policy, self._agents
        now = now or self._clock()
        candidates = candidate_agent_ids(snapshot, policy)
        live = await self._statuses(candidates, now.timestamp()) if candidates else {}
        decision = route(snapshot, live, agent_defs, now, policy, pin_locked_out=pin_locked_out)
        log.info("route rule=%s action=%s reason=%s", decision.rule, decision.action.value, decision.reason)
        if log.isEnabledFor(logging.DEBUG):
            for step in decision.trace:
                log.debug("route trace %s %s: %s %s", step.step, step.subject, step.result, step.detail)
        return decision

    async def _statuses_from_redis(self, ids: Collection[str], now: float) -> Mapping[str, AgentStatus]:
        return await agent_store.statuses(self._redis, self._keys, ids, now)

    async def apply_route(self, channel: VariableChannel, decision: Route, context_id: str | None) -> None:
        """Set the dialplan contract's channel variables (one AGI command each, in order);
        `context_id=None` when IVR_CONTEXT_ID is already set on the channel."""
        for name, value in channel_variables(decision, context_id):
            await channel.set_variable(name, value)
