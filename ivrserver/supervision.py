"""Supervision of the app's long-lived background tasks.

Every loop the app runs for its whole life (AMI fan-out and its consumers, the contact sweeper,
the callback scheduler, the menu file watch ...) is started here. A task that crashes — or returns,
which a forever-loop never should — is logged (its traceback once per distinct error; repeats are
one line), counted in `ivrserver_task_restarts_total{task}` and started again after a backoff
(0.5 s doubling to 30 s, back to 0.5 s once it has run a minute). Nothing a task does can take the
process down; cancellation (shutdown) stops it.

asyncio.TaskGroup is not used: it cancels every sibling when one fails, the opposite of what a
server with independent loops wants.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ivrserver.metrics import Metrics

log = logging.getLogger("ivrserver.tasks")

TaskFactory = Callable[[], Awaitable[None]]


class Supervisor:
    def __init__(self, metrics: Metrics, *, initial_delay: float = 0.5, max_delay: float = 30.0,
                 healthy_after: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.healthy_after = healthy_after
        self.clock = clock
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.runs: dict[str, int] = {}  # how many times each task has been started

    def start(self, name: str, factory: TaskFactory) -> asyncio.Task[None]:
        """Run `factory()` under supervision until `stop()`; `factory` is called again for each restart
        (give it what must survive a restart, e.g. the same subscription queue)."""
        if name in self.tasks:
            raise ValueError(f"task {name!r} is already supervised")
        self.metrics.task_restarts.labels(name)  # the series exists (0) before the first crash
        task = asyncio.create_task(self._supervise(name, factory), name=name)
        self.tasks[name] = task
        return task

    async def _supervise(self, name: str, factory: TaskFactory) -> None:
        delay = self.initial_delay
        seen: dict[tuple[str, str], int] = {}
        while True:
            started = self.clock()
            self.runs[name] = self.runs.get(name, 0) + 1
            error: Exception | None = None
            try:
                await factory()
            except Exception as exc:  # the point: nothing a task raises is fatal
                error = exc
            if self.clock() - started >= self.healthy_after:
                delay = self.initial_delay
            self.metrics.task_restarts.labels(name).inc()
            if error is None:
                log.error("background task %s returned; restarting in %.1fs", name, delay)
            else:
                signature = (type(error).__name__, str(error)[:200])
                count = seen[signature] = seen.get(signature, 0) + 1
                if count == 1:
                    log.error("background task %s crashed; restarting in %.1fs", name, delay, exc_info=error)
                else:
                    log.error("background task %s crashed again (%s: %s, %d times); restarting in %.1fs",
                              name, signature[0], signature[1], count, delay)
            error = None  # no reference cycle through the traceback while sleeping
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)

    async def stop_task(self, name: str) -> None:
        """Cancel one supervised task (a component that owns its lifecycle, e.g. a websocket hub
        closing with its web app) and forget it, so that it may be started again."""
        task = self.tasks.pop(name, None)
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel every supervised task and wait for them."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.clear()
