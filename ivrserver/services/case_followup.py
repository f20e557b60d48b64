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
  claimed; an entry that cannot be read is moved to `keys.case_changes_dead()`;
- a handler's failures are counted in Redis (`keys.case_change_failures`, so a restart or another
  instance goes on with the same budget): after `max_attempts` of them, or `max_age` seconds after
  its first, that handler's part of the change becomes a dead letter (store/case_followup_dead.py:
  handler, last error, attempts, first/last attempt) and counts as done, so the change's other
  handlers go on and the entry is finished once they are done. A supervisor's retry puts the
  change back on the stream for that handler alone, with a fresh budget (`retry`).
Then the entry is acknowledged and deleted. `run` belongs under the supervisor (app.py).

Registration (app.py): `followup.register("webhooks", webhook_handler(webhooks.publish))`; the
notices helper registers its handler the same way (`followup.register("notices", …)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ivrserver.domain.cases import CaseChange
from ivrserver.metrics import Metrics
from ivrserver.store import cases as store
from ivrserver.store.case_followup_dead import (
    ENTRY_RE,
    HANDLER_RE,
    ID_RE,
    MAX_ERROR,
    DeadLetter,
    DeadLetters,
    Failures,
)
from ivrserver.store.keys import Keys

log = logging.getLogger(__name__)

GROUP = "case-followup"
DONE_TTL = 7 * 86400
Handler = Callable[[CaseChange], Awaitable[None]]
Audit = Callable[..., Awaitable[Any]]
# user:password@ in a URL an exception may quote (a Redis or HTTP address): never kept in an error
LETTER_ID_RE = ID_RE  # "<entry id>.<handler>": a dead letter's id (REST checks it before asking Redis)
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]*@")


class DeadLetterNotFound(LookupError):
    """Not a dead letter (never was, expired, or retried already)."""


def error_text(exc: BaseException) -> str:
    """What a dead letter and the log keep of a failure: one line, no credentials, bounded."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = _CREDENTIALS.sub("***@", text)
    return "".join(c if c.isprintable() else " " for c in text)[:MAX_ERROR]


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
                 handler_timeout: float = 30.0, max_attempts: int = 20, max_age: float = 86400.0,
                 dead_keep_days: int = 30, metrics: Metrics | None = None, audit: Audit | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if max_attempts < 1 or max_age <= 0:
            raise ValueError("max_attempts must be at least 1 and max_age above 0")
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle * 1000)
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.handler_timeout = handler_timeout
        self.max_attempts = max_attempts
        self.max_age = max_age
        self.dead = DeadLetters(redis, keys, keep_days=dead_keep_days)
        self.metrics = metrics
        self.audit = audit
        self.clock = clock
        self.handlers: dict[str, Handler] = {}
        self.delivered = 0  # changes every handler took
        self._retry: dict[str, tuple[int, float]] = {}  # entry id → (failures, next attempt, monotonic)
        self._next_claim = 0.0

    def register(self, name: str, handler: Handler) -> None:
        """Add a handler (before `run`); `name` marks what it has done, so keep it stable."""
        if not HANDLER_RE.fullmatch(name):
            raise ValueError(f"a case-change handler's name must match {HANDLER_RE.pattern}, got {name!r}")
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
            # a re-queued change (a supervisor's retry) keeps its original id: handlers stay idempotent
            event_id = fields.get("event_id") or entry_id
            if not ENTRY_RE.fullmatch(event_id):
                raise ValueError("event_id is not a stream entry id")
            change = store.case_change_from_entry(event_id, fields)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("case follow-up: unreadable case change %s (%s) moved to %s", entry_id, type(exc).__name__,
                      self.keys.case_changes_dead())
            await self.redis.xadd(self.keys.case_changes_dead(), {**fields, "entry": entry_id,
                                                                  "error": str(exc)[:200]})
            await self._finish(entry_id)
            return True
        only = fields.get("only")
        if only is not None and only not in self.handlers:
            # re-queued for a handler this instance does not have (a changed configuration): back
            # to the dead letters rather than dropped
            now = self.clock()
            failure = Failures(0, now, now, f"no handler named {only[:40]!r} on instance {self.consumer}")
            await self._bury(entry_id, event_id, only[:40], fields, failure, "no_handler", mark=False)
            await self._finish(entry_id)
            return True
        todo = {only: self.handlers[only]} if only is not None else self.handlers
        done_key = self.keys.case_change_done(entry_id)
        done = set(await self.redis.hkeys(done_key)) if len(todo) > 1 else set()
        failed = 0
        for name, handler in todo.items():
            if name in done:
                continue
            try:
                async with asyncio.timeout(self.handler_timeout):
                    await handler(change)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = await self._failed(entry_id, name, exc)
                reason = self._give_up(failure)
                if reason is None:
                    failed = max(failed, failure.attempts)
                else:
                    await self._bury(entry_id, event_id, name, fields, failure, reason, mark=len(todo) > 1)
                continue
            if len(todo) > 1:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hset(done_key, name, "1")
                    pipe.expire(done_key, DONE_TTL)
                    await pipe.execute()
        if failed:
            delay = min(self.retry_max, self.retry_base * 2 ** min(failed - 1, 30))
            self._retry[entry_id] = (failed, time.monotonic() + delay)
            return False
        await self._finish(entry_id)
        self._retry.pop(entry_id, None)
        self.delivered += 1
        return True

    async def _failed(self, entry_id: str, name: str, exc: BaseException) -> Failures:
        """Count one failed attempt in the change's shared budget; returns the handler's failures so far."""
        failure = await self.dead.count_failure(entry_id, name, now=self.clock(), error=error_text(exc), ttl=DONE_TTL)
        log.warning("case follow-up: handler %s failed on change %s (attempt %d of %d): %s", name, entry_id,
                    failure.attempts, self.max_attempts, failure.error)
        return failure

    def _give_up(self, failure: Failures) -> str | None:
        if failure.attempts >= self.max_attempts:
            return "attempts"
        if failure.last_at - failure.first_at >= self.max_age:
            return "age"
        return None

    async def _bury(self, entry_id: str, event_id: str, name: str, fields: Mapping[str, str], failure: Failures,
                    reason: str, *, mark: bool) -> None:
        """The handler's part of the change to the dead letters and, in the same MULTI, marked done
        (`mark`: the change has other handlers, which go on)."""
        done_key = self.keys.case_change_done(entry_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            ident = self.dead.bury(pipe, entry_id=entry_id, event_id=event_id, handler=name, fields=fields,
                                   failures=failure, now=self.clock(), reason=reason)
            if mark:
                pipe.hset(done_key, name, "1")
                pipe.expire(done_key, DONE_TTL)
            pipe.hdel(self.keys.case_change_failures(entry_id), name)
            await pipe.execute()
        if self.metrics is not None:
            self.metrics.child(self.metrics.case_followup_dead, name).inc()
        log.error("case follow-up: handler %s gave up on change %s (%s, %d attempts): dead letter %s; %s",
                  name, event_id, reason, failure.attempts, ident, failure.error)

    async def _finish(self, entry_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.case_changes(), GROUP, entry_id)
            pipe.xdel(self.keys.case_changes(), entry_id)
            pipe.delete(self.keys.case_change_done(entry_id))
            pipe.delete(self.keys.case_change_failures(entry_id))
            await pipe.execute()

    # ---- supervisors ---------------------------------------------------------------------------
    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        return await self.dead.list(limit=limit)

    async def retry(self, ident: str, *, by: str, source: str = "") -> str:
        """Re-queue a dead letter's change for its handler alone, once (audited); the new entry's
        id. DeadLetterNotFound when it is not a dead letter (a second retry included)."""
        entry = await self.dead.retry(ident)
        if entry is None:
            raise DeadLetterNotFound(ident)
        log.info("case follow-up: dead letter %s re-queued as %s by %s", ident, entry, by)
        if self.audit is not None:
            await self.audit(who=by, role="supervisor", what="case_followup.retry", target=ident, why="",
                             allowed=True, at=self.clock(), source=source)
        return entry

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
                if "NOGROUP" in str(exc):
                    # Redis lost the stream and its group (a flush, a restart without persistence):
                    # without the group no change written since would ever be followed
                    with contextlib.suppress(Exception):
                        await self.ensure_group()
                        log.warning("case follow-up: the case changes' consumer group was gone (Redis lost its "
                                    "data); created again")
                        await asyncio.sleep(0.2)  # never a busy loop, whatever Redis answers next
                        continue
                log.warning("case follow-up: cannot read case changes (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2

    async def drain(self, timeout: float = 10.0) -> None:
        """Until the stream holds no entry (tests, shutdown); a handler still failing within its
        budget (max_attempts, max_age) makes it time out."""
        await self.ensure_group()
        async with asyncio.timeout(timeout):
            while await self.redis.xlen(self.keys.case_changes()):
                await self.step()


def _entries(reply: Any) -> list[tuple[str, Mapping[str, str]]]:
    out: list[tuple[str, Mapping[str, str]]] = []
    for _stream, rows in reply or ():
        out.extend((str(i), f) for i, f in rows if f)
    return out

