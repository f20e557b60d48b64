"""Agent-state use case: AMI events → domain fold → Redis (store.agents).

One task consumes the events (`run(queue)`; the app's fan-out queues only those `wants` accepts),
or a caller awaits `handle(event)` per event. The fold's working copy lives in memory; every change
writes the agent's whole record, so a failed write heals on the agent's next change and other
ivrserver instances read fresh state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ivrserver.domain.agent_state import AgentLive, AgentStateFold, event_name, status_at
from ivrserver.domain.callbacks import longest_idle_first
from ivrserver.domain.model import Agent, AgentState, AgentStatus
from ivrserver.pbx.ami import AmiError
from ivrserver.store import agents as agent_store
from ivrserver.store.keys import Keys

log = logging.getLogger("ivrserver.agent_state")


AmiAction = Callable[[str, dict[str, str]], Awaitable[object]]


class PbxUnavailable(Exception):
    """Asterisk could not be asked to pause or resume the agent."""


def is_free(status: AgentStatus | None) -> bool:
    """An agent is free for a call (callbacks, virtual hold) exactly when their state is READY."""
    return status is not None and status.state is AgentState.READY


class AgentStateService:
    def __init__(self, redis: aioredis.Redis, keys: Keys, agent_defs: Mapping[str, Agent], *,
                 wrap_up_seconds: float, clock: Callable[[], float] = time.time,
                 ami_action: AmiAction | None = None) -> None:
        self._agent_defs = agent_defs
        self._ami_action = ami_action
        self._redis = redis
        self._keys = keys
        self._fold = AgentStateFold(agent_defs, wrap_up_seconds)
        self._agent_ids = tuple(agent_defs)
        self._clock = clock
        self._live: dict[str, AgentLive] = {}
        # Called with each changed record, in event order, before it is saved (the wallboard).
        self._listeners: list[Callable[[AgentLive], None]] = []

    def on_change(self, listener: Callable[[AgentLive], None]) -> None:
        """Call `listener(record)` for every agent record a folded event changes (synchronous; a
        raising listener is logged, the fold and the save go on)."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Load the defined agents' stored records (one round trip) as the fold's starting point."""
        self._live = await agent_store.load(self._redis, self._keys, self._agent_ids)

    def records(self) -> dict[str, AgentLive]:
        """A copy of this instance's fold: every agent record it holds (the wallboard's start)."""
        return dict(self._live)

    def statuses(self, now: float | None = None) -> dict[str, AgentStatus]:
        """This instance's view of every agent it has seen (for the agent page / admin API)."""
        at = self._clock() if now is None else now
        return {agent_id: status_at(live, at) for agent_id, live in self._live.items()}

    async def statuses_of(self, ids: Collection[str], now: float) -> dict[str, AgentStatus]:
        """The live state of `ids` as this instance folded it (for routing: no Redis round trip)."""
        return {i: status_at(live, now) for i in ids if (live := self._live.get(i)) is not None}

    async def free_count(self, ids: Iterable[str]) -> int:
        """How many of `ids` are free now."""
        statuses = await self.statuses_of(list(ids), self._clock())
        return sum(1 for s in statuses.values() if is_free(s))

    async def is_free(self, agent_id: str) -> bool:
        statuses = await self.statuses_of([agent_id], self._clock())
        return is_free(statuses.get(agent_id))

    async def free_agents(self, tier: str) -> list[str]:
        """The agents of `tier`, free ones first, longest idle first (callbacks' choice of agent)."""
        members = [a.id for a in self._agent_defs.values() if tier in a.tiers]
        statuses = await self.statuses_of(members, self._clock())
        return longest_idle_first(statuses.values(), members)

    async def state_of(self, agent_id: str) -> str | None:
        """The agent's state name now (`ready`, `paused`, …), None before any event."""
        status = (await self.statuses_of([agent_id], self._clock())).get(agent_id)
        return status.state.value if status else None

    async def set_paused(self, agent_id: str, paused: bool) -> None:
        """Pause or resume the agent in every queue: AMI QueuePause on their interface. The state
        changes when Asterisk reports it (QueueMemberPause), not here. Raises PbxUnavailable."""
        if self._ami_action is None:
            raise PbxUnavailable("no Asterisk connection configured")
        agent = self._agent_defs[agent_id]
        try:
            await self._ami_action("QueuePause", {"Interface": agent.endpoint, "Paused": "true" if paused else "false",
                                                  "Reason": "agent desktop"})
        except AmiError as exc:
            raise PbxUnavailable(f"cannot reach Asterisk: {exc}") from exc

    def wants(self, event: object) -> bool:
        """Whether the event is about a defined agent (the fan-out's filter: the rest change nothing)."""
        return self._fold.agent_of(event) is not None

    async def handle(self, event: object) -> AgentLive | None:
        """Fold one AMI event; persist and return the agent's new record if it changed."""
        changed = self._fold_one(event)
        if changed is not None:
            await agent_store.save(self._redis, self._keys, [changed])
        return changed

    def _fold_one(self, event: object) -> AgentLive | None:
        """Fold one event into this instance's view and tell the listeners; no I/O."""
        changed = self._fold.apply(self._live, event, self._clock())
        if changed is None:
            return None
        self._live[changed.agent_id] = changed
        for listener in self._listeners:
            try:
                listener(changed)
            except Exception:
                log.exception("agent state listener failed on %s", changed.agent_id)
        return changed

    async def run(self, events: asyncio.Queue[object], batch: int = 500) -> None:
        """Consume `events` forever; one bad event or a Redis hiccup is logged, never fatal.

        Events waiting together are folded in order, then their changed records are written in one
        round trip (an agent's last record wins): when events arrive faster than one Redis write
        each, the fold (routing's view, the listeners) never falls behind the writes."""
        while True:
            taken = [await events.get()]
            while len(taken) < batch and not events.empty():
                taken.append(events.get_nowait())
            changed: dict[str, AgentLive] = {}
            for event in taken:
                try:
                    if self._fold.handles(event) and (record := self._fold_one(event)) is not None:
                        changed[record.agent_id] = record
                except Exception:
                    log.exception("agent state: cannot fold %s", event_name(event))
            try:
                await agent_store.save(self._redis, self._keys, changed.values())
            except RedisError:
                log.warning("agent state not saved (Redis): %d records", len(changed), exc_info=True)
            except Exception:
                log.exception("agent state: cannot save %d records", len(changed))
            finally:
                for _ in taken:
                    events.task_done()
