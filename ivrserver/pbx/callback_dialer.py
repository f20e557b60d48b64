"""The callbacks' Dialer on AMI Originate.

Agent-first: the agent's phone is originated into [ivrserver-callback]; when the agent answers,
the dialplan dials the customer and bridges them, and reports the customer leg's DIALSTATUS in a
`UserEvent: CallbackResult` when the call ends. Customer-first (notifications): the customer's
line is originated into [ivrserver-notify]; OriginateResponse tells whether they answered.

`ChannelId = <callback id>-<attempt>`: Asterisk refuses a second originate with a uniqueid in use.
Before dialing, the call context (kind callback, with the agent-visible context) is saved under
IVR_CONTEXT_ID so the agent's screen-pop shows why they are calling.

`CallbackObserver` runs on every instance: Asterisk sends every manager session the channel
events of every callback, whoever originated it, so each instance records in Redis what it saw of
a `<callback id>-<attempt>` channel (Newchannel, OriginateResponse, CallbackResult) and that its
link has been up with nothing lost. An instance taking over a job whose holder died after its
placed marker reads both (services/callbacks.py `_recover`, domain `takeover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ivrserver.domain.callbacks import SEEN_UP, CallbackMode
from ivrserver.domain.contact_tracking import CallFacts
from ivrserver.domain.model import ContactKind
from ivrserver.pbx import ami_events as ev
from ivrserver.pbx.ami import AmiClient, AmiError
from ivrserver.services.callbacks import DialOutcome, DialResult
from ivrserver.services.contact_tracker import ContactTracker
from ivrserver.store import call_context
from ivrserver.store.call_context import CallContext
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.keys import Keys

log = logging.getLogger("ivrserver.callback_dialer")

# OriginateResponse Reason (enum ast_control_frame_type): 1 hung up, 3 ringing (no answer),
# 5 busy, 8 congestion; 0 covers "no such channel" and a refused duplicate ChannelId.
_REASONS = {3: DialOutcome.NO_ANSWER, 5: DialOutcome.BUSY, 1: DialOutcome.NO_ANSWER, 8: DialOutcome.FAILED}
_STATUS = {"ANSWER": DialOutcome.ANSWERED, "BUSY": DialOutcome.BUSY, "NOANSWER": DialOutcome.NO_ANSWER,
           "CANCEL": DialOutcome.NO_ANSWER}
# The hotline number shown to the agent as the caller of a callback: digits (and + * #) only, so it
# can never break out of the Originate's CallerID header.
_HOTLINE = re.compile(r"^[0-9+*#]{1,32}$")


def callback_caller_id(hotline: str) -> str:
    """`Callback <hotline>`; ValueError for anything but a plain number (asterisk.hotline)."""
    if not isinstance(hotline, str) or not _HOTLINE.match(hotline):
        raise ValueError(f"asterisk.hotline: expected digits (and + * #), 1-32 of them, got {hotline!r}")
    return f"Callback <{hotline}>"


class AmiCallbackDialer:
    def __init__(self, ami: AmiClient, redis: aioredis.Redis, keys: Keys, store: CallbackStore, *,
                 tracker: ContactTracker | None = None, customer_ring_seconds: int = 30,
                 max_talk_seconds: int = 4 * 3600, hotline: str = "1860",
                 clock: Callable[[], float] = time.time) -> None:
        self._caller_id = callback_caller_id(hotline)
        self._ami = ami
        self._redis = redis
        self._keys = keys
        self._store = store
        self._tracker = tracker
        self._customer_ring = customer_ring_seconds
        self._max_talk = max_talk_seconds
        self._clock = clock
        self._waiting: dict[str, asyncio.Future[str]] = {}

    def on_event(self, event: object) -> None:
        """Resolve a waiting callback from the dialplan's CallbackResult user event (every AMI event
        comes here: the app's fan-out calls it in place)."""
        if isinstance(event, ev.UserEvent) and event.name == "CallbackResult":
            future = self._waiting.get(event.headers.get("CB_ID", ""))
            if future is not None and not future.done():
                future.set_result(event.headers.get("Status", "NONE"))

    async def _save_context(self, callback_id: str, context_id: str, number: str, channel_id: str) -> None:
        cb = await self._store.get(callback_id)
        # a customer-first call (a notice) is a notification in the customer's history
        kind = ContactKind.NOTIFICATION if cb is not None and cb.mode is CallbackMode.CUSTOMER_FIRST \
            else ContactKind.CALLBACK
        if self._tracker is not None:
            # Every attempt becomes a contact record (kind callback), built from the call's AMI events.
            await self._tracker.report(channel_id, CallFacts(
                kind=kind, number=number or None, customer_id=cb.customer_id if cb else None,
                context_id=context_id, routing_reason=f"scheduled callback {callback_id}"))
        ctx = CallContext(id=context_id, number=number, started_at=self._clock(), kind=kind.value,
                          customer_id=cb.customer_id if cb else None,
                          routing_reason=f"scheduled callback {callback_id}" + (
                              f" requested by {cb.requested_by}" if cb and cb.requested_by else ""),
                          callback={"id": callback_id, "reason": cb.reason if cb else "",
                                    "context": cb.context if cb else "", "case_id": cb.case_id if cb else None,
                                    "attempt": cb.attempts if cb else None,
                                    "requested_at": cb.created_at if cb else None,
                                    "preferred_agent": cb.preferred_agent if cb else None})
        await call_context.save(self._redis, self._keys, ctx)

    async def originate(self, *, channel_id: str, agent_endpoint: str | None, customer_dial: str, context: str,
                        variables: dict[str, str], timeout_s: int, send_by: float | None = None) -> DialResult:
        callback_id = variables.get("CB_ID", channel_id)
        context_id = f"cb-{channel_id}"
        try:
            await self._save_context(callback_id, context_id, variables.get("CB_NUMBER", ""), channel_id)
        except Exception as exc:  # the call still goes out; the pop will be thin
            log.error("callback context not saved", extra={"callback": callback_id, "error": str(exc)})
        agent_first = agent_endpoint is not None
        channel = agent_endpoint if agent_first else customer_dial
        if send_by is not None and self._clock() > send_by:
            # Stalled this long after the marker: another instance may take the attempt over and
            # re-dial it, so this one sends nothing (the placer's write then fails on the lost lease).
            return DialResult(DialOutcome.FAILED, leg="agent" if agent_first else "customer",
                              reason="not sent: too late after the placed marker")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[callback_id] = future
        try:
            try:
                response = await self._ami.originate(
                    channel=channel, context=context, exten="s", channel_id=channel_id,
                    caller_id=self._caller_id, variables={**variables, "IVR_CONTEXT_ID": context_id},
                    timeout_s=timeout_s)
            except AmiError as exc:
                if "not connected" in str(exc):
                    return DialResult(DialOutcome.FAILED, leg="agent" if agent_first else "customer",
                                      reason=str(exc))
                raise  # sent but no answer: the outcome is unknown, the placer decides
            if not response.success:
                outcome = _REASONS.get(response.reason, DialOutcome.FAILED)
                # Reason 0: no channel was made — an unknown endpoint, or this ChannelId still in use
                return DialResult(outcome, leg="agent" if agent_first else "customer",
                                  uniqueid=response.uniqueid, reason=f"originate reason {response.reason}",
                                  ambiguous=response.reason == 0)
            if not agent_first:
                return DialResult(DialOutcome.ANSWERED, leg="customer", uniqueid=response.uniqueid)
            try:
                async with asyncio.timeout(self._customer_ring + self._max_talk):
                    status = await future
            except TimeoutError:
                return DialResult(DialOutcome.FAILED, leg="customer", uniqueid=response.uniqueid,
                                  reason="no CallbackResult from the dialplan")
            return DialResult(_STATUS.get(status, DialOutcome.FAILED), leg="customer", uniqueid=response.uniqueid,
                              reason=f"DIALSTATUS {status}", ended=True)
        finally:
            self._waiting.pop(callback_id, None)


# ----------------------------------------------------------------------------- observer

# `<callback id>-<attempt>` (the id as domain.callbacks validates it); anything else — an inbound
# call's `1700000000.12`, a Local channel's `…;2` — is not a callback's originated channel.
_CHANNEL_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.:@-]{0,63})-([1-9][0-9]{0,3})$")
LinkState = Callable[[], tuple[bool, int]]  # (logged in, epoch: changes on every reconnect or lost event)


def callback_channel(uniqueid: object) -> tuple[str, int] | None:
    """(callback id, attempt) of a channel id ivrserver gave an Originate; None for any other."""
    if not isinstance(uniqueid, str):
        return None
    m = _CHANNEL_ID.match(uniqueid)
    return (m.group(1), int(m.group(2))) if m else None


def observation_of(event: object) -> tuple[str, int, str] | None:
    """What one AMI event says about a callback attempt's channel, as `CallbackStore.observe` takes it."""
    if isinstance(event, ev.Newchannel):
        found, what = callback_channel(event.uniqueid), SEEN_UP
    elif isinstance(event, ev.OriginateResponse):
        outcome = DialOutcome.ANSWERED if event.success else _REASONS.get(event.reason, DialOutcome.FAILED)
        found, what = callback_channel(event.uniqueid), f"originate:{outcome.value}"
    elif isinstance(event, ev.UserEvent) and event.name == "CallbackResult":
        status = _STATUS.get(event.headers.get("Status", ""), DialOutcome.FAILED)
        found, what = callback_channel(event.headers.get("Uniqueid")), f"result:{status.value}"
    else:
        return None
    return None if found is None else (found[0], found[1], what)


class CallbackObserver:
    """Records, on every instance, what its AMI link saw of callback channels, and how long that
    link has watched without a gap (`callbacks:observers`: "<since> <through>").

    `on_event` is called in place by the AMI fan-out: it only queues (bounded); `run` (supervised)
    writes the queue in batches and, every `interval`, the link record. A reconnect, an event lost
    (this queue or the AMI client's full) or a failed write restarts `since`; `through` advances
    only when both queues are empty, so everything received before it is written.
    """

    def __init__(self, store: CallbackStore, instance: str, link: LinkState, *,
                 backlog: Callable[[], int] = lambda: 0, interval: float = 1.0, queue_size: int = 10000,
                 batch: int = 500, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._instance = instance
        self._link = link
        self._backlog = backlog
        self._interval = interval
        self._batch = batch
        self._clock = clock
        self._queue: asyncio.Queue[tuple[str, int, str]] = asyncio.Queue(maxsize=queue_size)
        self._gap = False
        self._epoch: int | None = None
        self.since: float | None = None
        self.through: float | None = None
        self.dropped = 0
        self.written = 0
        self._failing = False

    def on_event(self, event: object) -> None:
        found = observation_of(event)
        if found is None:
            return
        try:
            self._queue.put_nowait(found)
        except asyncio.QueueFull:
            self.dropped += 1
            self._gap = True  # a channel may go unrecorded: no takeover may trust the time before now

    async def run(self) -> None:
        """Until cancelled; survives Redis outages (each one is a gap)."""
        next_beat = 0.0
        while True:
            wait = max(0.0, next_beat - time.monotonic())
            batch: list[tuple[str, int, str]] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    batch.append(await self._queue.get())
            while batch and len(batch) < self._batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                if batch:
                    await self._write(batch)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self._interval
                    await self.beat()
                if self._failing:
                    self._failing = False
                    log.warning("callback observer %s: Redis back", self._instance)
            except (OSError, RedisError) as exc:
                if not self._failing:
                    self._failing = True
                    log.warning("callback observer %s: Redis unavailable (%s)", self._instance, exc)
                await asyncio.sleep(self._interval)

    async def _write(self, batch: list[tuple[str, int, str]]) -> None:
        try:
            self.written += await self._store.observe(batch)
        except BaseException:
            self._gap = True  # those channels are not recorded
            raise

    async def beat(self) -> None:
        """Refresh this instance's link record (once per `interval` from `run`)."""
        now = self._clock()
        connected, epoch = self._link()
        if not connected:
            if self.since is not None:
                self.since = self.through = None
                await self._store.observer_down(self._instance)
            return
        if self.since is None or epoch != self._epoch or self._gap:
            self.since, self._epoch, self._gap, self.through = now, epoch, False, None
        if self._queue.empty() and self._backlog() == 0:
            self.through = now
        if self.through is not None:
            await self._store.observer_up(self._instance, self.since, self.through)
        else:  # restarted and not drained yet: the old record must not vouch for the gap
            await self._store.observer_down(self._instance)
