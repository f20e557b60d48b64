"""Access grants: which customers (and contacts) an agent may read and write back to, until when.

Layout (all names from `Keys`):
- `agent_access(agent)`     Hash customer id (or `contact:<id>`) -> expiry (epoch seconds): REST
                            reads and notes write-back allowed until then; the key expires with
                            its newest grant.
- `customer_grantees(customer)` ZSET "<agent> <field>" -> expiry: every grant field that belongs
                            to the customer (its id and its contacts), so deleting the customer
                            revokes them (`revoke_customer`).

A screen-pop grants in the same script that numbers it (store/pops.py); `AccessGrants` grants
on its own, reads and revokes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from ivrserver.domain.privacy import contact_grant
from ivrserver.store.keys import Keys

AGENT_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def check_agent_id(agent_id: str) -> str:
    if not isinstance(agent_id, str) or not AGENT_ID.match(agent_id):
        raise ValueError(f"invalid agent id {agent_id!r}")
    return agent_id


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


# The grant field of a contact (notes write-back), beside customer ids in the same hash: the
# domain's one naming rule (domain/privacy.py decides on these names).
contact_field = contact_grant


class AccessGrants:
    """Grant, check and revoke agents' read access to customers and contacts."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

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
