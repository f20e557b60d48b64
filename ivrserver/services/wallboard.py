"""The live wallboard use case: keeps one instance's board current and hands frames to its sockets.

Sources, and how an event on any instance reaches every supervisor:

* Queue events (AMI, through the app's fan-out): each instance turns them into facts
  (`domain.wallboard.facts_of`) and applies each with ONE Lua call that is exactly-once across
  instances — a join, an answer or an abandon is counted by the first instance to see it (SET NX
  marker per caller and queue); leaving or hanging up removes the caller only once (HDEL) — and,
  only when it changed something, PUBLISHes the change with the queue's counters after it. Every
  instance's listener applies the published changes to its board: all boards get the same changes
  in the same order, whichever instance saw the event (even one whose own AMI link is down).
* Waiting callers (`wb:waiting`) and today's counters (`wb:day:<day>`, expiring after that day in
  `wallboard.timezone`) live in Redis: a restarted instance reloads them, and so after a pub/sub
  outage (then every local socket gets a fresh snapshot).
* Agent states come from this instance's agent-state fold (`AgentStateService.on_change`), in AMI
  event order. Every instance folds the same AMI events (one Asterisk, each instance logged in), so
  every board shows the same states; a wrap-up ends by time alone, which the ticker notices.
* Callbacks waiting to be placed (due or leased: virtual hold per queue + the total) and active
  incidents are re-read every `wallboard.refresh_interval` by each instance (server side; the page
  never polls); a frame goes out only when something changed.

Frames are JSON text built once and offered to every local socket's own bounded queue (the web
hub's sinks); nothing here awaits a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ivrserver.config import WallboardSettings
from ivrserver.domain import incidents as inc
from ivrserver.domain import wallboard as wb
from ivrserver.domain.agent_state import AgentLive, status_at
from ivrserver.domain.model import Agent
from ivrserver.domain.queue_names import ivr_queue, queue_label
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.keys import Keys

log = logging.getLogger("ivrserver.wallboard")

Sink = Callable[[str], None]
IncidentSource = Callable[[], Awaitable[Iterable[object]]]
AmiAction = Callable[[str, dict[str, str]], Awaitable[Any]]
SEEN_SECONDS = 600  # instances apply the same AMI event within seconds; markers outlive that
DAY_GRACE = 3600  # a day's counters stay an hour past its midnight (late readers), then expire
MAX_CALLBACK_IDS = 50_000  # callbacks looked at per refresh at most

# KEYS: 1 waiting hash, 2 day hash, 3 seen marker
# ARGV: 1 op (join|answered|abandoned|leave|gone|restore), 2 queue, 3 uid, 4 waiting entry (JSON, join),
#       5 answered in service level (1/0), 6 day expires at (epoch), 7 marker TTL, 8 channel,
#       9 change message (JSON object; the queue's counters are appended as "c" when counted)
_APPLY = """
local op, q, uid = ARGV[1], ARGV[2], ARGV[3]
local msg = ARGV[9]
if op == 'restore' then
  if redis.call('HSETNX', KEYS[1], uid, ARGV[4]) == 0 then return 0 end
  redis.call('PUBLISH', ARGV[8], msg)
  return 1
end
if op == 'gone' or op == 'leave' then
  local v = redis.call('HGET', KEYS[1], uid)
  if not v then return 0 end
  local stored = cjson.decode(v)['q']
  if op == 'leave' and stored ~= q then return 0 end
  redis.call('HDEL', KEYS[1], uid)
  if op == 'gone' then msg = cjson.encode({q = stored, d = cjson.decode(msg)['d'], del = uid}) end
  redis.call('PUBLISH', ARGV[8], msg)
  return 1
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[7]) then return 0 end
local function bump(name)
  redis.call('HINCRBY', KEYS[2], q .. '|' .. name, 1)
end
if op == 'join' then
  redis.call('HSET', KEYS[1], uid, ARGV[4])
  bump('offered')
else
  local v = redis.call('HGET', KEYS[1], uid)
  if v and cjson.decode(v)['q'] == q then redis.call('HDEL', KEYS[1], uid) end
  bump(op)
  if op == 'answered' and ARGV[5] == '1' then bump('answered_in_sl') end
end
redis.call('EXPIREAT', KEYS[2], ARGV[6])
local c = redis.call('HMGET', KEYS[2], q .. '|offered', q .. '|answered', q .. '|answered_in_sl', q .. '|abandoned')
local n = {}
for i = 1, 4 do n[i] = tostring(tonumber(c[i]) or 0) end
redis.call('PUBLISH', ARGV[8], string.sub(msg, 1, -2) .. ',"c":[' .. table.concat(n, ',') .. ']}')
return 1
"""


def _dumps(body: Mapping[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


class WallboardService:
    def __init__(self, redis: aioredis.Redis, pubsub_redis: aioredis.Redis, keys: Keys,
                 settings: WallboardSettings, *, agents: Mapping[str, Agent],
                 queue_of: Callable[[str], str | None] = ivr_queue, queues: Sequence[str] = (),
                 callbacks: CallbackStore | None = None, incidents: IncidentSource | None = None,
                 ami_action: AmiAction | None = None, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.pubsub_redis = pubsub_redis  # blocks on reads: no socket timeout there
        self.keys = keys
        self.settings = settings
        self.agents = agents
        self.queue_of = queue_of
        self.callbacks = callbacks
        self.incidents = incidents
        self.incident_policy: Callable[[], inc.Policy] | None = None
        self.ami_action = ami_action
        self.clock = clock
        # queues are shown by the name supervisors know (`general`), as the reports name them, even
        # when wallboard.queues lists Asterisk's (`ivr-general`)
        listed = tuple(dict.fromkeys(queue_label(q.strip()) for q in settings.queues.split(",") if q.strip()))
        self.board = wb.Board(settings.service_level_seconds, queues=listed or tuple(queues),
                              only_listed=bool(listed), service_level_target=settings.service_level_target)
        self._apply = redis.register_script(_APPLY)
        self._sinks: list[Sink] = []
        self._cb_queue: dict[str, str] = {}  # callback id → virtual-hold queue ('' none): never changes
        self._wake = asyncio.Event()
        self._loaded = asyncio.Event()
        self._last_tick = 0.0
        self.published = 0  # changes this instance applied first (and published)
        self.frames = 0

    def attach_incidents(self, source: IncidentSource, policy: Callable[[], inc.Policy] | None = None) -> None:
        """Show active incidents: `source()` lists incidents (services/incidents.py IncidentService.list);
        the open and acknowledged ones are shown, re-read every refresh_interval. `policy()` is the
        incidents policy in force (read each time: a reload changes it): the frame carries what it
        calls each service, per language, and each incident its area's names, so the page shows
        "移动数据 · 朝阳", not "mobile_data · chaoyang-liaoning"."""
        self.incidents = source
        self.incident_policy = policy

    def _service_names(self, service: str) -> Mapping[str, str] | None:
        info = self.incident_policy().services.get(service) if self.incident_policy is not None else None
        return info.names if info is not None else None

    # -- outputs ---------------------------------------------------------------------------
    def add_sink(self, sink: Sink) -> None:
        """`sink(frame)` gets every frame (JSON text) for this instance's sockets; never awaits."""
        self._sinks.append(sink)

    def _emit(self, body: Mapping[str, Any]) -> None:
        frame = _dumps(body)
        self.frames += 1
        for sink in self._sinks:
            try:
                sink(frame)
            except Exception:
                log.exception("wallboard sink failed")

    def snapshot(self) -> dict[str, Any]:
        """The whole board now (what a socket gets first)."""
        return self.board.snapshot(self.clock())

    async def wait_loaded(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self._loaded.wait()

    def _queue_frame(self, queues: Iterable[str], now: float) -> None:
        shown = [q for q in queues if self.board.shows(q)]
        self._emit({"type": "queues", "now": round(now * 1000), "queues": [self.board.queue_view(q) for q in shown],
                    "totals": self.board.totals_view(now)})

    # -- AMI queue events ----------------------------------------------------------------
    def wants(self, event: object) -> bool:
        """The fan-out's filter: queue events, and hang-ups of callers this board shows waiting."""
        name = getattr(event, "event", "")
        if name == "Hangup":
            return str(getattr(event, "uniqueid", "")) in self.board.waiting
        return name in ("QueueCallerJoin", "AgentConnect", "QueueCallerAbandon", "QueueCallerLeave")

    async def handle(self, event: object) -> int:
        """Apply one AMI event's facts in Redis; returns how many this instance applied first."""
        now = self.clock()
        applied = 0
        for fact in wb.facts_of(event, now, self.queue_of):
            applied += await self.apply_fact(fact)
        return applied

    async def apply_fact(self, fact: wb.QueueFact) -> int:
        day, midnight = wb.day_of(fact.at, self.settings.timezone)
        adds = fact.kind in ("join", "restore")
        entry = _dumps({"q": fact.queue, "at": fact.at, "p": fact.priority}) if adds else ""
        change = wb.QueueChange(queue=fact.queue or "?", day=day, removed="" if adds else fact.uid,
                                added=wb.Waiting(fact.uid, fact.queue, fact.at, fact.priority) if adds else None)
        in_sl = "1" if wb.in_service_level(fact.hold, self.settings.service_level_seconds) else "0"
        done = await self._apply(
            keys=[self.keys.wallboard_waiting(), self.keys.wallboard_day(day),
                  self.keys.wallboard_seen(fact.kind, fact.queue, fact.uid)],
            args=[fact.kind, fact.queue, fact.uid, entry, in_sl, str(int(midnight) + DAY_GRACE), str(SEEN_SECONDS),
                  self.keys.wallboard_channel(), wb.encode_change(change)])
        self.published += int(done)
        return int(done)

    async def reconcile(self) -> None:
        """After every AMI login (a hook): make the waiting callers in Redis match Asterisk's own list
        (QueueStatus), so leaves and joins no instance saw (all were away) do not stay on the board."""
        if self.ami_action is None:
            return
        started = self.clock()
        response = await self.ami_action("QueueStatus", {})
        live = []
        for message in response if isinstance(response, list) else [response]:
            if str(message.get("Event", "")) != "QueueEntry":
                continue
            queue, uid = self.queue_of(str(message.get("Queue", ""))), str(message.get("Uniqueid", ""))
            wait, prio = str(message.get("Wait", "")), str(message.get("Priority", ""))
            if queue and uid and wait.isdigit():
                live.append(wb.Waiting(uid, queue, started - int(wait), int(prio) if prio.isdigit() else 0))
        stored = wb.waiting_from_hash(await self.redis.hgetall(self.keys.wallboard_waiting()))
        queues = {w.uid: w.queue for w in stored}
        remove, add = wb.reconcile(stored, live, started)
        for uid in remove:
            await self.apply_fact(wb.QueueFact("leave", queues[uid], uid, started))
        for caller in add:
            await self.apply_fact(wb.QueueFact("restore", caller.queue, caller.uid, caller.joined_at, caller.priority))
        if remove or add:
            log.info("wallboard: waiting callers reconciled with Asterisk",
                     extra={"removed": len(remove), "added": len(add)})

    async def run(self, events: asyncio.Queue[object]) -> None:
        """Consume the fan-out's queue forever; one bad event or a Redis hiccup is logged, never fatal."""
        while True:
            event = await events.get()
            try:
                await self.handle(event)
            except RedisError:
                log.warning("wallboard: queue event not applied (Redis)", exc_info=True)
            except Exception:
                log.exception("wallboard: cannot apply %s", getattr(event, "event", type(event).__name__))
            finally:
                events.task_done()

    # -- agents --------------------------------------------------------------------------
    def start_agents(self, records: Mapping[str, AgentLive]) -> None:
        """Every defined agent on the board: their stored record, or logged out since now."""
        now = self.clock()
        for agent_id in self.agents:
            live = records.get(agent_id) or AgentLive(agent_id=agent_id, since=now)
            self.board.set_agent(self._cell(live, now))

    def _cell(self, live: AgentLive, now: float) -> wb.AgentCell:
        status = status_at(live, now)
        agent = self.agents.get(live.agent_id)
        return wb.cell_of(live.agent_id, agent.name if agent else live.agent_id, status.state.value,
                          status.since, live.wrap_up_until)

    def on_agent(self, live: AgentLive) -> None:
        """AgentStateService's listener: one agent's record changed (synchronous, never awaits)."""
        if live.agent_id not in self.agents:
            return
        now = self.clock()
        if not self.board.set_agent(self._cell(live, now)):
            return
        self._emit({"type": "agent", "now": round(now * 1000), "agent": self.board.agent_view(live.agent_id, now),
                    "totals": self.board.totals_view(now)})
        self._wake.set()  # a wrap-up may have started: the ticker's next deadline moved

    # -- the pub/sub listener ---------------------------------------------------------------
    async def listen(self) -> None:
        """Apply every instance's published changes; after (re)subscribing, reload from Redis and
        send every local socket a fresh snapshot. Runs forever (under the supervisor)."""
        delay = 0.1
        while True:
            pubsub = self.pubsub_redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.wallboard_channel())
                await self.reload()
                delay = 0.1
                while True:
                    msg = await pubsub.get_message(timeout=None)
                    if msg is not None and msg.get("type") == "message":
                        data = msg["data"]
                        self.on_change(data if isinstance(data, str) else data.decode())
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                log.warning("wallboard channel lost, resubscribing", extra={"error": str(exc)})
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def on_change(self, text: str) -> None:
        try:
            change = wb.decode_change(text)
        except ValueError as exc:
            log.warning("wallboard: malformed change ignored", extra={"error": str(exc)})
            return
        if self.board.apply(change):
            self._queue_frame([change.queue], self.clock())

    async def reload(self) -> None:
        """The queue side of the board from Redis (waiting callers, today's counters), then a
        snapshot to every local socket."""
        now = self.clock()
        day, _ = wb.day_of(now, self.settings.timezone)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.wallboard_waiting())
        pipe.hgetall(self.keys.wallboard_day(day))
        waiting, counters = await pipe.execute()
        self.board.load(day, wb.waiting_from_hash(waiting), wb.counters_from_hash(counters))
        self._loaded.set()
        self._emit(self.board.snapshot(now))

    # -- the ticker: wrap-ups ending, a new day, callbacks and incidents --------------------
    async def tick(self) -> None:
        """Forever: at each wrap-up's end, at midnight, and every refresh_interval. Runs under the supervisor."""
        await self.wait_loaded(timeout=3600)
        self._last_tick = self.clock()
        next_refresh = 0.0
        while True:
            now = self.clock()
            if now >= next_refresh:
                await self.refresh()
                next_refresh = now + self.settings.refresh_interval
            _, midnight = wb.day_of(now, self.settings.timezone)
            deadline = min(x for x in (next_refresh, midnight, self.board.next_expiry(now)) if x is not None)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - self.clock()) + 0.005):
                    await self._wake.wait()
            await self.on_time(self.clock())

    async def on_time(self, now: float) -> None:
        """Time passed: expired wrap-ups become ready on the board, a new day reloads the counters."""
        expired = self.board.expired(self._last_tick, now)
        self._last_tick = now
        for agent_id in expired:
            self._emit({"type": "agent", "now": round(now * 1000), "agent": self.board.agent_view(agent_id, now),
                        "totals": self.board.totals_view(now)})
        day, _ = wb.day_of(now, self.settings.timezone)
        if day != self.board.day:
            await self.reload()

    async def refresh(self) -> None:
        """Re-read callbacks waiting and active incidents; a frame only for what changed."""
        now = self.clock()
        try:
            per_queue, total = await self.callbacks_waiting()
        except RedisError:
            log.warning("wallboard: callbacks not read (Redis)", exc_info=True)
        else:
            changed = self.board.set_callbacks(per_queue, total)
            if changed:
                self._queue_frame([q for q in changed if q], now)
        if self.incidents is not None:
            try:
                found = wb.active_incidents(await self.incidents(), self._service_names)
            except Exception:
                log.warning("wallboard: incidents not read", exc_info=True)
            else:
                if self.board.set_incidents(found):
                    self._emit({"type": "incidents", "now": round(now * 1000),
                                "incidents": self.board.incidents_view()})

    async def callbacks_waiting(self) -> tuple[dict[str, int], int]:
        """({queue: virtual-hold callbacks waiting}, every callback waiting): the scheduler's due and
        leased callbacks (not yet connected), by the queue their caller kept a place in."""
        if self.callbacks is None:
            return {}, 0
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(self.keys.callbacks_due(), 0, MAX_CALLBACK_IDS - 1)
        pipe.zrange(self.keys.callbacks_leased(), 0, MAX_CALLBACK_IDS - 1)
        due, leased = await pipe.execute()
        # Leased ones are being looked at or dialled: still not placed (and a virtual-hold check that
        # re-queues its callback must not make the count flicker).
        ids = list(dict.fromkeys(i if isinstance(i, str) else i.decode() for i in [*due, *leased]))
        unknown = [i for i in ids if i not in self._cb_queue]
        for start in range(0, len(unknown), 500):
            chunk = unknown[start:start + 500]
            for callback_id, cb in zip(chunk, await self.callbacks.get_many(chunk), strict=True):
                place = cb.queue_place if cb is not None else None
                self._cb_queue[callback_id] = place.queue if place is not None else ""
        wanted = set(ids)
        self._cb_queue = {i: q for i, q in self._cb_queue.items() if i in wanted}
        counts = Counter(q for i in ids if (q := self._cb_queue.get(i)))
        return dict(counts), len(ids)
