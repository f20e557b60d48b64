"""Cases in Redis: a customer's open and closed issues.

Layout (every name from `Keys`):
- ``case:{id}``            STRING  JSON of a `Case` (kept until the customer is deleted)
- ``opencases:{customer}`` ZSET    ids of the customer's open cases scored by opened_at
- ``cases:{customer}``     ZSET    ids of all the customer's cases scored by opened_at
- ``seq:case``             STRING  INCR counter giving case ids "1", "2", ...
- ``outbox``               STREAM  with a system of record (`Keys.records`), every change of a case
                                   appends a `case` entry (the case as it is now) and a `case_event`
                                   entry (who, when, what) in the same MULTI as the Redis write
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
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


# --- outbox entries (record/sink.py decodes them; they live here, next to the JSON they carry, so
# that store modules can write them in their own MULTI without importing record/, which imports
# store/ for the same serialisation) -----------------------------------------------------------

def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def case_entry(case: Case, at: float) -> dict[str, str]:
    """The case as it is after a change made at `at` (a closed case's closing time, the first time)."""
    return {"kind": "case", "data": case_to_json(case), "at": repr(float(at))}


def case_event_entry(case_id: str, customer_id: str | None, *, at: float, actor: str, kind: str,
                     detail: Mapping[str, Any] | None = None) -> dict[str, str]:
    """One change of a case: who (an agent id, `system`, `import`, `backoffice:<name>`), when, what."""
    return {"kind": "case_event", "data": _dumps({"case_id": case_id, "customer_id": customer_id, "at": at,
                                                  "actor": actor, "kind": kind, "detail": dict(detail or {})})}


_CASE_FIELDS = ("summary", "still_needed", "next_step", "owner_agent", "severity", "status")


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, CaseStatus) else value


def change_kind(old: Case, new: Case) -> str:
    """opened / updated / closed / reopened: what a change did to a case."""
    if old.status is not new.status:
        return "reopened" if new.status is CaseStatus.OPEN else "closed"
    return "updated"


def changed_fields(old: Case | None, new: Case) -> dict[str, Any]:
    """The fields whose value differs (all of them for a new case), as JSON values."""
    return {name: _plain(getattr(new, name)) for name in _CASE_FIELDS
            if old is None or getattr(old, name) != getattr(new, name)}


def _queue_change(pipe: Any, keys: Keys, old: Case | None, new: Case, *, at: float, actor: str) -> None:
    """With a system of record: the case and its event, on the caller's MULTI."""
    outbox = keys.outbox_if_recording()
    if outbox is None:
        return
    kind = "opened" if old is None else change_kind(old, new)
    pipe.xadd(outbox, case_entry(new, at))
    pipe.xadd(outbox, case_event_entry(new.id, new.customer_id, at=at, actor=actor, kind=kind,
                                       detail=changed_fields(old, new)))


# --- cases ---------------------------------------------------------------------------------------

async def open_case(redis: aioredis.Redis, keys: Keys, *, customer_id: str, summary: str, now: float,
                    owner_agent: str | None = None, severity: int = 3, still_needed: str = "",
                    next_step: str = "", actor: str = "system") -> Case:
    """Open a new case with the next id from the case sequence. With a system of record the case
    and its `opened` event by `actor` are queued in the same MULTI."""
    case_id = str(await redis.incr(keys.case_seq()))
    now = round(now, 6)  # microseconds, as PostgreSQL keeps it: the copy restored from the record is equal
    case = Case(id=case_id, customer_id=customer_id, status=CaseStatus.OPEN, summary=summary, opened_at=now,
                owner_agent=owner_agent, severity=severity, still_needed=still_needed, next_step=next_step)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.case(case_id), case_to_json(case))
        pipe.zadd(keys.open_cases(customer_id), {case_id: now})
        pipe.zadd(keys.customer_cases(customer_id), {case_id: now})
        _queue_change(pipe, keys, None, case, at=now, actor=actor)
        await pipe.execute()
    return case


async def get_case(redis: aioredis.Redis, keys: Keys, case_id: str) -> Case | None:
    return case_from_json(await redis.get(keys.case(case_id)))


async def update_case(redis: aioredis.Redis, keys: Keys, case_id: str, changes: Mapping[str, Any], *,
                      now: float | None = None, actor: str = "system") -> Case:
    """Apply validated changes (summary, still_needed, next_step, owner_agent, severity, status).

    Closing or reopening moves the case out of / into the customer's open cases. Concurrent
    updates of one case are serialised with WATCH. Raises CaseNotFound. With a system of record the
    case and an `updated` / `closed` / `reopened` event by `actor` at `now` (default: the clock),
    detail the changed fields, are queued in the same MULTI; a change that changes nothing is
    not recorded.
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
                if updated != case:
                    _queue_change(pipe, keys, case, updated, at=time.time() if now is None else now, actor=actor)
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
