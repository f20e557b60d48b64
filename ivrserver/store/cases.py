"""Cases in Redis: a customer's open and closed issues.

Layout (every name from `Keys`):
- ``case:{id}``            STRING  JSON of a `Case` (kept until the customer is deleted)
- ``opencases:{customer}`` ZSET    ids of the customer's open cases scored by opened_at
- ``cases:{customer}``     ZSET    ids of all the customer's cases scored by opened_at
- ``seq:case``             STRING  INCR counter giving case ids "1", "2", ...
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from ivrserver.domain.model import Case, CaseStatus
from ivrserver.store.keys import Keys

log = logging.getLogger(__name__)


class CaseNotFound(LookupError):
    pass


# --- serialisation -------------------------------------------------------------------------------

def case_to_json(case: Case) -> str:
    data = dataclasses.asdict(case)
    data["status"] = case.status.value
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def case_to_dict(case: Case) -> dict[str, Any]:
    return json.loads(case_to_json(case))  # type: ignore[no-any-return]


def case_from_json(raw: str | None) -> Case | None:
    if not raw:
        return None
    try:
        d = json.loads(raw)
        return Case(
            id=str(d["id"]), customer_id=str(d["customer_id"]), status=CaseStatus(d["status"]),
            summary=str(d["summary"]), opened_at=float(d["opened_at"]), owner_agent=d.get("owner_agent"),
            severity=int(d.get("severity", 3)), still_needed=str(d.get("still_needed") or ""),
            next_step=str(d.get("next_step") or ""),
        )
    except (ValueError, KeyError, TypeError) as exc:
        log.error("unreadable case record skipped: %s", exc)
        return None


# --- cases ---------------------------------------------------------------------------------------

async def open_case(redis: aioredis.Redis, keys: Keys, *, customer_id: str, summary: str, now: float,
                    owner_agent: str | None = None, severity: int = 3, still_needed: str = "",
                    next_step: str = "") -> Case:
    """Open a new case with the next id from the case sequence."""
    case_id = str(await redis.incr(keys.case_seq()))
    case = Case(id=case_id, customer_id=customer_id, status=CaseStatus.OPEN, summary=summary, opened_at=now,
                owner_agent=owner_agent, severity=severity, still_needed=still_needed, next_step=next_step)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.case(case_id), case_to_json(case))
        pipe.zadd(keys.open_cases(customer_id), {case_id: now})
        pipe.zadd(keys.customer_cases(customer_id), {case_id: now})
        await pipe.execute()
    return case


async def get_case(redis: aioredis.Redis, keys: Keys, case_id: str) -> Case | None:
    return case_from_json(await redis.get(keys.case(case_id)))


async def update_case(redis: aioredis.Redis, keys: Keys, case_id: str, changes: Mapping[str, Any]) -> Case:
    """Apply validated changes (summary, still_needed, next_step, owner_agent, severity, status).

    Closing or reopening moves the case out of / into the customer's open cases. Concurrent
    updates of one case are serialised with WATCH. Raises CaseNotFound.
    """
    allowed = {"summary", "still_needed", "next_step", "owner_agent", "severity", "status"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
    key = keys.case(case_id)
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                case = case_from_json(await pipe.get(key))
                if case is None:
                    raise CaseNotFound(case_id)
                updated = dataclasses.replace(case, **changes)
                pipe.multi()
                pipe.set(key, case_to_json(updated))
                if updated.status is CaseStatus.OPEN:
                    pipe.zadd(keys.open_cases(case.customer_id), {case_id: case.opened_at})
                else:
                    pipe.zrem(keys.open_cases(case.customer_id), case_id)
                await pipe.execute()
                return updated
            except WatchError:
                continue


async def _cases(redis: aioredis.Redis, keys: Keys, index: str, limit: int) -> list[Case]:
    ids = await redis.zrevrange(index, 0, max(1, limit) - 1)
    if not ids:
        return []
    raws = await redis.mget([keys.case(i) for i in ids])
    return [c for c in (case_from_json(r) for r in raws) if c is not None]


async def list_open_cases(redis: aioredis.Redis, keys: Keys, customer_id: str, *, limit: int = 100) -> list[Case]:
    """The customer's open cases, newest first."""
    return await _cases(redis, keys, keys.open_cases(customer_id), limit)


async def list_cases(redis: aioredis.Redis, keys: Keys, customer_id: str, *, limit: int = 100) -> list[Case]:
    """All the customer's cases (open and closed), newest first."""
    return await _cases(redis, keys, keys.customer_cases(customer_id), limit)


async def delete_customer_cases(redis: aioredis.Redis, keys: Keys, customer_id: str) -> None:
    """Remove every case of a customer and its indexes (the customer is being deleted)."""
    case_ids = await redis.zrange(keys.customer_cases(customer_id), 0, -1)
    async with redis.pipeline(transaction=True) as pipe:
        for cid in case_ids:
            pipe.delete(keys.case(cid))
        pipe.delete(keys.open_cases(customer_id), keys.customer_cases(customer_id))
        await pipe.execute()
