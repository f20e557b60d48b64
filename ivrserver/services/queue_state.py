"""Who is waiting in each queue and who may answer, from AMI queue events.

Virtual hold needs it: a kept place is released only when the caller would have reached an
agent, never ahead of live callers who joined earlier. Every instance folds the same AMI events,
so every instance has the same view.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from ivrserver.domain.callbacks import QueueEntry
from ivrserver.pbx import ami_events as ev
from ivrserver.pbx.asterisk_conf import ivr_queue


class QueueState:
    def __init__(self, agent_of_interface: Callable[[str], str | None],
                 free_agents: Callable[[Iterable[str]], Awaitable[int]],
                 clock: Callable[[], float] = time.time) -> None:
        self._agent_of = agent_of_interface
        self._free_agents = free_agents
        self._clock = clock
        self._waiting: dict[str, dict[str, QueueEntry]] = {}  # queue → uniqueid → entry
        self._members: dict[str, set[str]] = {}  # queue → agent ids

    def handle(self, event: object) -> None:
        """Fold one AMI event (every event comes here: the app's fan-out calls it in place)."""
        if isinstance(event, ev.QueueCallerJoin):
            if (queue := ivr_queue(event.queue)) is not None:
                self._waiting.setdefault(queue, {})[event.uniqueid] = QueueEntry(event.uniqueid, self._clock(),
                                                                                  event.priority)
        elif isinstance(event, (ev.QueueCallerLeave, ev.QueueCallerAbandon)):
            if (queue := ivr_queue(event.queue)) is not None:
                self._waiting.get(queue, {}).pop(event.uniqueid, None)
        elif isinstance(event, ev.QueueMemberRemoved):  # before its base class QueueMemberStatus
            queue, agent = ivr_queue(event.queue), self._agent_of(event.interface)
            if queue is not None and agent is not None:
                self._members.get(queue, set()).discard(agent)
        elif isinstance(event, ev.QueueMemberStatus):  # also QueueMember, QueueMemberAdded/Pause
            queue, agent = ivr_queue(event.queue), self._agent_of(event.interface)
            if queue is not None and agent is not None:
                self._members.setdefault(queue, set()).add(agent)

    async def snapshot(self, queue: str) -> tuple[Sequence[QueueEntry], int]:
        """(live callers waiting in `queue`, how many of its agents are free now)."""
        live = list(self._waiting.get(queue, {}).values())
        return live, await self._free_agents(self._members.get(queue, set()))
