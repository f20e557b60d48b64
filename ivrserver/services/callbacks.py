"""Callback use cases: the scheduler loop, the placer of one claimed job, and the API service.

Exactly-once placement, step by step (a crash may happen between any two steps):
1. claim (Lua: due → leased with a token,          crash → lease expires, reaper re-queues
   returning the records with the leases)
2+3. start_dial (one Lua script, token-guarded):   crash → next holder sees the marker: never
   save the record as dialing attempt N, SET NX    re-dials; the attempt ends "unknown" → failed
   the placed marker (id, N), refresh the lease    (a lost lease writes nothing: never dials)
4. originate with ChannelId "<id>-<N>"             Asterisk refuses a live duplicate itself
   (the lease is renewed every lease/3 while the dial runs; quick dials need no renewal)
5. write the outcome + settle the lease (token-guarded)
A record "dialing N" without a marker (a holder cancelled during step 2+3 gave the marker back)
is resumed: attempt N was never dialed, so the next holder dials it.

A marker without an outcome (the holder died between 2+3 and 5): every instance's AMI observer
records the callback channels Asterisk reports and how long its link has watched without a gap
(pbx/callback_dialer.CallbackObserver). The next holder asks `domain.callbacks.takeover`: the call
seen with an outcome → that outcome is written; seen without → "unknown" (never dialed again);
not seen while an observer watched throughout → attempt N is re-dialed with the same ChannelId,
its marker passed to the new holder; otherwise "unknown". The dialer sends no Originate later
than half a lease after the marker, so a stalled (not dead) holder cannot dial behind a re-dial.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from ivrserver.config import RedisSettings
from ivrserver.domain import callbacks as policy_mod
from ivrserver.domain import phone
from ivrserver.domain.callback_access import Actor, Role, placement_refusal, visible_because
from ivrserver.domain.callbacks import (
    AttemptOutcome,
    Callback,
    CallbackMode,
    CallbackPolicy,
    CallbackState,
    GiveUp,
    InvalidTransition,
    QueueEntry,
    RequestInvalid,
    WaitUntil,
)
from ivrserver.domain.model import ContactPreferences, Customer
from ivrserver.domain.working_days import WorkingDays
from ivrserver.store import customers as customer_store
from ivrserver.store.callbacks import CallbackStore, Claim, DialStart, UpdateResult
from ivrserver.store.client import connect_for_command
from ivrserver.store.keys import Keys

log = logging.getLogger(__name__)

# what [ivrserver-notify] plays from a variable (its REGEX): sound file names, '&' between several
SOUND_NAME = re.compile(r"^[A-Za-z0-9_/&-]{1,400}$")


# ----------------------------------------------------------------------------- dialer port

class DialOutcome(enum.StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    REFUSED_DUPLICATE = "refused_duplicate"  # Asterisk: ChannelId already in use


@dataclass(frozen=True)
class DialResult:
    outcome: DialOutcome
    # Which leg the outcome is about: agent-first dials the agent first; a busy/no-answer/failure
    # on the agent leg means the customer was never rung.
    leg: str = "customer"  # "agent" | "customer"
    uniqueid: str = ""
    reason: str = ""
    # True when the result was known only after the call ended (agent-first: the dialplan's
    # CallbackResult comes from the `h` extension), so an answered call is already done.
    ended: bool = False
    # FAILED with no channel made, for a reason Asterisk does not tell apart on AMI (an unknown
    # endpoint, or this ChannelId still in use): a takeover's re-dial reads it as "the call exists".
    ambiguous: bool = False


class Dialer(Protocol):
    """Places one call (the lead implements it on AMI Originate, Async: true, ChannelId=channel_id).

    Must return a DialResult for every outcome it knows, including "nothing was sent" (FAILED).
    Raise only when it cannot tell whether the call was queued: the attempt then counts as
    dialed with an unknown outcome and is never dialed again. `send_by` (epoch): send nothing
    after it (FAILED) — past it, another instance may already have taken the attempt over.
    """

    async def originate(self, *, channel_id: str, agent_endpoint: str | None, customer_dial: str,
                        context: str, variables: dict[str, str], timeout_s: int,
                        send_by: float | None = None) -> DialResult: ...


FreeAgents = Callable[[str], Awaitable[list[str]]]  # tier → free agent ids, longest idle first
IsFree = Callable[[str], Awaitable[bool]]
RecordAttempt = Callable[[Callback, policy_mod.Attempt], Awaitable[None]]
# Told every record the placer wrote after a dial or a give-up (the notices follow their calls' outcomes).
OnPlaced = Callable[[Callback], Awaitable[None]]
PreferencesOf = Callable[[str], Awaitable[ContactPreferences | None]]
# A notice call's last look before it dials (services/notices.NoticeService.before_dial), given the
# instant it is to dial (now, or the opening it waits for): the record to go on with — unchanged,
# without the notices no longer wanted, or cancelled when none is left.
BeforeDial = Callable[[Callback, float], Awaitable[Callback]]
QueueSnapshot = Callable[[str], Awaitable[tuple[Sequence[QueueEntry], int]]]  # queue → (live, free)


class PlaceResult(enum.StrEnum):
    PLACED = "placed"  # dialed; outcome written
    WAITING = "waiting"  # not yet: outside calling hours / no agent / virtual hold → re-queued
    GAVE_UP = "gave_up"  # final state failed without dialing
    SKIPPED = "skipped"  # record missing or not waiting any more: job dropped
    RECOVERED_UNKNOWN = "recovered_unknown"  # a dead holder may have dialed it: not dialed again
    RECOVERED_OBSERVED = "recovered_observed"  # a dead holder dialed it: the outcome AMI showed is written
    REDIALED = "redialed"  # a dead holder marked it but never dialed: dialed now (same ChannelId)
    ALREADY_PLACED = "already_placed"  # the marker was taken: not dialed
    CANCELLED = "cancelled"  # a notice call nothing on it is wanted any more: cancelled, never dialed
    LEASE_LOST = "lease_lost"


def _outcome(result: DialResult) -> AttemptOutcome:
    if result.outcome is DialOutcome.REFUSED_DUPLICATE:
        return AttemptOutcome.UNKNOWN
    if result.outcome is DialOutcome.ANSWERED:
        return AttemptOutcome.ANSWERED
    if result.leg == "agent":
        return AttemptOutcome.AGENT_UNAVAILABLE
    return {DialOutcome.BUSY: AttemptOutcome.BUSY, DialOutcome.NO_ANSWER: AttemptOutcome.NO_ANSWER,
            DialOutcome.FAILED: AttemptOutcome.FAILED}[result.outcome]


async def _no_record(cb: Callback, attempt: policy_mod.Attempt) -> None:
    return None


def policy_from_settings(settings: Any, *, phone_region: str = "",
                         working_days: WorkingDays | None = None) -> CallbackPolicy:
    """CallbackPolicy from `config.CallbackSettings` (duck-typed to keep imports one-way), the
    region numbers are read in (`phone.default_region`) and the public-holiday calendar."""
    return CallbackPolicy(calling_from=settings.calling_from, calling_until=settings.calling_until,
                          max_attempts=settings.max_attempts, grace_seconds=float(settings.grace_seconds),
                          phone_region=phone_region, working_days=working_days)


# ----------------------------------------------------------------------------- placer

class CallbackPlacer:
    """Places one claimed job: policy check, placed marker, dial, outcome, settle the lease."""

    def __init__(self, store: CallbackStore, dialer: Dialer, policy: CallbackPolicy, *,
                 free_agents: FreeAgents, is_free: IsFree, record_attempt: RecordAttempt = _no_record,
                 preferences: PreferencesOf | None = None, queue_snapshot: QueueSnapshot | None = None,
                 endpoint_of: Callable[[str], str] = lambda agent: f"PJSIP/{agent}",
                 customer_dial: str = "PJSIP/{number}@customers",
                 callback_context: str = "ivrserver-callback", notify_context: str = "ivrserver-notify",
                 agent_ring_seconds: int = 20, customer_ring_seconds: int = 30,
                 lease_seconds: float = 60.0, instance: str = "ivrserver",
                 clock: Callable[[], float] = time.time, on_placed: OnPlaced | None = None,
                 before_dial: BeforeDial | None = None,
                 observe_interval: float = 1.0, observe_margin: float = 2.0) -> None:
        self.store = store
        self.dialer = dialer
        self.on_placed = on_placed
        self.before_dial = before_dial
        self.policy = policy
        self.free_agents = free_agents
        self.is_free = is_free
        self.record_attempt = record_attempt
        self.preferences = preferences
        self.queue_snapshot = queue_snapshot
        self.endpoint_of = endpoint_of
        self.customer_dial = customer_dial
        self.callback_context = callback_context
        self.notify_context = notify_context
        self.agent_ring_seconds = agent_ring_seconds
        self.customer_ring_seconds = customer_ring_seconds
        self.lease_seconds = lease_seconds
        self.instance = instance
        self.clock = clock
        self.observe_margin = observe_margin
        # An observer's word counts if it recorded everything until this long ago: two of its
        # beats and the margin, and never more than a third of a lease (see _recover).
        self.fresh_within = min(2 * observe_interval + observe_margin, lease_seconds / 3)

    async def place(self, claim: Claim) -> PlaceResult:
        cb = claim.record if claim.loaded else await self.store.get(claim.callback_id)
        if cb is None or cb.state not in (CallbackState.SCHEDULED, CallbackState.RETRY_WAIT,
                                          CallbackState.DIALING):
            await self.store.complete(claim, None)
            return PlaceResult.SKIPPED
        prefs = await self._prefs(cb)
        if cb.state is CallbackState.DIALING:
            return await self._recover(claim, cb, prefs)
        now = self.clock()
        decision = policy_mod.plan_attempt(cb, prefs, self.policy, now)
        if isinstance(decision, GiveUp):
            failed = policy_mod.fail(cb, decision.reason, now)
            if await self.store.complete(claim, failed):
                await self._placed(failed)
            return PlaceResult.GAVE_UP
        if cb.notice and self.before_dial is not None:
            # a notice call: only the notices still wanted go (consent as of now), or none
            cb = await self.before_dial(cb, decision.at if isinstance(decision, WaitUntil) else now)
            if cb.state is CallbackState.CANCELLED:
                if not await self.store.cancel(claim, cb):
                    return PlaceResult.LEASE_LOST  # the next holder looks again
                await self._placed(cb)
                return PlaceResult.CANCELLED
        if isinstance(decision, WaitUntil):
            return await self._wait(claim, cb, decision.at, now, move_due=True)
        if cb.queue_place is not None and self.queue_snapshot is not None:
            live, free = await self.queue_snapshot(cb.queue_place.queue)
            if not policy_mod.virtual_hold_ready(cb.queue_place, cb.id, live, free):
                return await self._wait(claim, cb, now + self.policy.virtual_hold_recheck_seconds, now,
                                        move_due=False)
        agent: str | None = None
        if cb.mode is CallbackMode.AGENT_FIRST:
            choice = await self._choose_agent(cb, claim, now)
            if choice.agent_id is None:
                return await self._wait(claim, cb, now + self.policy.agent_recheck_seconds, now, move_due=False)
            agent = choice.agent_id
        return await self._dial(claim, policy_mod.start_attempt(cb, now, agent), prefs)

    async def _prefs(self, cb: Callback) -> ContactPreferences:
        if self.preferences is None:
            return cb.preferences
        fresh = await self.preferences(cb.customer_id)
        if fresh is None:
            return cb.preferences
        if cb.notice:
            # A notice call: nobody agreed a time for it, so the customer's hours and time zone as
            # of now too (changed since it was scheduled: it waits for the new hours, or gives up).
            return fresh
        # Time zone and hours as agreed on the request; do-not-call as of now.
        return dataclasses.replace(cb.preferences, do_not_call=fresh.do_not_call)

    async def _choose_agent(self, cb: Callback, claim: Claim, now: float) -> policy_mod.AgentChoice:
        pref = cb.preferred_agent
        pref_free = await self.is_free(pref) if pref else False
        free = [] if pref_free else await self.free_agents(cb.tier)
        due = cb.due_at if cb.due_at is not None else claim.due
        return policy_mod.choose_agent(pref, pref_free, free, due, now, self.policy.grace_seconds)

    async def _wait(self, claim: Claim, cb: Callback, at: float, now: float, *, move_due: bool) -> PlaceResult:
        """Re-queue the job for a look at `at`. `move_due`: the attempt itself is now due then (calling
        window); otherwise the attempt stays due when it was (the agent grace counts from it)."""
        record = policy_mod.wait_until(cb, at, now) if move_due else None
        ok = await self.store.reschedule(claim, record, at)
        return PlaceResult.WAITING if ok else PlaceResult.LEASE_LOST

    async def _recover(self, claim: Claim, cb: Callback, prefs: ContactPreferences) -> PlaceResult:
        """The previous holder died while dialing attempt N."""
        holder = await self.store.placed_by(cb.id, cb.attempts)
        if holder is None:
            # It died before taking the marker: attempt N was never dialed, dial it now.
            log.info("callback %s: resuming attempt %d (never dialed)", cb.id, cb.attempts)
            return await self._dial(claim, cb, prefs)
        # It took the marker and died before writing the outcome. Its Originate (if any) left at
        # most half a lease after the marker (send_by) and its lease ran at least a lease past the
        # marker: an observer that recorded everything until `fresh_within` (≤ a third of a lease)
        # ago had a sixth of a lease (10 s by default) to see the channel.
        now = self.clock()
        seen = await self.store.observation(cb.id, cb.attempts)
        links = await self.store.observers(now) if seen is None else []
        decision = policy_mod.takeover(cb.mode, holder, seen, links, now, margin=self.observe_margin,
                                       fresh_within=self.fresh_within)
        if decision.action is policy_mod.TakeoverAction.REDIAL:
            log.warning("callback %s attempt %d: %s", cb.id, cb.attempts, decision.detail)
            return await self._dial(claim, cb, prefs, dead_holder=holder)
        if decision.action is policy_mod.TakeoverAction.RECORD and decision.outcome is not None:
            done = policy_mod.after_attempt(cb, decision.outcome, prefs, self.policy, now, detail=decision.detail)
            if decision.ended and done.state is CallbackState.CONNECTED:
                done = policy_mod.finish(done, now, "completed")
            log.warning("callback %s attempt %d: %s", cb.id, cb.attempts, decision.detail)
            result = PlaceResult.RECOVERED_OBSERVED
        else:
            done = policy_mod.after_attempt(cb, AttemptOutcome.UNKNOWN, prefs, self.policy, now,
                                            detail=decision.detail)
            log.warning("callback %s attempt %d: %s; not dialing again", cb.id, cb.attempts, decision.detail)
            result = PlaceResult.RECOVERED_UNKNOWN
        await self._write_outcome(claim, done)
        return result

    def _call_args(self, cb: Callback) -> dict[str, Any]:
        n = cb.attempts
        variables = {"CB_ID": cb.id, "CB_ATTEMPT": str(n), "CB_NUMBER": cb.number,
                     "CB_DIAL": self.customer_dial.format(number=cb.number)}
        # Only ids and digits go into channel variables (AMI splits values on commas); the
        # agent-visible context is read from the record by CB_ID for the screen-pop.
        if cb.mode is CallbackMode.CUSTOMER_FIRST:
            variables.update(NOTIFY_ID=cb.id, NOTIFY_PROMPT=cb.prompt)
            # a notice's "press 1" and "goodbye" in its language: sound names only (a comma would
            # split the value into another variable), else nothing (the dialplan's stock sounds)
            for name, sound in (("NOTIFY_PRESS", cb.press_prompt), ("NOTIFY_BYE", cb.bye_prompt)):
                if sound and SOUND_NAME.match(sound):
                    variables[name] = sound
        agent = cb.history[-1].agent_id if cb.history else None
        return dict(
            channel_id=f"{cb.id}-{n}",
            agent_endpoint=self.endpoint_of(agent) if agent else None,
            customer_dial=variables["CB_DIAL"],
            context=self.callback_context if cb.mode is CallbackMode.AGENT_FIRST else self.notify_context,
            variables=variables,
            timeout_s=self.agent_ring_seconds if agent else self.customer_ring_seconds,
        )

    async def _dial(self, claim: Claim, cb: Callback, prefs: ContactPreferences, *,
                    dead_holder: str | None = None) -> PlaceResult:
        """Mark and dial attempt `cb.attempts`; with `dead_holder`, re-dial the attempt that holder
        marked and never dialed (the marker passes to this holder)."""
        now = self.clock()
        holder = f"{self.instance} {claim.token} {now:.3f}"
        try:
            if dead_holder is None:
                started = await self.store.start_dial(claim, cb, holder, now=now, lease_seconds=self.lease_seconds)
            else:
                started = await self.store.take_over_dial(claim, cb, dead_holder, holder, now=now,
                                                          lease_seconds=self.lease_seconds)
        except asyncio.CancelledError:
            # Shut down while taking the marker: nothing was dialed, so if the script ran, give
            # the marker back and let the next holder dial this attempt (it finds "dialing N"
            # without a marker). A SIGKILL here leaves the marker: that attempt then ends
            # "unknown" rather than risk a second call.
            await asyncio.shield(self.store.unmark_placed(cb.id, cb.attempts, holder))
            raise
        if started is DialStart.LEASE_LOST:
            return PlaceResult.LEASE_LOST
        if started is DialStart.ALREADY_PLACED:
            log.warning("callback %s attempt %d: placed marker already taken; not dialing", cb.id, cb.attempts)
            return PlaceResult.ALREADY_PLACED
        try:
            async with self._keep_lease(claim):
                result = await self.dialer.originate(**self._call_args(cb), send_by=now + self.lease_seconds / 2)
            outcome, detail, ended = _outcome(result), result.reason, result.ended
            if dead_holder is not None and result.ambiguous and outcome is not AttemptOutcome.ANSWERED:
                # Refused maybe because the first call is up after all: it happened.
                outcome, detail = AttemptOutcome.UNKNOWN, f"re-dial refused ({result.reason}): the first call may be up"
        except Exception as exc:  # the Dialer could not tell whether the call went out
            log.exception("callback %s attempt %d: dialer raised", cb.id, cb.attempts)
            outcome, detail, ended = AttemptOutcome.UNKNOWN, f"dialer error: {exc!r}", False
        done = policy_mod.after_attempt(cb, outcome, prefs, self.policy, self.clock(), detail=detail)
        if ended and done.state is CallbackState.CONNECTED:
            done = policy_mod.finish(done, self.clock(), "completed")
        # The call has happened: write its outcome even if we are being shut down meanwhile.
        writing = asyncio.ensure_future(self._write_outcome(claim, done))
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            await writing
            raise
        return PlaceResult.PLACED if dead_holder is None else PlaceResult.REDIALED

    async def _write_outcome(self, claim: Claim, done: Callback) -> None:
        """The record (the scheduler's truth) first, then the contact history."""
        if done.state is CallbackState.RETRY_WAIT and done.due_at is not None:
            ok = await self.store.reschedule(claim, done, done.due_at)
        else:
            ok = await self.store.complete(claim, done)
        if not ok:
            log.error("callback %s attempt %d: lease lost before the outcome %s was written",
                      done.id, done.attempts, done.history[-1].outcome)
        await self._record(done)
        if ok:
            await self._placed(done)

    async def _placed(self, done: Callback) -> None:
        if self.on_placed is None:
            return
        try:
            await self.on_placed(done)
        except Exception:
            log.exception("callback %s: the follower of its outcome failed", done.id)

    async def _record(self, done: Callback) -> None:
        try:
            await self.record_attempt(done, done.history[-1])
        except Exception:
            log.exception("callback %s attempt %d: could not write the contact history", done.id, done.attempts)

    @contextlib.asynccontextmanager
    async def _keep_lease(self, claim: Claim) -> AsyncIterator[None]:
        """Renew the lease while the dial runs, so a slow call is not reaped and re-claimed.

        start_dial has just refreshed the lease, so the first renewal is due only after a third
        of it: a dial that ends sooner (most do) costs no renewal and no task."""
        period = self.lease_seconds / 3

        async def renew() -> None:
            while True:
                try:
                    if not await self.store.renew(claim, self.clock(), self.lease_seconds):
                        log.warning("callback %s: lease lost while dialing", claim.callback_id)
                        return
                except (OSError, RedisError):
                    # Keep the dial and its known outcome; the lease may still hold until the next try.
                    log.warning("callback %s: could not renew the lease", claim.callback_id, exc_info=True)
                await asyncio.sleep(period)

        task: asyncio.Task[None] | None = None

        def start() -> None:
            nonlocal task
            task = asyncio.create_task(renew())

        timer = asyncio.get_running_loop().call_later(period, start)
        try:
            yield
        finally:
            timer.cancel()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


# ----------------------------------------------------------------------------- scheduler

class CallbackScheduler:
    """Claims due jobs and hands them to the placer; several instances may share one Redis.

    It sleeps until the next job falls due or the next lease expires (both come back with every
    claim), at most `poll_interval`, and wakes at once on `wake()` — a callback requested or
    rescheduled on this instance — or when a full set of placements gets room again. Idle, it costs
    one claim round trip per `poll_interval` (the fixed 0.2 s poll was most of an idle server's CPU).
    Under a stream of due jobs it still waits `min_sleep` between claims, so one claim takes a batch
    instead of every instance waking for every single job (bench/callbacks_bench.py).
    """

    def __init__(self, store: CallbackStore, placer: CallbackPlacer, *, instance: str,
                 poll_interval: float = 1.0, lease_seconds: float = 60.0, batch: int = 50,
                 concurrency: int = 50, min_sleep: float = 0.02,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.placer = placer
        self.instance = instance
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.concurrency = concurrency
        self.min_sleep = min_sleep
        self.clock = clock
        self.results: dict[PlaceResult, int] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._next_expiry: float | None = 0.0  # reap once at start: a dead instance may have left leases
        self._wake = asyncio.Event()
        self._wake_on_room = False
        self.redis_down = False  # the last tick failed on Redis (logged once until it is back)

    def wake(self) -> None:
        """A job's due time changed on this instance: look at the due queue now."""
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled. Cancelling abandons in-flight jobs: their leases expire and the reaper
        of any instance re-queues them."""
        async with asyncio.TaskGroup() as tg:
            while True:
                self._wake.clear()
                try:
                    delay = await self._tick(tg)
                except (OSError, RedisError) as exc:
                    # One line when Redis goes away and one when it is back, not a traceback a tick.
                    if not self.redis_down:
                        self.redis_down = True
                        log.warning("callback scheduler %s: Redis unavailable (%s: %s); retrying every %gs",
                                    self.instance, type(exc).__name__, exc, self.poll_interval)
                    delay = self.poll_interval
                else:
                    if self.redis_down:
                        self.redis_down = False
                        log.warning("callback scheduler %s: Redis back; placing due callbacks", self.instance)
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()

    async def _tick(self, tg: asyncio.TaskGroup) -> float:
        """Reap if a lease may have expired, claim what is due; returns how long to sleep."""
        now = self.clock()
        if self._next_expiry is not None and now >= self._next_expiry:
            reaped = await self.store.reap(now)
            if reaped:
                log.warning("re-queued %d callbacks whose lease expired", len(reaped))
            self._next_expiry = None  # the claim below tells the next one
        room = min(self.batch, self.concurrency - len(self._inflight))
        if room <= 0:
            self._wake_on_room = True  # a finished placement wakes the loop
            return self.poll_interval
        found = await self.store.claim_batch(now, lease_seconds=self.lease_seconds, limit=room,
                                             claimer=self.instance)
        for claim in found.claims:
            task = tg.create_task(self._place(claim))
            self._inflight.add(task)
            task.add_done_callback(self._placed)
        self._next_expiry = found.next_expiry
        if len(found.claims) == room:
            return 0.0  # there may be more due right now
        delay = self.poll_interval
        for at in (found.next_due, found.next_expiry):
            if at is not None:
                delay = min(delay, at - now)
        return max(self.min_sleep, delay)

    def _placed(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._wake_on_room:
            self._wake_on_room = False
            self._wake.set()

    async def _place(self, claim: Claim) -> None:
        try:
            result = await self.placer.place(claim)
        except (OSError, RedisError) as exc:
            # Redis went away mid-placement: the scheduler's loop logs the outage once.
            log.warning("callback %s: placement interrupted (%s); lease left to expire", claim.callback_id,
                        type(exc).__name__)
            return
        except Exception:
            # Leave the lease: it expires and the job is re-queued (at-least-once; the placed
            # marker keeps the dial at-most-once).
            log.exception("callback %s: placement failed; lease left to expire", claim.callback_id)
            return
        self.results[result] = self.results.get(result, 0) + 1


# ----------------------------------------------------------------------------- API service

class CallbackNotFound(LookupError):
    pass


class CallbackBusy(RuntimeError):
    """The callback is being placed right now, or changed concurrently: try again."""


class CallbackForbidden(PermissionError):
    """The actor may not see, change or place this callback (the message says why)."""


CustomerOf = Callable[[str], Awaitable[Customer | None]]
GrantsOf = Callable[[str], Awaitable[Collection[str]]]  # agent id → customers with a live grant


class Audit(Protocol):
    """The audit log (store.pops.AuditLog.append): every read of a callback, allowed or denied."""

    async def __call__(self, *, who: str, role: str, what: str, target: str, why: str, allowed: bool,
                       at: float, source: str = "") -> object: ...


def customer_lookup(redis: Any, keys: Keys) -> CustomerOf:
    """The customer records in Redis, as CallbackService reads them (tier, phones, preferences)."""

    async def get(customer_id: str) -> Customer | None:
        return await customer_store.get_customer(redis, keys, customer_id)

    return get


class CallbackService:
    """Request, list, get, reschedule, cancel (REST / CLI / IVR / agent page).

    Every method takes the `actor` who asks (`domain.callback_access`): agents see and change only
    their own callbacks (requested, preferred, or of a customer they hold a live grant for) and
    may only request agent-first calls to a number on the customer's record; reads, changes and
    refusals are written to `audit`. Without an actor the caller is the system itself (IVR, CLI).
    """

    def __init__(self, store: CallbackStore, policy: CallbackPolicy, *,
                 preferences: PreferencesOf | None = None, customer: CustomerOf | None = None,
                 grants: GrantsOf | None = None, audit: Audit | None = None,
                 new_id: Callable[[], str] = lambda: "cb" + uuid.uuid4().hex[:20],
                 on_due: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policy = policy
        self.preferences = preferences
        self.customer = customer  # the customer's record: tier, phones and contact preferences
        self.grants = grants
        self.audit = audit
        self.new_id = new_id
        self.on_due = on_due  # this instance's scheduler: a new due time is claimed on time
        self.clock = clock

    async def _audit(self, actor: Actor | None, what: str, target: str, why: str, allowed: bool) -> None:
        if actor is None or self.audit is None or actor.role is Role.SYSTEM:
            return
        await self.audit(who=actor.id, role=actor.role.value, what=what, target=target, why=why,
                         allowed=allowed, at=self.clock(), source=actor.source)

    def _phones_of(self, customer: Customer | None) -> list[str] | None:
        """The customer's numbers in the form a request's number takes (the one phone normaliser,
        with the region requests are read in), so a record written before a region was set matches."""
        if customer is None:
            return None
        region = getattr(self.policy, "phone_region", "")
        return [phone.try_normalise(p, region) or p for p in customer.phones]

    async def _granted(self, actor: Actor) -> Collection[str]:
        if actor.privileged or self.grants is None:
            return ()
        return await self.grants(actor.id)

    async def request(self, raw: Mapping[str, Any], *, requested_by: str | None = None,
                      actor: Actor | None = None) -> Callback:
        now = self.clock()
        req = policy_mod.validate_request(raw, now, self.policy)
        found = await self.customer(req.customer_id) if self.customer is not None else None
        if actor is not None:
            refusal = placement_refusal(actor, customer_first=req.mode is CallbackMode.CUSTOMER_FIRST,
                                        number=req.number, customer_phones=self._phones_of(found))
            if refusal is not None:
                await self._audit(actor, "callback.request", req.customer_id, refusal, False)
                raise CallbackForbidden(refusal)
            requested_by = requested_by or actor.requester
        if raw.get("tier") is None and found is not None:
            # The customer's tier decides which agents may take it after the grace period.
            req = dataclasses.replace(req, tier=found.tier.value)
        if found is not None:
            profile: ContactPreferences | None = found.preferences
        else:
            profile = await self.preferences(req.customer_id) if self.preferences else None
        prefs = policy_mod.merged_preferences(req, profile)
        cb = policy_mod.new_callback(req, self.new_id(), now, prefs, requested_by)
        cb = policy_mod.schedule(cb, self.policy, now)
        if not await self.store.create(cb):
            raise CallbackBusy(f"callback id {cb.id} already exists")
        await self._audit(actor, "callback.request", cb.customer_id, f"callback {cb.id}", True)
        self._due_changed(cb.due_at)
        return cb

    def _due_changed(self, due: float | None) -> None:
        if due is not None and self.on_due is not None:
            self.on_due()

    async def list(self, *, state: str | None = None, agent: str | None = None,
                   customer: str | None = None, limit: int = 100, actor: Actor | None = None) -> list[Callback]:
        """Newest first; an agent gets only the callbacks visible to them."""
        st = None
        if state is not None:
            try:
                st = CallbackState(state)
            except ValueError:
                raise RequestInvalid({"state": f"one of {', '.join(s.value for s in CallbackState)}, "
                                               f"got {state!r}"}) from None
        if actor is None or actor.privileged:
            found = await self.store.list(state=st, agent=agent, customer=customer, limit=limit)
        else:
            granted = await self._granted(actor)
            found = await self.store.list(
                state=st, agent=agent, customer=customer, limit=limit,
                where=lambda cb: visible_because(actor, customer_id=cb.customer_id, requested_by=cb.requested_by,
                                                 preferred_agent=cb.preferred_agent, granted=granted) is not None)
        await self._audit(actor, "callback.list", customer or "*", f"{len(found)} listed", True)
        return found

    async def get(self, callback_id: str, *, actor: Actor | None = None, purpose: str = "callback.read") -> Callback:
        cb = await self.store.get(callback_id)
        if cb is None:
            raise CallbackNotFound(f"no callback {callback_id!r}")
        if actor is not None:
            basis = visible_because(actor, customer_id=cb.customer_id, requested_by=cb.requested_by,
                                    preferred_agent=cb.preferred_agent, granted=await self._granted(actor))
            await self._audit(actor, purpose, cb.customer_id, f"callback {cb.id} ({basis or 'not theirs'})",
                              basis is not None)
            if basis is None:
                raise CallbackForbidden(f"callback {callback_id} is not yours: it was neither requested by you, "
                                        f"nor prefers you, nor is it of a customer you are handling")
        return cb

    async def _update(self, old: Callback, new: Callback, due: float | None) -> Callback:
        result = await self.store.update(new, expected_version=old.version, due=due)
        if result is UpdateResult.OK:
            self._due_changed(due)
            return new
        if result is UpdateResult.MISSING:
            raise CallbackNotFound(f"no callback {old.id!r}")
        if result is UpdateResult.LEASED:
            raise CallbackBusy(f"callback {old.id} is being placed right now; try again in a moment")
        raise CallbackBusy(f"callback {old.id} changed meanwhile; reload and try again")

    async def reschedule(self, callback_id: str, raw: Mapping[str, Any], *, actor: Actor | None = None) -> Callback:
        unknown = sorted(k for k in raw if k not in ("at", "earliest", "latest"))
        if unknown:
            raise RequestInvalid({"body": f"unknown field(s): {', '.join(unknown)}"})
        old = await self.get(callback_id, actor=actor, purpose="callback.reschedule")
        now = self.clock()
        errors: dict[str, str] = {}
        window = policy_mod.validate_window(raw, now, self.policy, errors)
        if window is None:
            raise RequestInvalid(errors)
        new = policy_mod.reschedule(old, window[0], window[1], self.policy, now)
        return await self._update(old, new, new.due_at)

    async def cancel(self, callback_id: str, *, reason: str = "cancelled", actor: Actor | None = None) -> Callback:
        old = await self.get(callback_id, actor=actor, purpose="callback.cancel")
        new = policy_mod.cancel(old, self.clock(), reason or "cancelled")
        return await self._update(old, new, None)

    async def mark_done(self, callback_id: str, *, disposition: str = "") -> Callback:
        """The bridged callback call ended (the lead calls this on its Hangup): connected → done."""
        old = await self.get(callback_id)
        new = policy_mod.finish(old, self.clock(), disposition)
        return await self._update(old, new, None)


__all__ = [
    "Actor", "CallbackBusy", "CallbackForbidden", "CallbackNotFound", "CallbackPlacer", "CallbackScheduler",
    "CallbackService", "DialOutcome", "DialResult", "Dialer", "InvalidTransition", "PlaceResult", "Role",
    "customer_lookup", "policy_from_settings",
]


@contextlib.asynccontextmanager
async def for_command(redis_settings: RedisSettings, url: str | None, policy: CallbackPolicy, *,
                      prefix: str | None = None, records: bool = False) -> AsyncIterator[CallbackService]:
    """A CallbackService on its own Redis connection for one CLI command (`ivrserver callbacks …`),
    closed on exit; `prefix` overrides redis.prefix. The callback's tier defaults to the customer's
    (as on REST and the agent page). `records`: a system of record is configured (postgres.dsn):
    a callback the command finishes goes to the outbox and expires after redis.hot_days, as the
    server's do."""
    client = connect_for_command(redis_settings, url, decode_responses=True)
    keys = Keys(prefix or redis_settings.prefix, records=records)
    try:
        yield CallbackService(CallbackStore(client, keys, hot_days=redis_settings.hot_days), policy, clock=time.time,
                              customer=customer_lookup(client, keys))
    finally:
        await client.aclose()
