"""Screen-pops: per-agent numbered events, their bounded backlog and acknowledgements.

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
- `agent_access(agent)`, `customer_grantees(customer)`: the access grant a pop carries
                            (layout in store/grants.py).

Appending is one Lua script (one round trip, atomic): number, store, trim, mark unacked, grant,
publish — so the stream order is the number order and a replay never has holes it cannot explain.
`PopStore` is also an `AccessGrants` (store/grants.py): the grants its pops carry are read and
revoked there.
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

from ivrserver.store.grants import AccessGrants, Grant, check_agent_id
from ivrserver.store.keys import Keys

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


class PopStore(AccessGrants):
    """Redis side of the screen-pop hub; one per app instance."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, backlog_seconds: int = 3600) -> None:
        if backlog_seconds <= 0:
            raise ValueError("backlog_seconds must be > 0")
        super().__init__(redis, keys)
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
