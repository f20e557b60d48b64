"""ContactTracker: turns AMI events (correlated by Linkedid) plus FastAGI reports into contact records.

Feeding:
- `tracker.on_event(event)` for every AMI event (a typed event object from
  `ivrserver.pbx.ami_events`, or a raw header dict; untracked event types are ignored cheaply):
  synchronous, the writer task persists what changed (the server's path, from its event fan-out).
  `await tracker.handle_event(event)` does the same and, with `write_delay` 0, writes before it
  returns.
- `await tracker.report(uniqueid, CallFacts(...))` from the FastAGI side (agi_uniqueid of the channel
  running the script): customer identified, IVR step taken, routing reason, self-served, failure;
  callbacks/notifications report `kind` the same way for the channel they originated (ChannelId).
- `await tracker.sweep()` periodically (`run()` does it) ends calls whose Hangup was never seen.

A call gets a contact record (outcome in_progress) as soon as it is worth one (the IVR reported it,
it joined a queue, reached an agent or failed to originate); `call_by_linkedid` maps its Linkedid to
the contact id. The record is rewritten with its outcome when the call ends.

With `write_delay` > 0 (the server's setting) the writes leave the event and FastAGI paths: one
writer task creates the record as soon as the call leaves ivrserver's menu (before an agent can
ring), then collects a call's later changes for that long and writes them once with the newest
state — a burst of AMI events and facts costs one write, a self-served call one write in all, and
no caller waits for history. `close()` writes whatever is still pending (shutdown); a write the
store refused is retried, not dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import heapq
import itertools
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ivrserver.domain import contact_tracking as ct
from ivrserver.domain import phone
from ivrserver.domain.contact_tracking import CallFacts, CallState
from ivrserver.domain.model import Contact
from ivrserver.store import contacts
from ivrserver.store import customers as customer_store
from ivrserver.store.keys import Keys

log = logging.getLogger(__name__)
OWNER_SECONDS = 24 * 3600  # as long as the Linkedid → contact link
CREATE_SETTLE = 0.05  # deferred mode: a record is created this long after it became worth one ...
IVR_CREATE_HOLD = 60.0  # ... or, while the caller is still in the menu, at most this long after


@functools.lru_cache(maxsize=4096)
def _contact_id(prefix: str, linkedid: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"ivrserver:{prefix}:{linkedid}").hex


def contact_id_of_call(keys: Keys, linkedid: str) -> str:
    """The contact id of a call, the same on every instance: derived from its Linkedid."""
    return _contact_id(keys.prefix, linkedid)  # asked for on every event of the call: hashed once


class AmiCallEvent(Protocol):
    """The attributes ContactTracker reads from a typed AMI event (class name = event name)."""

    uniqueid: str
    linkedid: str
    channel: str
    caller_id_num: str
    context_id: str


class ContactTracker:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, retention_days: int = 365,
                 default_country: str = "", agents: Mapping[str, str] | None = None,
                 max_call_age: float = 6 * 3600, sweep_interval: float = 60.0,
                 clock: Callable[[], float] = time.time, new_id: Callable[[], str] | None = None,
                 instance: str = "ivrserver", write_delay: float = 0.0, retry_delay: float = 1.0) -> None:
        """`agents` maps dial interfaces (``PJSIP/agent1003``) to agent ids (from the agents config).

        Every instance sharing the Redis prefix tracks every call (they read the same AMI); contact
        ids come from the Linkedid (`new_id` overrides that, for tests) and one instance writes the
        record: the one the FastAGI/callback side reported to, else the first to claim the call."""
        self.redis = redis
        self.keys = keys
        self.retention_days = retention_days
        self.default_country = default_country
        self.max_call_age = max_call_age
        self.sweep_interval = sweep_interval
        self.clock = clock
        self.new_id = new_id
        self.instance = instance
        self.book = ct.CallBook(agents=agents)
        # linkedid → contact id of calls with a record (kept a while after the end for late facts)
        self._contact_ids: OrderedDict[str, str] = OrderedDict()
        self._written: dict[str, Contact] = {}  # linkedid → last record written, calls in progress
        self._owned: set[str] = set()  # linkedids this instance took over with FastAGI facts
        self._linked: set[str] = set()  # linkedids of calls in progress whose link this instance wrote
        self._in_ivr: set[str] = set()  # linkedids of calls without a record yet, still in the menu
        self.write_delay = write_delay
        self.retry_delay = retry_delay
        # deferred writes: linkedid → (newest state, when to write it); one writer task drains it
        self._pending: dict[str, tuple[CallState, float]] = {}
        self._due: list[tuple[float, int, str]] = []  # heap of (deadline, order, linkedid)
        self._order = itertools.count()
        self._sleeping_until = math.inf  # the deadline the writer waits for
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def contact_id(self, linkedid: str) -> str | None:
        """The contact id of a call (see also history.contact_id_for_call)."""
        known = self._contact_ids.get(linkedid)
        if known is not None or self.new_id is not None or not linkedid:
            return known
        return contact_id_of_call(self.keys, linkedid)

    def _fold(self, event: AmiCallEvent | Mapping[str, str] | object, now: float) -> list[CallState]:
        call_event = ct.event_from_headers(event) if isinstance(event, Mapping) else ct.event_from_object(event)
        return self.book.on_event(call_event, now) if call_event is not None else []

    def on_event(self, event: AmiCallEvent | Mapping[str, str] | object) -> None:
        """Fold one AMI event without waiting for any write: the writer task persists the change."""
        now = self.clock()
        for state in self._fold(event, now):
            self._defer(state, now)

    async def handle_event(self, event: AmiCallEvent | Mapping[str, str] | object,
                           now: float | None = None) -> None:
        now = self.clock() if now is None else now
        for state in self._fold(event, now):
            await self._changed(state, now)

    async def report(self, uniqueid: str, facts: CallFacts, now: float | None = None, *,
                     in_ivr: bool = False) -> None:
        """Facts from the FastAGI side. Never raises on a store failure: a call must not fail
        because its history could not be written (the failure is logged).

        `in_ivr`: the caller is in ivrserver's own menu, where no agent can write notes yet; the
        record's creation may then wait for the call to leave the menu (any later change that is
        not `in_ivr`), so a self-served call costs one write in all."""
        now = self.clock() if now is None else now
        state = self.book.on_facts(uniqueid, facts, now)
        if state is None:
            return
        try:
            await self._changed(state, now, in_ivr=in_ivr)
        except (RedisError, OSError) as exc:
            log.error("contact history not updated for call %s (store unavailable): %s", state.linkedid, exc)

    async def sweep(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        for state in self.book.expire(now, self.max_call_age):
            log.warning("call %s ended without a Hangup seen; recorded as %s", state.linkedid,
                        ct.outcome(state).value)
            await self._changed(state, now)

    async def run(self) -> None:
        """Sweep every `sweep_interval` forever; a failing sweep is logged, never fatal."""
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except (RedisError, OSError) as exc:
                log.error("contact history not updated (store unavailable): %s", exc)
            except Exception:
                log.exception("contact tracking sweep failed; continuing")

    async def _changed(self, state: CallState, now: float, *, in_ivr: bool = False) -> None:
        """A call's state changed: write it now, or (write_delay > 0) queue it for the writer."""
        if self.write_delay <= 0:
            await self._persist(state, now)
            return
        self._defer(state, now, in_ivr=in_ivr)

    def _defer(self, state: CallState, now: float, *, in_ivr: bool = False) -> None:
        """Queue a change for the writer task (at once when `write_delay` is 0)."""
        linkedid = state.linkedid
        if linkedid not in self._contact_ids and not state.interesting:
            return  # nothing worth a record yet: no write to queue
        if self.write_delay <= 0:
            due = now
        elif linkedid in self._linked:
            due = now + self.write_delay
        else:
            # creation: after a few ms to take in the burst of the same moment (a hang-up seen by
            # AMI and by the FastAGI side), or when the caller leaves the menu
            if in_ivr:
                self._in_ivr.add(linkedid)
            else:
                self._in_ivr.discard(linkedid)
            due = now + (IVR_CREATE_HOLD if linkedid in self._in_ivr else CREATE_SETTLE)
        self._schedule(linkedid, state, due)
        if self._writer is None or self._writer.done():
            # a fresh context: the writer must not log under the call id of the call that started it
            self._writer = asyncio.create_task(self._write_pending(), name="contact-writer",
                                               context=contextvars.Context())

    def _schedule(self, linkedid: str, state: CallState, due: float) -> None:
        """Queue the newest state of a call; the first change of a batch sets its deadline."""
        pending = self._pending.get(linkedid)
        if pending is not None and pending[1] <= due:
            self._pending[linkedid] = (state, pending[1])
            return
        self._pending[linkedid] = (state, due)
        heapq.heappush(self._due, (due, next(self._order), linkedid))
        if due < self._sleeping_until:  # wake the writer only when its next deadline moves earlier
            self._wake.set()

    async def _write_pending(self) -> None:
        """The writer task: write each queued call when its deadline comes (a heap of deadlines;
        entries whose call was written or re-scheduled since are skipped)."""
        while True:
            if not self._due:
                self._sleeping_until = math.inf
                self._wake.clear()
                await self._wake.wait()
                continue
            due, _, linkedid = self._due[0]
            entry = self._pending.get(linkedid)
            if entry is None or entry[1] != due:
                heapq.heappop(self._due)  # stale
                continue
            wait = due - self.clock()
            if wait > 0:
                self._sleeping_until = due
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            heapq.heappop(self._due)
            del self._pending[linkedid]
            self._sleeping_until = -math.inf  # busy writing: no wake-ups needed
            await self._write_one(linkedid, entry[0])

    async def _write_one(self, linkedid: str, state: CallState) -> None:
        try:
            await self._persist(state, self.clock())
        except (RedisError, OSError) as exc:  # the store is down: keep the newest state, try again later
            log.error("contact history not updated for call %s (%s); retrying", linkedid, exc)
            newer = self._pending.pop(linkedid, None)
            self._schedule(linkedid, newer[0] if newer else state, self.clock() + self.retry_delay)
        except Exception:  # a bug, not an outage: retrying would fail the same way forever
            log.exception("contact record of call %s could not be built; skipped", linkedid)

    async def close(self, timeout: float = 5.0) -> None:
        """Write every pending record now (shutdown), then stop the writer."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._pending:
                    linkedid, (state, _) = self._pending.popitem()
                    try:
                        await self._persist(state, self.clock())
                    except (RedisError, OSError) as exc:
                        log.error("contact of call %s not written at shutdown: %s", linkedid, exc)
        if self._pending:
            log.error("%d contact records not written at shutdown", len(self._pending))

    async def _persist(self, state: CallState, now: float) -> None:
        """Write the call's contact record if it is worth one and changed since the last write."""
        finished = state.ended_at is not None
        contact_id = self._contact_ids.get(state.linkedid)
        if contact_id is None:
            if not state.interesting:
                return
            contact_id = self.new_id() if self.new_id is not None else contact_id_of_call(self.keys, state.linkedid)
            self._remember(state.linkedid, contact_id)
        # the Linkedid → contact link goes with the record's first write (one round trip for both)
        link = None if state.linkedid in self._linked else state.linkedid
        has_facts = state.reported  # FastAGI/callback facts reached this instance (read before _attach_customer)
        if finished and state.customer_id is None:
            state = await self._attach_customer(state)
        contact = ct.to_contact(state, contact_id, self.default_country)
        if self._written.get(state.linkedid) == contact:
            return
        # the instance with the FastAGI facts claims the call in the record's own write
        claim = has_facts and state.linkedid not in self._owned
        if not claim and not await self._owns(state.linkedid, has_facts):
            if finished:
                self._written.pop(state.linkedid, None)
                self._owned.discard(state.linkedid)
            else:
                self._written[state.linkedid] = contact
            return
        await contacts.save_contact(self.redis, self.keys, contact, now=now,
                                         retention_days=self.retention_days, keep_write_back=True,
                                         linkedid=link, owner=(state.linkedid, self.instance) if claim else None)
        self._linked.add(state.linkedid)
        self._in_ivr.discard(state.linkedid)
        if claim:
            self._owned.add(state.linkedid)
        if finished:
            self._written.pop(state.linkedid, None)
            self._owned.discard(state.linkedid)
            self._linked.discard(state.linkedid)
            self._in_ivr.discard(state.linkedid)
            log.info("call %s recorded: contact %s outcome=%s queue=%s agents=%s", state.linkedid,
                     contact_id, contact.outcome.value, contact.queue or "-", ",".join(contact.agents) or "-")
        else:
            self._written[state.linkedid] = contact

    async def _owns(self, linkedid: str, has_facts: bool) -> bool:
        """Whether this instance writes the call's record. The instance the FastAGI side reported to
        holds facts no other has (IVR path, routing reason, self-served): it takes the call over;
        otherwise the first instance to claim it writes and the others only follow along."""
        if has_facts:
            # only the instance that ran the call's AGI has facts; it claimed the call in the
            # record's first write (`save_contact(owner=...)`), and no other can take it back
            return True
        key = self.keys.call_owner(linkedid)
        owner = await self.redis.set(key, self.instance, nx=True, get=True, ex=OWNER_SECONDS)
        return owner is None or owner == self.instance

    def _remember(self, linkedid: str, contact_id: str) -> None:
        self._contact_ids[linkedid] = contact_id
        while len(self._contact_ids) > self.book.max_calls + 10000:
            self._contact_ids.popitem(last=False)

    async def _attach_customer(self, state: CallState) -> CallState:
        """A finished call the IVR never identified: its number, if one customer has it."""
        number = phone.try_normalise(state.number, self.default_country)
        if number is None:
            return state
        ids = await customer_store.customer_ids_for_phone(self.redis, self.keys, number)
        if len(ids) != 1:
            return state
        return self.book.on_facts(state.linkedid, CallFacts(customer_id=ids[0]), state.last_seen_at) or state
