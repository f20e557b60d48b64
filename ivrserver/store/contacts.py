"""Contact records in Redis: one record per call, a timeline per customer.

Layout (every name from `Keys`):
- ``contact:{id}``        STRING  JSON of a `Contact`; EXPIREAT started_at + retention
- ``timeline:{customer}`` ZSET    contact ids scored by started_at; entries older than the
                                  retention are trimmed on every write; the key expires with them

The retention is the caller's `retention_days`: the app passes `Settings.redis_keep_days`, i.e.
``redis.retention_days`` Redis-only (Redis is the only store) and ``redis.hot_days`` with
PostgreSQL (it keeps every record; Redis only what the call path reads: the last contacts of the
caller snapshot, the record of a call going on, notes written back after it).
- ``linkedid:{linkedid}`` STRING  contact id of an Asterisk call (Linkedid), expires after a day
- ``callowner:{linkedid}`` STRING the instance writing the call's record, expires after a day
- ``outbox``              STREAM  with PostgreSQL configured (`Keys.records`), every saved record is
                                  also appended here in the same script, for record/sink.py
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from ivrserver.domain.model import Contact, ContactKind, Outcome
from ivrserver.store import scripts
from ivrserver.store.keys import Keys

log = logging.getLogger(__name__)

DAY = 86400
LINKEDID_TTL = DAY
DEFAULT_RETENTION_DAYS = 365
MAX_TIMELINE_LIMIT = 500


# --- serialisation -------------------------------------------------------------------------------

_CONTACT_FIELDS = tuple(f.name for f in dataclasses.fields(Contact))


def contact_to_json(contact: Contact) -> str:
    # not dataclasses.asdict: it deep-copies every value (written for every call, twice)
    data = {name: getattr(contact, name) for name in _CONTACT_FIELDS}
    data["kind"] = contact.kind.value
    data["outcome"] = contact.outcome.value
    data["ivr_path"] = list(contact.ivr_path)
    data["agents"] = list(contact.agents)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def contact_from_json(raw: str | None) -> Contact | None:
    """The stored contact, or None when absent or unreadable (logged, never raised)."""
    if not raw:
        return None
    try:
        d = json.loads(raw)
        return Contact(
            id=str(d["id"]), kind=ContactKind(d["kind"]), number=str(d["number"]),
            started_at=float(d["started_at"]), customer_id=d.get("customer_id"),
            ended_at=_opt_float(d.get("ended_at")), ivr_path=tuple(d.get("ivr_path") or ()),
            routing_reason=str(d.get("routing_reason") or ""), queue=d.get("queue"),
            wait_seconds=_opt_float(d.get("wait_seconds")), agents=tuple(d.get("agents") or ()),
            talk_seconds=_opt_float(d.get("talk_seconds")),
            outcome=Outcome(d.get("outcome", "in_progress")), disposition=str(d.get("disposition") or ""),
            notes=str(d.get("notes") or ""),
        )
    except (ValueError, KeyError, TypeError) as exc:
        log.error("unreadable contact record skipped: %s", exc)
        return None


def contact_to_dict(contact: Contact) -> dict[str, Any]:
    return json.loads(contact_to_json(contact))  # type: ignore[no-any-return]


# --- records ------------------------------------------------------------------------------------

def _retention_seconds(retention_days: int) -> int:
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    return retention_days * DAY


async def _write_contact(redis: aioredis.Redis, keys: Keys, contact_id: str,
                         merge: Callable[[Contact | None], Contact | None], *, now: float,
                         retention_days: int) -> Contact | None:
    """Read, merge and write one contact record atomically (WATCH/MULTI, retried on a conflict), so
    the call tracker and an agent's write-back never undo each other. `merge` gets the stored record
    (None if absent) and returns the record to store, or None to write nothing."""
    keep = _retention_seconds(retention_days)
    key = keys.contact(contact_id)
    cutoff = now - keep
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                old = contact_from_json(await pipe.get(key))
                contact = merge(old)
                if contact is None:
                    return None
                pipe.multi()
                if old is not None and old.customer_id and old.customer_id != contact.customer_id:
                    pipe.zrem(keys.timeline(old.customer_id), contact.id)
                document = contact_to_json(contact)
                pipe.set(key, document)
                pipe.expireat(key, math.ceil(contact.started_at + keep))
                outbox = keys.outbox_if_recording()
                if outbox is not None:
                    pipe.xadd(outbox, {"kind": "contact", "data": document})
                if contact.customer_id:
                    timeline = keys.timeline(contact.customer_id)
                    pipe.zadd(timeline, {contact.id: contact.started_at})
                    pipe.zremrangebyscore(timeline, "-inf", f"({cutoff}")
                    pipe.expire(timeline, keep)
                await pipe.execute()
                return contact
            except WatchError:
                continue


# One round trip per write of the call tracker (it writes every call at least twice): read the stored
# record, keep what an agent wrote back, move the record between timelines, write, index. When the
# stored disposition/notes differ from the ones sent, nothing is written and the stored record is
# returned: the caller merges and sends again (compare-and-set, so an agent's write is never undone).
_SAVE_CONTACT = scripts.declare("""
local old = redis.call('GET', KEYS[1])
if old then
  local ok, o = pcall(cjson.decode, old)
  if ok and type(o) == 'table' then
    if ARGV[2] == '1' then
      local n, d = o.notes, o.disposition
      if type(n) ~= 'string' then n = '' end
      if type(d) ~= 'string' then d = '' end
      if n ~= ARGV[3] or d ~= ARGV[4] then return old end
    end
    local oc = o.customer_id
    if type(oc) == 'string' and oc ~= '' and oc ~= ARGV[8] then
      redis.call('ZREM', ARGV[9] .. oc, ARGV[7])
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[5])
if KEYS[2] then  -- the outbox (a system of record is configured): the same record, same script
  redis.call('XADD', KEYS[2], '*', 'kind', 'contact', 'data', ARGV[1])
end
if ARGV[8] ~= '' then
  local timeline = ARGV[9] .. ARGV[8]
  redis.call('ZADD', timeline, ARGV[6], ARGV[7])
  redis.call('ZREMRANGEBYSCORE', timeline, '-inf', ARGV[10])
  redis.call('EXPIRE', timeline, ARGV[11])
end
if ARGV[12] ~= '' then
  redis.call('SET', ARGV[12], ARGV[7], 'EX', ARGV[13])
end
if ARGV[14] ~= '' then
  redis.call('SET', ARGV[14], ARGV[15], 'EX', ARGV[13])
end
return false
""")


async def save_contact(redis: aioredis.Redis, keys: Keys, contact: Contact, *, now: float,
                       retention_days: int = DEFAULT_RETENTION_DAYS, keep_write_back: bool = False,
                       linkedid: str | None = None, owner: tuple[str, str] | None = None) -> None:
    """Create or replace a contact record and keep the customer's timeline in step (one round trip).

    If the record moved to another customer (caller-ID match corrected by account + PIN), it leaves
    the old customer's timeline. Timeline entries older than the retention are trimmed.
    With `keep_write_back` (the call tracker) the stored disposition and notes are kept: the agent
    may have written them while the call was still going on. With `linkedid` the Asterisk call is
    linked to the contact in the same script (see `contact_id_for_call`); with `owner` =
    (linkedid, instance) that instance is recorded as the one writing the call's record. With a
    system of record (`keys.records`) the record is also appended to the outbox, in the same script.
    """
    keep = _retention_seconds(retention_days)
    script = scripts.script(redis, _SAVE_CONTACT)
    timeline_prefix = keys.timeline("")
    outbox = keys.outbox_if_recording()
    script_keys = [keys.contact(contact.id)] if outbox is None else [keys.contact(contact.id), outbox]
    for _ in range(10):
        stored = await script(keys=script_keys, args=[
            contact_to_json(contact), "1" if keep_write_back else "0", contact.notes, contact.disposition,
            math.ceil(contact.started_at + keep), repr(contact.started_at), contact.id,
            contact.customer_id or "", timeline_prefix, f"({now - keep}", keep,
            keys.call_by_linkedid(linkedid) if linkedid else "", LINKEDID_TTL,
            keys.call_owner(owner[0]) if owner else "", owner[1] if owner else ""])
        if stored is None:
            return
        old = contact_from_json(stored)
        if old is None:  # unreadable in Python though Lua decoded it: keep nothing of it
            keep_write_back = False
            continue
        contact = dataclasses.replace(contact, disposition=old.disposition, notes=old.notes)
    raise RuntimeError(f"contact {contact.id}: write-back kept changing, record not saved")


async def get_contact(redis: aioredis.Redis, keys: Keys, contact_id: str) -> Contact | None:
    return contact_from_json(await redis.get(keys.contact(contact_id)))


async def update_contact_notes(redis: aioredis.Redis, keys: Keys, contact_id: str, changes: Mapping[str, str],
                               *, now: float, retention_days: int = DEFAULT_RETENTION_DAYS) -> Contact | None:
    """Set disposition and/or notes on a contact; None if there is no such contact."""
    allowed = {k: v for k, v in changes.items() if k in ("disposition", "notes")}
    return await _write_contact(redis, keys, contact_id,
                                lambda old: dataclasses.replace(old, **allowed) if old is not None else None,
                                now=now, retention_days=retention_days)


async def list_timeline(redis: aioredis.Redis, keys: Keys, customer_id: str, *, limit: int = 50,
                        now: float | None = None, retention_days: int | None = None,
                        before: float | None = None) -> list[Contact]:
    """The customer's contacts, newest first (expired records are skipped); with `before`, only
    those that started before it.

    With `now` and `retention_days`, contacts older than the retention are left out too.
    """
    limit = max(1, min(limit, MAX_TIMELINE_LIMIT))
    low = "-inf" if now is None or retention_days is None else now - _retention_seconds(retention_days)
    high = "+inf" if before is None else f"({before!r}"
    ids = await redis.zrevrangebyscore(keys.timeline(customer_id), high, low, start=0, num=limit)
    if not ids:
        return []
    raws = await redis.mget([keys.contact(i) for i in ids])
    return [c for c in (contact_from_json(r) for r in raws) if c is not None]


async def prune_timeline(redis: aioredis.Redis, keys: Keys, customer_id: str, *, now: float,
                         retention_days: int = DEFAULT_RETENTION_DAYS) -> int:
    """Drop timeline entries older than the retention; returns how many were removed."""
    cutoff = now - _retention_seconds(retention_days)
    return int(await redis.zremrangebyscore(keys.timeline(customer_id), "-inf", f"({cutoff}"))


async def contact_id_for_call(redis: aioredis.Redis, keys: Keys, linkedid: str) -> str | None:
    value = await redis.get(keys.call_by_linkedid(linkedid))
    return str(value) if value is not None else None




async def delete_customer_contacts(redis: aioredis.Redis, keys: Keys, customer_id: str) -> None:
    """Remove every contact of a customer and their timeline (the customer is being deleted)."""
    contact_ids = await redis.zrange(keys.timeline(customer_id), 0, -1)
    async with redis.pipeline(transaction=True) as pipe:
        for cid in contact_ids:
            pipe.delete(keys.contact(cid))
        pipe.delete(keys.timeline(customer_id))
        await pipe.execute()
