"""Case follow-up: every case change reaches each registered handler (webhooks, notices), at least
once, never dropped.

Every change of a case is appended to the stream `keys.case_changes()` in the MULTI of the case
write (store/cases.py). `CaseFollowup` reads it with a consumer group (several instances share the
work) and calls each handler `async def handler(change: CaseChange) -> None` in turn:
- a handler that returns is marked done for that change (`keys.case_change_done(event_id)`), so a
  redelivery (a crash, another handler failing) does not call it again; handlers must still be
  idempotent by `change.event_id` (the mark and the handler's own write are not one transaction);
- a handler that raises (or takes longer than `handler_timeout`) is retried with backoff
  (`retry_base` doubling up to `retry_max`), the entry staying unacknowledged until every
  handler is done; entries another instance left unacknowledged longer than `claim_idle` are
  claimed; an entry that cannot be read is moved to `keys.case_changes_dead()`.
Then the entry is acknowledged and deleted. `run` belongs under the supervisor (app.py).

Registration (app.py): `followup.register("webhooks", webhook_handler(webhooks.publish))`; the
notices helper registers its handler the same way (`followup.register("notices", …)`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ivrserver.domain.cases import CaseChange
from ivrserver.store import cases as store
from ivrserver.store.keys import Keys

log = logging.getLogger(__name__)

GROUP = "case-followup"
DONE_TTL = 7 * 86400
Handler = Callable[[CaseChange], Awaitable[None]]


class Publish(Protocol):
    async def __call__(self, event: str, data: Mapping[str, Any], *, key: str) -> bool: ...


def change_to_dict(change: CaseChange) -> dict[str, Any]:
    """The wire form of a change (webhook data)."""
    return {"event_id": change.event_id, "kind": change.kind, "case": store.case_to_dict(change.case),
            "previous": change.previous.value if change.previous else None, "actor": change.actor,
            "why": change.why, "at": change.at, "detail": dict(change.detail)}


def webhook_handler(publish: Publish) -> Handler:
    """Publish every change as the webhook event `case.<kind>`, idempotent on the change's id."""

    async def to_webhooks(change: CaseChange) -> None:
        await publish(f"case.{change.kind}", change_to_dict(change), key=f"case-change:{change.event_id}")

    return to_webhooks


class CaseFollowup:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, consumer: str, batch_size: int = 100,
                 block_ms: int = 1000, claim_idle: float = 30.0, retry_base: float = 1.0, retry_max: float = 60.0,
                 handler_timeout: float = 30.0) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle * 1000)
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.handler_timeout = handler_timeout
        self.handlers: dict[str, Handler] = {}
        self.delivered = 0  # changes every handler took
        self._retry: dict[str, tuple[int, float]] = {}  # entry id → (failures, next attempt, monotonic)
        self._next_claim = 0.0

    def register(self, name: str, handler: Handler) -> None:
        """Add a handler (before `run`); `name` marks what it has done, so keep it stable."""
        if name in self.handlers:
            raise ValueError(f"a case-change handler named {name!r} is registered already")
        self.handlers[name] = handler

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.case_changes(), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # ---- one pass ----------------------------------------------------------------------------
    async def _pending(self) -> list[tuple[str, Mapping[str, str]]]:
        """Own unacknowledged entries whose retry time has come (all of them after a restart)."""
        reply = await self.redis.xreadgroup(GROUP, self.consumer, {self.keys.case_changes(): "0"},
                                            count=self.batch_size)
        now = time.monotonic()
        return [(i, f) for i, f in _entries(reply) if self._retry.get(i, (0, 0.0))[1] <= now]

    async def _claimed(self) -> list[tuple[str, Mapping[str, str]]]:
        now = time.monotonic()
        if now < self._next_claim:
            return []
        self._next_claim = now + self.claim_idle_ms / 2000
        claimed = await self.redis.xautoclaim(self.keys.case_changes(), GROUP, self.consumer, self.claim_idle_ms,
                                              start_id="0-0", count=self.batch_size)
        return [(str(i), f) for i, f in (claimed[1] if claimed else ()) if f]

    async def step(self) -> int:
        """Handle due retries, claimed and new entries; returns how many entries were finished."""
        entries = await self._pending() or await self._claimed()
        if not entries:
            block = self.block_ms
            if self._retry:  # wake for the next retry
                soonest = min(t for _, t in self._retry.values()) - time.monotonic()
                block = max(1, min(block, int(soonest * 1000)))
            entries = _entries(await self.redis.xreadgroup(GROUP, self.consumer, {self.keys.case_changes(): ">"},
                                                           count=self.batch_size, block=block))
        finished = 0
        for entry_id, fields in entries:
            if await self._handle(entry_id, fields):
                finished += 1
        return finished

    async def _handle(self, entry_id: str, fields: Mapping[str, str]) -> bool:
        try:
            change = store.case_change_from_entry(entry_id, fields)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("case follow-up: unreadable case change %s (%s) moved to %s", entry_id, type(exc).__name__,
                      self.keys.case_changes_dead())
            await self.redis.xadd(self.keys.case_changes_dead(), {**fields, "entry": entry_id,
                                                                  "error": str(exc)[:200]})
            await self._finish(entry_id)
            return True
        done_key = self.keys.case_change_done(entry_id)
        done = set(await self.redis.hkeys(done_key)) if len(self.handlers) > 1 else set()
        failed = False
        for name, handler in self.handlers.items():
            if name in done:
                continue
            try:
                async with asyncio.timeout(self.handler_timeout):
                    await handler(change)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed = True
                self._failed(entry_id, name, exc)
                continue
            if len(self.handlers) > 1:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hset(done_key, name, "1")
                    pipe.expire(done_key, DONE_TTL)
                    await pipe.execute()
        if failed:
            return False
        await self._finish(entry_id)
        self._retry.pop(entry_id, None)
        self.delivered += 1
        return True

    def _failed(self, entry_id: str, name: str, exc: BaseException) -> None:
        failures = self._retry.get(entry_id, (0, 0.0))[0] + 1
        delay = min(self.retry_max, self.retry_base * 2 ** (failures - 1))
        self._retry[entry_id] = (failures, time.monotonic() + delay)
        text = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200]
        log.warning("case follow-up: handler %s failed on change %s (attempt %d, retried in %.0f s): %s",
                    name, entry_id, failures, delay, text)

    async def _finish(self, entry_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.case_changes(), GROUP, entry_id)
            pipe.xdel(self.keys.case_changes(), entry_id)
            pipe.delete(self.keys.case_change_done(entry_id))
            await pipe.execute()

    async def run(self) -> None:
        """Forever (under the supervisor): Redis away → wait and go on with the same entries."""
        await self.ensure_group()
        delay = 0.2
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("case follow-up: cannot read case changes (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2

    async def drain(self, timeout: float = 10.0) -> None:
        """Until the stream holds no entry (tests, shutdown); failing handlers make it time out."""
        await self.ensure_group()
        async with asyncio.timeout(timeout):
            while await self.redis.xlen(self.keys.case_changes()):
                await self.step()


def _entries(reply: Any) -> list[tuple[str, Mapping[str, str]]]:
    out: list[tuple[str, Mapping[str, str]]] = []
    for _stream, rows in reply or ():
        out.extend((str(i), f) for i, f in rows if f)
    return out

