"""Customers in Redis: profiles, phone and account indexes, caller snapshot, account + PIN identification.

Layout (every name from `Keys`):
- ``customer:{id}``     STRING  JSON profile (canonical mapping, with pin_hash)
- ``customers``         ZSET    every customer id, score 0 (ordered by id, for paging)
- ``phone:{number}``    SET     ids of the customers with this normalised number (a shared
                                family line has several; the snapshot then names nobody). The
                                number is `phone.normalise` form: E.164 for valid numbers. Customers
                                saved before numbers were E.164 are indexed under the number as
                                written; the snapshot also looks there (`phone.lookup_forms`), and
                                saving the customer again (import, REST) moves them to E.164.
- ``account:{number}``  STRING  id of the customer with this account number (unique)
- ``pinfail:{account}`` HASH    failures (comma-separated epoch seconds), locked_until; expires
- ``outbox``            STREAM  with a system of record (`Keys.records`), every write of a profile
                                (save, import, PIN hash upgrade) appends a `customer` entry and a
                                deletion a `customer_deleted` entry, in the same MULTI as the write

The caller snapshot is one EVALSHA: a Lua script follows phone → id → profile, open cases and the
newest finished contact, so that call entry costs a single round trip.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from ivrserver.domain import identification, phone
from ivrserver.domain.customer_validation import customer_to_dict
from ivrserver.domain.identification import LockoutPolicy
from ivrserver.domain.model import CallerSnapshot, Case, Contact, ContactPreferences, Customer, Segment, Tier
from ivrserver.store import cases, contacts, grants, scripts
from ivrserver.store.keys import Keys

log = logging.getLogger(__name__)

MAX_SNAPSHOT_CASES = 20


class CustomerExists(Exception):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"customer {customer_id} already exists")
        self.customer_id = customer_id


class CustomerNotFound(LookupError):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"no customer {customer_id}")
        self.customer_id = customer_id


class AccountInUse(Exception):
    def __init__(self, account_number: str, owner: str) -> None:
        super().__init__(f"account number {phone.masked(account_number)} belongs to customer {owner}")
        self.account_number = account_number
        self.owner = owner


def customer_to_json(customer: Customer) -> str:
    return json.dumps(customer_to_dict(customer, include_pin_hash=True), separators=(",", ":"),
                      ensure_ascii=False)


def customer_from_json(raw: str | None) -> Customer | None:
    """The stored profile, or None when absent or unreadable (logged, never raised)."""
    if not raw:
        return None
    try:
        d = json.loads(raw)
        prefs = d.get("preferences") or {}
        return Customer(
            id=str(d["id"]), name=str(d["name"]), phones=tuple(str(p) for p in d.get("phones") or ()),
            tier=Tier(d.get("tier", "standard")), segment=Segment(d.get("segment", "individual")),
            language=str(d.get("language") or "en"), account_manager=d.get("account_manager"),
            account_number=d.get("account_number"), pin_hash=d.get("pin_hash"),
            preferences=ContactPreferences(
                timezone=str(prefs.get("timezone", "UTC")), allowed_from=str(prefs.get("allowed_from", "09:00")),
                allowed_until=str(prefs.get("allowed_until", "20:00")),
                do_not_call=bool(prefs.get("do_not_call", False)),
                holidays_ok=bool(prefs.get("holidays_ok", False))),
            attributes={str(k): str(v) for k, v in (d.get("attributes") or {}).items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.error("unreadable customer record skipped: %s", exc)
        return None


# --- outbox entries (record/sink.py decodes them; built here, next to the JSON they carry, so that
# the writes below can queue them in their own MULTI: store/ must not import record/) ---------------

def customer_entry(customer: Customer) -> dict[str, str]:
    """The whole customer, pin_hash included (PostgreSQL is the record): never log an entry."""
    return {"kind": "customer", "data": customer_to_json(customer)}


def customer_deleted_entry(customer_id: str) -> dict[str, str]:
    return {"kind": "customer_deleted", "data": json.dumps({"id": customer_id}, separators=(",", ":"),
                                                           ensure_ascii=False)}


# --- profiles ------------------------------------------------------------------------------------

async def save_customer(redis: aioredis.Redis, keys: Keys, customer: Customer, *,
                        mode: Literal["upsert", "create", "update"] = "upsert") -> None:
    """Store a validated customer and keep the phone and account indexes in step, atomically.

    `create` refuses an existing id (CustomerExists), `update` a missing one (CustomerNotFound).
    An account number owned by another customer raises AccountInUse. With a system of record the
    profile is queued for PostgreSQL in the same MULTI.
    """
    if not customer.id:
        raise ValueError("customer id is required")
    key = keys.customer(customer.id)
    account_key = keys.account(customer.account_number) if customer.account_number else None
    watched = [key] + ([account_key] if account_key else [])
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(*watched)
                old_raw = await pipe.get(key)
                if mode == "create" and old_raw is not None:
                    raise CustomerExists(customer.id)
                if mode == "update" and old_raw is None:
                    raise CustomerNotFound(customer.id)
                if account_key is not None:
                    owner = await pipe.get(account_key)
                    if owner is not None and owner != customer.id:
                        raise AccountInUse(customer.account_number or "", owner)
                old = customer_from_json(old_raw)
                pipe.multi()
                if old is not None:
                    for number in set(old.phones) - set(customer.phones):
                        pipe.srem(keys.phone(number), customer.id)
                    if old.account_number and old.account_number != customer.account_number:
                        pipe.delete(keys.account(old.account_number), keys.pin_failures(old.account_number))
                document = customer_to_json(customer)
                pipe.set(key, document)
                outbox = keys.outbox_if_recording()
                if outbox is not None:
                    pipe.xadd(outbox, {"kind": "customer", "data": document})
                pipe.zadd(keys.customer_ids(), {customer.id: 0})
                for number in customer.phones:
                    pipe.sadd(keys.phone(number), customer.id)
                if account_key is not None:
                    pipe.set(account_key, customer.id)
                await pipe.execute()
                return
            except WatchError:
                continue


async def get_customer(redis: aioredis.Redis, keys: Keys, customer_id: str) -> Customer | None:
    return customer_from_json(await redis.get(keys.customer(customer_id)))


async def get_customers(redis: aioredis.Redis, keys: Keys, customer_ids: list[str]) -> list[Customer]:
    if not customer_ids:
        return []
    raws = await redis.mget([keys.customer(i) for i in customer_ids])
    return [c for c in (customer_from_json(r) for r in raws) if c is not None]


async def delete_customer(redis: aioredis.Redis, keys: Keys, customer_id: str, *,
                          with_history: bool = True) -> bool:
    """Delete a customer, their index entries, every agent's access grant to them and their
    contacts, and (by default) their contacts and cases. With a system of record the deletion is
    queued for PostgreSQL in the same MULTI (there the customer's cases and case events go with it)."""
    key = keys.customer(customer_id)
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                old = customer_from_json(await pipe.get(key))
                if old is None:
                    await pipe.reset()
                    await redis.zrem(keys.customer_ids(), customer_id)
                    await grants.revoke_customer(redis, keys, customer_id)
                    return False
                pipe.multi()
                for number in old.phones:
                    pipe.srem(keys.phone(number), customer_id)
                if old.account_number:
                    pipe.delete(keys.account(old.account_number), keys.pin_failures(old.account_number))
                pipe.delete(key)
                pipe.zrem(keys.customer_ids(), customer_id)
                outbox = keys.outbox_if_recording()
                if outbox is not None:
                    pipe.xadd(outbox, customer_deleted_entry(customer_id))  # type: ignore[arg-type]
                await pipe.execute()
                break
            except WatchError:
                continue
    await grants.revoke_customer(redis, keys, customer_id)
    if with_history:
        await contacts.delete_customer_contacts(redis, keys, customer_id)
        await cases.delete_customer_cases(redis, keys, customer_id)
    return True


async def list_customers(redis: aioredis.Redis, keys: Keys, *, offset: int = 0,
                         limit: int = 50) -> tuple[list[Customer], int]:
    """A page of customers ordered by id, and the total count."""
    offset = max(0, offset)
    limit = max(1, min(limit, 1000))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrange(keys.customer_ids(), offset, offset + limit - 1)
        pipe.zcard(keys.customer_ids())
        ids, total = await pipe.execute()
    return await get_customers(redis, keys, list(ids)), int(total)


async def iter_customers(redis: aioredis.Redis, keys: Keys, *, batch: int = 500) -> AsyncIterator[Customer]:
    """Every customer, ordered by id."""
    offset = 0
    while True:
        page, _ = await list_customers(redis, keys, offset=offset, limit=batch)
        if not page:
            return
        for customer in page:
            yield customer
        offset += batch


async def customer_ids_for_phone(redis: aioredis.Redis, keys: Keys, number: str) -> list[str]:
    """Ids of the customers with this (already normalised) number, sorted."""
    return sorted(await redis.smembers(keys.phone(number)))


async def account_owner(redis: aioredis.Redis, keys: Keys, account_number: str) -> str | None:
    value = await redis.get(keys.account(account_number))
    return str(value) if value is not None else None


# --- caller snapshot -----------------------------------------------------------------------------

_SNAPSHOT_LUA = scripts.declare("""
-- KEYS: phone index sets of the caller's number (normal form, then older forms).
-- ARGV: key prefixes built by Keys (customer, open cases, case, timeline, contact), the
-- maximum number of open cases to return, the key of the menu's entry announcement ('' for
-- none: its value is returned fifth, '' when unset) and the key of the active incidents ('' for
-- none: their HASH values are returned sixth; a handful at most, filtered by area in Python).
local announcement = ''
if ARGV[7] and ARGV[7] ~= '' then announcement = redis.call('GET', ARGV[7]) or '' end
local incidents = {}
if ARGV[8] and ARGV[8] ~= '' then incidents = redis.call('HVALS', ARGV[8]) end
local ids = redis.call('SUNION', unpack(KEYS))
if #ids ~= 1 then return {#ids, false, {}, '', announcement, incidents} end
local id = ids[1]
local profile = redis.call('GET', ARGV[1] .. id)
if not profile then return {0, false, {}, '', announcement, incidents} end
local cases = {}
local case_ids = redis.call('ZREVRANGE', ARGV[2] .. id, 0, tonumber(ARGV[6]) - 1)
for _, case_id in ipairs(case_ids) do
  local case = redis.call('GET', ARGV[3] .. case_id)
  if case then cases[#cases + 1] = case end
end
local last = ''
local recent = redis.call('ZREVRANGE', ARGV[4] .. id, 0, 9)
for _, contact_id in ipairs(recent) do
  local contact = redis.call('GET', ARGV[5] .. contact_id)
  if contact then
    local ok, decoded = pcall(cjson.decode, contact)
    if ok and type(decoded) == 'table' and decoded['outcome'] ~= 'in_progress' then
      last = contact
      break
    end
  end
end
return {1, profile, cases, last, announcement, incidents}
""")


async def load_scripts(redis: aioredis.Redis) -> None:
    """Load the store's scripts at start-up so that the first call's EVALSHA already hits."""
    await scripts.load_all(redis)


async def snapshot_by_number(redis: aioredis.Redis, keys: Keys, number: str | None, *,
                             default_country: str = "") -> CallerSnapshot:
    """What the store knows about a calling number, in one round trip (one EVALSHA).

    `default_country` is the region national numbers are read in (`phone.normalise`, e.g. "CN").

    Withheld or malformed caller IDs are `anonymous=True` with number '' and cost no round trip.
    A number shared by several customers (or unknown) gives `customer=None`: identify by account.
    """
    snapshot, _ = await snapshot_and_announcement(redis, keys, number, default_country=default_country)
    return snapshot


async def snapshot_and_announcement(redis: aioredis.Redis, keys: Keys, number: str | None, *,
                                    menu: str | None = None, default_country: str = "",
                                    ) -> tuple[CallerSnapshot, str]:
    """The caller snapshot and, with `menu`, the raw value of that menu's entry announcement
    ('' when off), in the same round trip: what a call needs before its first prompt."""
    snapshot, announcement, _ = await snapshot_for_call(redis, keys, number, menu=menu,
                                                        default_country=default_country, incidents=False)
    return snapshot, announcement


async def snapshot_for_call(redis: aioredis.Redis, keys: Keys, number: str | None, *,
                            menu: str | None = None, default_country: str = "", incidents: bool = True,
                            ) -> tuple[CallerSnapshot, str, list[str]]:
    """`snapshot_and_announcement` and, with `incidents`, the raw JSON of every active incident
    (store/incidents.py), still in one round trip."""
    announcement_key = keys.announcement(menu) if menu else ""
    incidents_key = keys.incidents_active() if incidents else ""
    forms = phone.lookup_forms(number, default_country)
    if not forms and not announcement_key and not incidents_key:
        return CallerSnapshot(number="", anonymous=True), "", []
    if not forms:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.get(announcement_key or keys.announcement(""))
            pipe.hvals(incidents_key or keys.incidents_active())
            raw, active = await pipe.execute()
        return (CallerSnapshot(number="", anonymous=True), str(raw or "") if announcement_key else "",
                list(active) if incidents_key else [])
    reply: list[Any] = await scripts.script(redis, _SNAPSHOT_LUA)(
        keys=[keys.phone(form) for form in forms],
        args=[keys.customer(""), keys.open_cases(""), keys.case(""), keys.timeline(""), keys.contact(""),
              MAX_SNAPSHOT_CASES, announcement_key, incidents_key],
    )
    normalised = forms[0]
    announcement = str(reply[4] or "") if reply and len(reply) >= 5 else ""
    active = [str(r) for r in reply[5]] if reply and len(reply) >= 6 and reply[5] else []
    if not reply or reply[0] != 1 or len(reply) < 4:
        return CallerSnapshot(number=normalised), announcement, active
    customer = customer_from_json(reply[1])
    if customer is None:
        return CallerSnapshot(number=normalised), announcement, active
    open_cases = tuple(c for c in (cases.case_from_json(r) for r in reply[2] or ()) if c is not None)
    return CallerSnapshot(number=normalised, customer=customer, open_cases=open_cases,
                          last_contact=contacts.contact_from_json(reply[3] or None)), announcement, active


# --- account + PIN identification (the flow: services/customers.identify_by_account) ---------

async def read_attempts(redis: aioredis.Redis, keys: Keys, account: str) -> tuple[identification.Attempts, str | None]:
    """The account's failure record and owner, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.pin_failures(account))
        pipe.get(keys.account(account))
        fields, owner = await pipe.execute()
    return identification.decode_attempts(fields or {}), owner


async def update_attempts(redis: aioredis.Redis, keys: Keys, account: str, now: float, policy: LockoutPolicy,
                          change: Callable[[identification.Attempts], identification.Attempts],
                          ) -> identification.Attempts:
    """Replace the account's failure record by `change(current)` atomically (WATCH, retried), kept
    as long as the policy needs it; returns the new record."""
    key = keys.pin_failures(account)
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                current = identification.decode_attempts(await pipe.hgetall(key) or {})
                updated = change(current)
                pipe.multi()
                pipe.delete(key)
                pipe.hset(key, mapping=identification.encode_attempts(updated))
                pipe.expire(key, identification.expiry_seconds(updated, now, policy))
                await pipe.execute()
                return updated
            except WatchError:
                continue


async def clear_attempts(redis: aioredis.Redis, keys: Keys, account: str) -> None:
    await redis.delete(keys.pin_failures(account))


async def replace_pin_hash(redis: aioredis.Redis, keys: Keys, customer_id: str, old: str, new: str) -> bool:
    """Replace the profile's PIN hash `old` by `new` unless the profile changed meanwhile (only the
    `pin_hash` field is touched: other fields stay exactly as stored). With a system of record the
    profile is queued for PostgreSQL in the same MULTI."""
    key = keys.customer(customer_id)
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(key)
            raw = await pipe.get(key)
            profile = json.loads(raw) if raw else None
            if not isinstance(profile, dict) or profile.get("pin_hash") != old:
                return False
            profile["pin_hash"] = new
            document = json.dumps(profile, separators=(",", ":"), ensure_ascii=False)
            pipe.multi()
            pipe.set(key, document)
            outbox = keys.outbox_if_recording()
            if outbox is not None:
                pipe.xadd(outbox, {"kind": "customer", "data": document})
            await pipe.execute()
            return True
        except (WatchError, ValueError):
            return False  # changed meanwhile: the next successful identification tries again


async def profiles_and_owners(redis: aioredis.Redis, keys: Keys, items: list[tuple[str, str | None]],
                              ) -> list[tuple[Customer | None, str | None]]:
    """For (customer id, account number or None) pairs: the stored profile and the account's owner,
    in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for customer_id, account_number in items:
            pipe.get(keys.customer(customer_id))
            if account_number:
                pipe.get(keys.account(account_number))
            else:
                pipe.echo("")
        replies = await pipe.execute()
    return [(customer_from_json(replies[2 * i]), replies[2 * i + 1] or None) for i in range(len(items))]


async def customer_card(redis: aioredis.Redis, keys: Keys, customer_id: str, *, recent: int,
                        max_cases: int = 50) -> tuple[Customer | None, list[Contact], list[Case]]:
    """Profile, the `recent` newest contacts and the open cases of a customer (the screen pop):
    one pipelined round trip for the indexes, one for the records."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.customer(customer_id))
        pipe.zrevrange(keys.timeline(customer_id), 0, recent - 1)
        pipe.zrange(keys.open_cases(customer_id), 0, max_cases - 1)
        profile, contact_ids, case_ids = await pipe.execute()
        for cid in contact_ids:
            pipe.get(keys.contact(cid))
        for cid in case_ids:
            pipe.get(keys.case(cid))
        records = await pipe.execute() if contact_ids or case_ids else []
    found_contacts = [c for c in (contacts.contact_from_json(r) for r in records[:len(contact_ids)]) if c]
    found_cases = [c for c in (cases.case_from_json(r) for r in records[len(contact_ids):]) if c]
    return customer_from_json(profile), found_contacts, found_cases
