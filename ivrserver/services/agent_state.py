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
from collections.abc import Callable, Collection, Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ivrserver.domain.agent_state import AgentLive, AgentStateFold, event_name, status_at
from ivrserver.domain.model import Agent, AgentStatus
from ivrserver.store import agents as agent_store
from ivrserver.store.keys import Keys

log = logging.getLogger("ivrserver.agent_state")


class AgentStateService:
    def __init__(self, redis: aioredis.Redis, keys: Keys, agent_defs: Mapping[str, Agent], *,
                 wrap_up_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._keys = keys
        self._fold = AgentStateFold(agent_defs, wrap_up_seconds)
        self._agent_ids = tuple(agent_defs)
        self._clock = clock
        self._live: dict[str, AgentLive] = {}

    async def start(self) -> None:
        """Load the defined agents' stored records (one round trip) as the fold's starting point."""
        self._live = await agent_store.load(self._redis, self._keys, self._agent_ids)

    def statuses(self, now: float | None = None) -> dict[str, AgentStatus]:
        """This instance's view of every agent it has seen (for the agent page / admin API)."""
        at = self._clock() if now is None else now
        return {agent_id: status_at(live, at) for agent_id, live in self._live.items()}

    async def statuses_of(self, ids: Collection[str], now: float) -> dict[str, AgentStatus]:
        """The live state of `ids` as this instance folded it (for routing: no Redis round trip)."""
        return {i: status_at(live, now) for i in ids if (live := self._live.get(i)) is not None}

    def wants(self, event: object) -> bool:
        """Whether the event is about a defined agent (the fan-out's filter: the rest change nothing)."""
        return self._fold.agent_of(event) is not None

    async def handle(self, event: object) -> AgentLive | None:
        """Fold one AMI event; persist and return the agent's new record if it changed."""
        changed = self._fold.apply(self._live, event, self._clock())
        if changed is None:
            return None
        self._live[changed.agent_id] = changed
        await agent_store.save(self._redis, self._keys, [changed])
        return changed

    async def run(self, events: asyncio.Queue[object]) -> None:
        """Consume `events` forever; one bad event or a Redis hiccup is logged, never fatal."""
        while True:
            event = await events.get()
            try:
                if self._fold.handles(event):
                    await self.handle(event)
            except RedisError:
                log.warning("agent state not saved (Redis): %s", event_name(event), exc_info=True)
            except Exception:
                log.exception("agent state: cannot fold %s", event_name(event))
            finally:
                events.task_done()
