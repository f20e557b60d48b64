"""One consumer of the AMI event queue handing each event to every feature that wants it.

Two kinds of subscriber:
- a *handler* (`on_event`) is a synchronous function called in place for every event: for the
  features whose fold is pure bookkeeping (queue state, contact tracking, callback results);
- a *queue* (`subscribe`) is a bounded asyncio.Queue read by the feature's own task, for the
  features that do I/O per event (agent state writes, screen-pops); `accepts` keeps the events it
  would ignore out of it, so a caller's Newchannel or Hangup wakes no agent-side task.

A hotline call's two AMI events used to wake five consumer tasks each; now only the fan-out's own.
A failing handler is logged and the others still run; a full queue loses the event (counted),
it never blocks the others or the AMI reader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ivrserver.metrics import Metrics

log = logging.getLogger("ivrserver.events")

Handler = Callable[[Any], None]
Filter = Callable[[Any], bool]


class EventFanout:
    def __init__(self, source: asyncio.Queue[Any], metrics: Metrics) -> None:
        self._source = source
        self._metrics = metrics
        self._handlers: list[tuple[str, Handler]] = []
        self._queues: list[tuple[asyncio.Queue[Any], Filter | None]] = []

    def on_event(self, name: str, handler: Handler) -> None:
        """Call `handler(event)` for every event, in registration order; `name` is for the logs."""
        self._handlers.append((name, handler))

    def subscribe(self, size: int = 10000, accepts: Filter | None = None) -> asyncio.Queue[Any]:
        """A queue of the events `accepts` (default: all). A filter that raises lets the event in:
        the consumer, not the fan-out, decides what a malformed event means."""
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=size)
        self._queues.append((queue, accepts))
        return queue

    def publish(self, event: Any) -> None:
        """Hand one event to every subscriber (what `run` does for each event of the source)."""
        for name, handler in self._handlers:
            try:
                handler(event)
            except Exception:
                log.exception("AMI event handler %s failed on %s", name, type(event).__name__)
        for queue, accepts in self._queues:
            if accepts is not None and not _accepted(accepts, event):
                continue
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._metrics.ami_dropped.inc()

    async def run(self) -> None:
        while True:
            self.publish(await self._source.get())


def _accepted(accepts: Filter, event: Any) -> bool:
    try:
        return bool(accepts(event))
    except Exception:
        return True
