"""Re-filling Redis from the system of record (services/record_warmup.py), one script per batch.

Every write is "if absent" (SET NX): a key Redis still holds, or one a call or an agent wrote
since the flush, is newer than the record and is kept. So a warm-up over a Redis that lost
nothing changes nothing, and one running while calls are served never undoes their writes.

Layout written (every name from `Keys`): the customer profile, the customers index, the phone
and account indexes; cases and the customer's case indexes; contacts (expiring as save_contact
sets them) and the customer's timeline; the case sequence raised to the highest case id on record;
``record:restored`` (no TTL: state by nature), the marker that Redis holds the record's data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import redis.asyncio as aioredis

from ivrserver.domain.cases import ACTIVE
from ivrserver.domain.model import Case, CaseStatus, Contact, Customer
from ivrserver.store import scripts
from ivrserver.store.cases import case_to_json
from ivrserver.store.contacts import contact_to_json
from ivrserver.store.customers import customer_to_json
from ivrserver.store.keys import Keys

DAY = 86400

# ARGV: customer prefix, phone prefix, account prefix, customers index, JSON [[id, profile, [phones], account]]
_CUSTOMERS = scripts.declare("""
local n = 0
for _, c in ipairs(cjson.decode(ARGV[5])) do
  if redis.call('SET', ARGV[1] .. c[1], c[2], 'NX') then
    n = n + 1
    redis.call('ZADD', ARGV[4], 0, c[1])
    for _, p in ipairs(c[3]) do redis.call('SADD', ARGV[2] .. p, c[1]) end
    if c[4] ~= '' then redis.call('SET', ARGV[3] .. c[4], c[1], 'NX') end
  end
end
return n
""")

# ARGV: case prefix, open cases prefix, customer cases prefix, JSON [[id, customer, case, opened_at, open,
# due (0: none)]], due cases index
_CASES = scripts.declare("""
local n = 0
for _, k in ipairs(cjson.decode(ARGV[4])) do
  if redis.call('SET', ARGV[1] .. k[1], k[3], 'NX') then
    n = n + 1
    redis.call('ZADD', ARGV[3] .. k[2], k[4], k[1])
    if k[5] == 1 then redis.call('ZADD', ARGV[2] .. k[2], k[4], k[1]) end
    if k[6] ~= 0 then redis.call('ZADD', ARGV[5], k[6], k[1]) end
  end
end
return n
""")

# ARGV: contact prefix, timeline prefix, timeline TTL, JSON [[id, customer, contact, started_at, expire_at]]
_CONTACTS = scripts.declare("""
local n = 0
for _, k in ipairs(cjson.decode(ARGV[4])) do
  if redis.call('SET', ARGV[1] .. k[1], k[3], 'NX', 'EXAT', k[5]) then
    n = n + 1
    redis.call('ZADD', ARGV[2] .. k[2], k[4], k[1])
    redis.call('EXPIRE', ARGV[2] .. k[2], ARGV[3])
  end
end
return n
""")

# KEYS: the case sequence; ARGV: the highest case id on record
_RAISE_SEQUENCE = scripts.declare("""
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0
""")


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def restore_customers(redis: aioredis.Redis, keys: Keys, customers: Sequence[Customer]) -> int:
    """Customers Redis does not hold, with their phone and account indexes; how many were written."""
    if not customers:
        return 0
    batch = [[c.id, customer_to_json(c), list(c.phones), c.account_number or ""] for c in customers]
    return int(await scripts.script(redis, _CUSTOMERS)(keys=[], args=[
        keys.customer(""), keys.phone(""), keys.account(""), keys.customer_ids(), _dumps(batch)]))


async def restore_cases(redis: aioredis.Redis, keys: Keys, cases: Sequence[Case]) -> int:
    if not cases:
        return 0
    batch = [[k.id, k.customer_id, case_to_json(k), k.opened_at, 1 if k.status is not CaseStatus.CLOSED else 0,
              k.due_at if k.due_at is not None and k.status in ACTIVE else 0]
             for k in cases]
    return int(await scripts.script(redis, _CASES)(keys=[], args=[
        keys.case(""), keys.open_cases(""), keys.customer_cases(""), _dumps(batch), keys.cases_due()]))


async def restore_contacts(redis: aioredis.Redis, keys: Keys, contacts: Sequence[Contact], *, now: float,
                           retention_days: int) -> int:
    """Contacts (with a customer) younger than the retention, expiring when save_contact would."""
    keep = retention_days * DAY
    batch = [[c.id, c.customer_id, contact_to_json(c), c.started_at, math.ceil(c.started_at + keep)]
             for c in contacts if c.customer_id and c.started_at + keep > now]
    if not batch:
        return 0
    return int(await scripts.script(redis, _CONTACTS)(keys=[], args=[
        keys.contact(""), keys.timeline(""), keep, _dumps(batch)]))


async def raise_case_sequence(redis: aioredis.Redis, keys: Keys, highest: int) -> bool:
    """The case sequence at least `highest`, so a new case never takes a recorded case's id."""
    return bool(await scripts.script(redis, _RAISE_SEQUENCE)(keys=[keys.case_seq()], args=[highest]))


async def is_restored(redis: aioredis.Redis, keys: Keys) -> bool:
    return bool(await redis.exists(keys.record_restored()))


async def mark_restored(redis: aioredis.Redis, keys: Keys, at: float) -> None:
    await redis.set(keys.record_restored(), repr(at))
