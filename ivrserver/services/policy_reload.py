"""Hot reload of the policy files (cases.yaml, incidents.yaml, reminders.yaml, webhooks.yaml,
routing.yaml): the one path SIGHUP and `POST /api/v1/policies/reload` take.

Each file is read and checked by its own loader (files/*.py, the one used at start). A file with
errors is refused with its `file:line:column` problems and the running policy stays (a warning is
logged, `ivrserver_policy_reloads_total{file,result="rejected"}` counted). A valid file that differs
from the running one is swapped in as one new immutable object, assigned on the event loop: work in
flight keeps the object it took and never sees half of a change. Loading (file I/O, YAML, secrets)
runs in a worker thread; applying runs on the event loop, one reload at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ivrserver.metrics import Metrics

log = logging.getLogger("ivrserver.policies")


@dataclass(frozen=True)
class PolicyFile:
    """One reloadable file: `load` reads and validates it (raising an error whose `problems` lists
    `file:line:column: …` lines), `current` is the running object, `apply` swaps a new one in."""

    name: str  # "cases", "incidents", … (the metric's `file` label)
    path: str
    load: Callable[[], Any]
    current: Callable[[], Any]
    apply: Callable[[Any], None]


@dataclass(frozen=True)
class Loaded:
    file: PolicyFile
    value: Any = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    name: str
    file: str
    ok: bool
    changed: bool
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "file": self.file, "ok": self.ok, "changed": self.changed,
                "error": "\n".join(self.problems) if self.problems else None, "problems": list(self.problems)}


def _load(file: PolicyFile) -> Loaded:
    try:
        return Loaded(file, file.load())
    except Exception as exc:  # a loader's refusal carries its problems; anything else must not escape either
        problems = getattr(exc, "problems", None)
        if isinstance(problems, list) and problems and all(isinstance(p, str) for p in problems):
            return Loaded(file, problems=tuple(problems))
        log.error("policy file %s could not be loaded", file.path, exc_info=True)
        return Loaded(file, problems=(f"{file.path}: error: cannot load: {type(exc).__name__} (the error is logged)",))


class PolicyFiles:
    def __init__(self, files: Sequence[PolicyFile], *, metrics: Metrics | None = None) -> None:
        self.files = tuple(files)
        self.metrics = metrics
        self._lock = asyncio.Lock()

    def load(self) -> list[Loaded]:
        """Read and check every file (blocking: run it in a worker thread)."""
        return [_load(f) for f in self.files]

    def apply(self, loaded: Sequence[Loaded]) -> list[Outcome]:
        """Swap in every valid file that changed (on the event loop: no await between the swaps)."""
        return [self._apply(one) for one in loaded]

    def _apply(self, one: Loaded) -> Outcome:
        f = one.file
        problems = one.problems
        changed = False
        if not problems:
            try:
                changed = one.value != f.current()
                if changed:
                    f.apply(one.value)
            except Exception as exc:  # a bug in a swap must not leave the server without a reload path
                log.error("policy file %s could not be applied", f.path, exc_info=True)
                problems = (f"{f.path}: error: cannot apply: {type(exc).__name__} (the error is logged)",)
                changed = False
        if problems:
            for problem in problems:
                log.warning("policy reload refused: %s", problem)
            log.warning("policy file %s refused (%d problems); the running %s policy stays", f.path, len(problems),
                        f.name)
        elif changed:
            log.info("policy file %s reloaded: the new %s policy is live", f.path, f.name)
        if self.metrics is not None:
            self.metrics.policy_reloads.labels(f.name, "rejected" if problems else "ok").inc()
        return Outcome(f.name, f.path, not problems, changed, problems)

    async def reload(self) -> list[Outcome]:
        """Load in a worker thread, apply on the loop; one reload at a time (an older read never
        lands after a newer one)."""
        async with self._lock:
            loaded = await asyncio.to_thread(self.load)
            return self.apply(loaded)
