"""Per-agent numbered events, their bounded backlog, acknowledgements, access grants and the audit log.

Layout (all names from `Keys`):
- `agent_event_seq(agent)`  INCR counter: the agent's event numbers 1, 2, 3 … (never expires).
- `agent_event_epoch(agent)` random id of the current numbering, replaced whenever the counter
                            restarts at 1 (Redis lost its data): a client that knows another epoch
                            knows its numbers mean nothing now, instead of waiting for a number
                            above the one it saw last.
- `agent_events(agent)`     Stream, one entry per event {seq, epoch, frame}; entry ids come from
                            the Redis clock, so trimming by age (`MINID`) is one clock for all instances.
- `pop_channel()`           pub/sub: "<agent> <epoch> <seq> <frame>" so every instance's hub delivers locally.
- `unacked_pops()`          Hash "<agent>:<seq>" -> JSON summary, removed on ack.
- `agent_access(agent)`     Hash customer id (or `contact:<id>`) -> expiry (epoch seconds): REST
                            reads and notes write-back allowed until then.
- `customer_grantees(customer)` ZSET "<agent> <field>" -> expiry: every grant field that belongs
                            to the customer (its id and its contacts), so deleting the customer
                            revokes them (`revoke_customer`).
- `audit()`                 Stream, append-only: who, role, what, target, why, allowed, at.

Appending is one Lua script (one round trip, atomic): number, store, trim, mark unacked, grant,
publish — so the stream order is the number order and a replay never has holes it cannot explain.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from ivrserver.store.keys import Keys

AGENT_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
EPOCH = re.compile(r"^[0-9a-f]{1,32}$")
MAX_REPLAY = 500

_APPEND = """
local seq = redis.call('INCR', KEYS[1])
local epoch = redis.call('GET', KEYS[6])
if seq == 1 or not epoch then
  epoch = ARGV[7]
  redis.call('SET', KEYS[6], epoch)
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local backlog_ms = tonumber(ARGV[3])
local frame = '{"type":"event","epoch":"' .. epoch .. '","seq":' .. seq .. ',"ts":' .. now_ms ..
  ',"data":' .. ARGV[2] .. '}'
redis.call('XADD', KEYS[2], 'MINID', tostring(now_ms - backlog_ms), '*', 'seq', seq, 'epoch', epoch,
  'frame', frame)
redis.call('PEXPIRE', KEYS[2], backlog_ms)
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[3], ARGV[1] .. ':' .. seq, ARGV[5])
end
local want = tonumber(ARGV[6])
if want > 0 then
  for i = 9, #ARGV, 2 do
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
    if ARGV[8] == '1' then
      redis.call('ZADD', KEYS[7], ARGV[i + 1], ARGV[1] .. ' ' .. ARGV[i])
    end
  end
  local ttl = redis.call('PTTL', KEYS[4])
  if ttl < want then redis.call('PEXPIRE', KEYS[4], want) end
  if ARGV[8] == '1' then
    ttl = redis.call('PTTL', KEYS[7])
    if ttl < want then redis.call('PEXPIRE', KEYS[7], want) end
  end
end
redis.call('PUBLISH', KEYS[5], ARGV[1] .. ' ' .. epoch .. ' ' .. seq .. ' ' .. frame)
return {seq, now_ms, epoch}
"""


def new_epoch() -> str:
    """A fresh numbering id: 16 hex digits (matches EPOCH)."""
    return secrets.token_hex(8)


def check_agent_id(agent_id: str) -> str:
    if not isinstance(agent_id, str) or not AGENT_ID.match(agent_id):
        raise ValueError(f"invalid agent id {agent_id!r}")
    return agent_id


@dataclass(frozen=True)
class Stored:
    seq: int
    ts_ms: int
    epoch: str = ""


@dataclass(frozen=True)
class Replay:
    frames: list[tuple[int, str]]  # (seq, frame JSON), oldest first, all of `epoch`
    lost: bool  # some events after `after` are gone (expired, over the limit, or the counter restarted)
    after: int  # the number the frames follow (the client's last_seq, or 0 after a restart)
    epoch: str | None = None  # the agent's current numbering (None: no event numbered yet)
    reset: bool = False  # the client's numbering was another epoch (or ahead of the counter): start at 0


@dataclass(frozen=True)
class Grant:
    """Read access for one agent until `until` (epoch seconds) to a customer and/or a contact."""

    until: float
    customer_id: str | None = None
    contact_id: str | None = None

    def fields(self) -> list[str]:
        out: list[str] = []
        if self.customer_id:
            out += [self.customer_id, repr(self.until)]
        if self.contact_id:
            out += [contact_field(self.contact_id), repr(self.until)]
        return out


def contact_field(contact_id: str) -> str:
    """Grant field for a contact (notes write-back), beside customer ids in the same hash."""
    return f"contact:{contact_id}"


class PopStore:
    """Redis side of the screen-pop hub; one per app instance."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, backlog_seconds: int = 3600) -> None:
        if backlog_seconds <= 0:
            raise ValueError("backlog_seconds must be > 0")
        self.redis = redis
        self.keys = keys
        self.backlog_seconds = backlog_seconds
        self._append = redis.register_script(_APPEND)

    # ---- events -------------------------------------------------------------------------
    async def append(self, agent_id: str, event: Mapping[str, Any], *, needs_ack: bool = False,
                     grant: Grant | None = None) -> Stored:
        """Number and store one event for `agent_id`, publish it to every instance; optionally
        mark it unacknowledged and grant the agent access to a customer until `grant.until`."""
        check_agent_id(agent_id)
        data = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        summary = ""
        if needs_ack:
            customer = event.get("customer")
            summary = json.dumps({
                "agent": agent_id,
                "call_id": event.get("call_id"),
                "phase": event.get("phase"),
                "number": event.get("number"),
                "customer_id": customer.get("id") if isinstance(customer, Mapping) else None,
                "ts": time.time(),
            }, separators=(",", ":"))
        grant_fields = grant.fields() if grant is not None else []
        grant_ms = 0
        if grant is not None and grant_fields:
            grant_ms = max(1, int((grant.until - time.time()) * 1000))
        k = self.keys
        index = (k.customer_grantees(grant.customer_id)
                 if grant is not None and grant.customer_id and grant_ms > 0 else None)
        # Without a customer the index key is never touched, but the script declares 7 keys.
        grantees = index if index is not None else k.agent_access(agent_id)
        seq, ts_ms, epoch = await self._append(
            keys=[k.agent_event_seq(agent_id), k.agent_events(agent_id), k.unacked_pops(),
                  k.agent_access(agent_id), k.pop_channel(), k.agent_event_epoch(agent_id), grantees],
            args=[agent_id, data, self.backlog_seconds * 1000, "1" if needs_ack else "0", summary,
                  grant_ms, new_epoch(), "0" if index is None else "1", *grant_fields],
        )
        return Stored(int(seq), int(ts_ms), str(epoch))

    async def current_seq(self, agent_id: str) -> int:
        return (await self.position(agent_id))[0]

    async def position(self, agent_id: str) -> tuple[int, str | None]:
        """The agent's last event number and its epoch (0 and None before the first event)."""
        check_agent_id(agent_id)
        value, epoch = await self.redis.mget([self.keys.agent_event_seq(agent_id),
                                              self.keys.agent_event_epoch(agent_id)])
        return (int(value) if value else 0), (epoch or None)

    async def since(self, agent_id: str, last_seq: int, *, epoch: str | None = None,
                    limit: int = MAX_REPLAY) -> Replay:
        """Frames numbered after `last_seq` still in the backlog, oldest first, and whether some
        were lost (expired or beyond `limit`) between `last_seq` and the first one returned.

        `epoch` is the numbering the client's `last_seq` belongs to (None: unknown, trust the
        number). When it is not the agent's current epoch, or `last_seq` is above the counter, the
        numbering restarted since: the replay starts at 0 (`reset`) with everything of the current
        epoch still kept."""
        if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0:
            raise ValueError(f"last_seq must be a whole number >= 0, got {last_seq!r}")
        key = self.keys.agent_events(check_agent_id(agent_id))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.get(self.keys.agent_event_seq(agent_id))
            pipe.get(self.keys.agent_event_epoch(agent_id))
            (server_s, server_us), current, current_epoch = await pipe.execute()
        current_seq = int(current) if current else 0
        current_epoch = current_epoch or None
        lost = reset = False
        if last_seq > current_seq or (epoch is not None and current_epoch is not None and epoch != current_epoch):
            # The counter restarted (Redis was emptied): the client's number means nothing now, and
            # what followed it in the old numbering may be gone.
            lost, last_seq, reset = last_seq > 0, 0, True
        cutoff_ms = int(server_s) * 1000 + int(server_us) // 1000 - self.backlog_seconds * 1000
        found: list[tuple[int, str]] = []
        upper = "+"
        done = False
        while not done:
            batch = await self.redis.xrevrange(key, max=upper, min=str(max(0, cutoff_ms)), count=100)
            if not batch:
                break
            for _entry_id, fields in batch:
                if current_epoch is not None and fields.get("epoch", current_epoch) != current_epoch:
                    done = True  # older entries belong to a numbering that was lost
                    break
                seq = int(fields["seq"])
                if seq <= last_seq:
                    done = True
                    break
                found.append((seq, fields["frame"]))
                if len(found) > limit:
                    done = True
                    break
            if len(batch) < 100:
                break
            upper = "(" + batch[-1][0]
        found.reverse()
        if len(found) > limit:
            found = found[-limit:]
            lost = True
        expected_first = last_seq + 1
        if found and found[0][0] != expected_first:
            lost = True
        if not found and current_seq > last_seq:
            lost = True
        return Replay(found, lost, last_seq, current_epoch, reset)

    # ---- acknowledgements ---------------------------------------------------------------
    async def ack(self, agent_id: str, seq: int) -> bool:
        """The agent's own pop `seq` was shown; False if it was not waiting for an ack."""
        return bool(await self.redis.hdel(self.keys.unacked_pops(), f"{check_agent_id(agent_id)}:{seq}"))

    async def unacked(self, *, now: float) -> list[dict[str, Any]]:
        """Unacknowledged pops for supervisors, oldest first; older than the backlog are dropped."""
        key = self.keys.unacked_pops()
        raw = await self.redis.hgetall(key)
        out: list[dict[str, Any]] = []
        stale: list[str] = []
        for field_name, value in raw.items():
            try:
                item = json.loads(value)
                agent, _, seq = field_name.rpartition(":")
                item["agent"] = agent
                item["seq"] = int(seq)
            except (ValueError, TypeError):
                stale.append(field_name)
                continue
            if now - float(item.get("ts", 0)) > self.backlog_seconds:
                stale.append(field_name)
                continue
            item["age_seconds"] = round(max(0.0, now - float(item["ts"])), 1)
            out.append(item)
        if stale:
            await self.redis.hdel(key, *stale)
        out.sort(key=lambda i: (i["ts"], i["agent"], i["seq"]))
        return out

    # ---- access grants ------------------------------------------------------------------
    async def grant(self, agent_id: str, grant: Grant) -> None:
        key = self.keys.agent_access(check_agent_id(agent_id))
        fields = grant.fields()
        if not fields:
            return
        until = grant.until
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=dict(zip(fields[::2], fields[1::2], strict=True)))
            pipe.expireat(key, int(until) + 1, gt=True)
            pipe.expireat(key, int(until) + 1, nx=True)
            if grant.customer_id:
                index = self.keys.customer_grantees(grant.customer_id)
                pipe.zadd(index, {f"{agent_id} {f}": until for f in fields[::2]})
                pipe.expireat(index, int(until) + 1, gt=True)
                pipe.expireat(index, int(until) + 1, nx=True)
            await pipe.execute()

    async def has_access(self, agent_id: str, customer_id: str, *, now: float) -> bool:
        """Live grant for a customer id (or `contact_field(contact_id)`)."""
        value = await self.redis.hget(self.keys.agent_access(check_agent_id(agent_id)), customer_id)
        if value is None:
            return False
        try:
            return float(value) > now
        except ValueError:
            return False

    async def grants(self, agent_id: str, *, now: float) -> dict[str, float]:
        """Live grants of one agent: expired ones, and customers that no longer exist (a pop's
        phase update can re-grant a customer deleted during the call), are removed."""
        key = self.keys.agent_access(check_agent_id(agent_id))
        raw = await self.redis.hgetall(key)
        live: dict[str, float] = {}
        expired: list[str] = []
        for cid, until in raw.items():
            try:
                u = float(until)
            except ValueError:
                u = 0.0
            if u > now:
                live[cid] = u
            else:
                expired.append(cid)
        customers = [c for c in live if not c.startswith("contact:")]
        if customers:
            exists = await self.redis.mget([self.keys.customer(c) for c in customers])
            for cid, value in zip(customers, exists, strict=True):
                if value is None:
                    del live[cid]
                    expired.append(cid)
        if expired:
            await self.redis.hdel(key, *expired)
        return live

    async def revoke_customer(self, customer_id: str) -> int:
        """Remove every agent's grants to a customer and to its contacts (the customer is being
        deleted); returns how many grant fields were removed."""
        return await revoke_customer(self.redis, self.keys, customer_id)


async def revoke_customer(redis: aioredis.Redis, keys: Keys, customer_id: str) -> int:
    """Every agent's grant fields that belong to `customer_id` (its id and its contacts), removed
    atomically with the index that lists them; a grant added meanwhile retries the whole step."""
    index = keys.customer_grantees(customer_id)
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(index)
                members = await pipe.zrange(index, 0, -1)
                pipe.multi()
                for member in members:
                    agent_id, _, field_name = str(member).partition(" ")
                    if AGENT_ID.match(agent_id) and field_name:
                        pipe.hdel(keys.agent_access(agent_id), field_name)
                pipe.delete(index)
                results = await pipe.execute()
                return sum(int(r) for r in results[:-1])
            except WatchError:
                continue


# ---- audit log ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditEntry:
    id: str
    at: float
    who: str
    role: str
    what: str
    target: str
    why: str
    allowed: bool
    source: str


_STREAM_ID_MAX = 2**64 - 1


def _older_than(before: str) -> str | None:
    """The XREVRANGE upper bound for entries older than stream id `before`, or None when no id is
    older (0-0). Ids past Redis' 64-bit parts (which Redis refuses) mean "every entry"."""
    ms_text, _, seq_text = before.partition("-")
    if not (ms_text.isascii() and ms_text.isdigit() and seq_text.isascii() and seq_text.isdigit()):
        raise ValueError(f"not a stream id: {before!r}")
    ms, seq = int(ms_text), int(seq_text)
    if ms > _STREAM_ID_MAX:
        return "+"
    if seq > _STREAM_ID_MAX:
        return f"{ms}-{_STREAM_ID_MAX}"
    if ms == 0 and seq == 0:
        return None
    return f"({ms}-{seq}"


class AuditLog:
    """Append-only: this class has no way to change or remove an entry."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def append(self, *, who: str, role: str, what: str, target: str, why: str, allowed: bool,
                     at: float, source: str = "") -> str:
        fields = {"at": repr(at), "who": who[:64], "role": role[:16], "what": what[:64],
                  "target": target[:128], "why": why[:200], "allowed": "1" if allowed else "0",
                  "source": source[:64]}
        entry_id = await self.redis.xadd(self.keys.audit(), fields)  # type: ignore[arg-type]
        return str(entry_id)

    async def recent(self, *, count: int = 100, before: str | None = None) -> list[AuditEntry]:
        """Newest first; `before` is an entry id (`<ms>-<seq>`) to page backwards from (exclusive)."""
        upper = _older_than(before) if before else "+"
        if upper is None:
            return []
        rows = await self.redis.xrevrange(self.keys.audit(), max=upper, min="-",
                                          count=max(1, min(count, 1000)))
        return [
            AuditEntry(id=entry_id, at=float(f.get("at", "0")), who=f.get("who", ""), role=f.get("role", ""),
                       what=f.get("what", ""), target=f.get("target", ""), why=f.get("why", ""),
                       allowed=f.get("allowed") == "1", source=f.get("source", ""))
            for entry_id, f in rows
        ]

    async def length(self) -> int:
        return int(await self.redis.xlen(self.keys.audit()))
