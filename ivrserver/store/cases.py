"""Cases in Redis: a customer's open and closed issues.

Layout (every name from `Keys`):
- ``case:{id}``            STRING  JSON of a `Case` (kept until the customer is deleted)
- ``opencases:{customer}`` ZSET    ids of the customer's open cases scored by opened_at
- ``cases:{customer}``     ZSET    ids of all the customer's cases scored by opened_at
- ``seq:case``             STRING  INCR counter giving case ids "1", "2", ...
- ``outbox``               STREAM  with a system of record (`Keys.records`), every change of a case
                                   appends a `case` entry (the case as it is now) and a `case_event`
                                   entry (who, when, what, why) in the same MULTI as the Redis write;
                                   every compensation change a `case_compensation` entry
- ``casechanges``          STREAM  every change of a case (kind, case, actor, why, detail), in the same
                                   MULTI: services/case_followup.py hands them to webhooks and notices
- ``casesdue``             ZSET    active cases (not resolved/closed) with a due time, scored by it
- ``caseshanded:{bo}``     ZSET    cases handed to back office `bo` (until closed)
- ``compensation:{id}``, ``compensations:case:{case}``, ``compensations:requested``,
  ``compensations:day:{person}:{day}`` compensations, per case, waiting for a supervisor, and the
                                   cents a person granted on a day (expires after 3 days)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from ivrserver.domain import cases as rules
from ivrserver.domain import compensation as comp
from ivrserver.domain.cases import CaseChange, Step
from ivrserver.domain.compensation import Compensation
from ivrserver.domain.model import Case, CaseStatus
from ivrserver.store.keys import Keys

log = logging.getLogger(__name__)


class CaseNotFound(LookupError):
    pass


# --- serialisation -------------------------------------------------------------------------------

def case_to_dict(case: Case) -> dict[str, Any]:
    """The wire and storage form of a case (REST, Redis, the outbox)."""
    return {
        "id": case.id, "customer_id": case.customer_id, "status": case.status.value, "summary": case.summary,
        "opened_at": case.opened_at, "owner_agent": case.owner_agent, "severity": case.severity,
        "still_needed": case.still_needed, "next_step": case.next_step,
        "checklist": [rules.checklist_item_to_dict(i) for i in case.checklist], "due_at": case.due_at,
        "updated_at": case.updated_at, "handed_to": list(case.handed_to),
        "compensated_cents": case.compensated_cents, "currency": case.currency,
    }


def case_to_json(case: Case) -> str:
    return json.dumps(case_to_dict(case), separators=(",", ":"), ensure_ascii=False)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def case_from_dict(d: Mapping[str, Any]) -> Case:
    """A stored case; fields added by the lifecycle are optional (cases from before it)."""
    return Case(
        id=str(d["id"]), customer_id=str(d["customer_id"]), status=CaseStatus(d["status"]),
        summary=str(d["summary"]), opened_at=float(d["opened_at"]), owner_agent=d.get("owner_agent"),
        severity=int(d.get("severity", 3)), still_needed=str(d.get("still_needed") or ""),
        next_step=str(d.get("next_step") or ""),
        checklist=tuple(rules.checklist_item_from_dict(i) for i in d.get("checklist") or ()),
        due_at=_optional_float(d.get("due_at")), updated_at=_optional_float(d.get("updated_at")),
        handed_to=tuple(str(b) for b in d.get("handed_to") or ()),
        compensated_cents=int(d.get("compensated_cents") or 0), currency=str(d.get("currency") or ""),
    )


def case_from_json(raw: str | None) -> Case | None:
    if not raw:
        return None
    try:
        return case_from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
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
                     detail: Mapping[str, Any] | None = None, why: str = "") -> dict[str, str]:
    """One change of a case: who (`agent:<id>`, `supervisor:<id>`, `system`, `import`,
    `backoffice:<name>`), when, what, why."""
    data = {"case_id": case_id, "customer_id": customer_id, "at": at, "actor": actor, "kind": kind,
            "detail": dict(detail or {})}
    if why:
        data["why"] = why
    return {"kind": "case_event", "data": _dumps(data)}


def compensation_entry(c: Compensation) -> dict[str, str]:
    """A compensation as it is now (the outbox's `case_compensation`, table case_compensations)."""
    return {"kind": "case_compensation", "data": _dumps(comp.to_dict(c))}


def case_change_entry(case: Case, previous: CaseStatus | None, *, kind: str, actor: str, why: str, at: float,
                      detail: Mapping[str, Any]) -> dict[str, str]:
    """One entry of the case-changes stream (its id becomes the change's event_id)."""
    return {"kind": kind, "case": case_to_json(case), "previous": previous.value if previous else "",
            "actor": actor, "why": why, "at": repr(float(at)), "detail": _dumps(dict(detail))}


def case_change_from_entry(event_id: str, fields: Mapping[str, str]) -> CaseChange:
    """Raises ValueError (or KeyError/TypeError) for an entry that is not a case change."""
    case = case_from_dict(json.loads(fields["case"]))
    detail = json.loads(fields.get("detail") or "{}")
    if not isinstance(detail, dict):
        raise ValueError("detail is not an object")
    previous = fields.get("previous") or ""
    return CaseChange(event_id=event_id, case=case, previous=CaseStatus(previous) if previous else None,
                      kind=str(fields["kind"]), actor=str(fields.get("actor", "")), why=str(fields.get("why", "")),
                      at=float(fields["at"]), detail=detail)


_CASE_FIELDS = ("summary", "still_needed", "next_step", "owner_agent", "severity", "status")


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, CaseStatus) else value


def change_kind(old: Case, new: Case) -> str:
    """updated, or the lifecycle's kind of a status change (closed, reopened, resolved, moved)."""
    if old.status is not new.status:
        return rules.move_kind(old.status, new.status)
    return "updated"


def changed_fields(old: Case | None, new: Case) -> dict[str, Any]:
    """The fields whose value differs (all of them for a new case), as JSON values."""
    return {name: _plain(getattr(new, name)) for name in _CASE_FIELDS
            if old is None or getattr(old, name) != getattr(new, name)}


MAX_EVENTS = 200


def _queue_change(pipe: Any, keys: Keys, old: Case | None, new: Case, *, at: float, actor: str,
                  kind: str | None = None, why: str = "", detail: Mapping[str, Any] | None = None) -> None:
    """The case's indexes, its change on the case-changes stream and, with a system of record, the
    case and its event on the outbox: all on the caller's MULTI."""
    kind = kind or ("opened" if old is None else change_kind(old, new))
    detail = changed_fields(old, new) if detail is None else detail
    if rules.is_open(new):
        pipe.zadd(keys.open_cases(new.customer_id), {new.id: new.opened_at})
    else:
        pipe.zrem(keys.open_cases(new.customer_id), new.id)
    if new.status in rules.ACTIVE and new.due_at is not None:
        pipe.zadd(keys.cases_due(), {new.id: new.due_at})
    else:
        pipe.zrem(keys.cases_due(), new.id)
    for backoffice in new.handed_to:
        if rules.is_open(new):
            pipe.zadd(keys.cases_handed(backoffice), {new.id: at}, nx=True)
        else:
            pipe.zrem(keys.cases_handed(backoffice), new.id)
    pipe.xadd(keys.case_changes(), case_change_entry(new, None if old is None else old.status, kind=kind,
                                                     actor=actor, why=why, at=at, detail=detail))
    pipe.rpush(keys.case_events(new.id), _dumps({"kind": kind, "actor": actor, "why": why, "at": at,
                                                 "status": new.status.value, "detail": dict(detail)}))
    pipe.ltrim(keys.case_events(new.id), -MAX_EVENTS, -1)
    outbox = keys.outbox_if_recording()
    if outbox is None:
        return
    pipe.xadd(outbox, case_entry(new, at))
    pipe.xadd(outbox, case_event_entry(new.id, new.customer_id, at=at, actor=actor, kind=kind, detail=detail,
                                       why=why))


# --- cases ---------------------------------------------------------------------------------------

async def open_case(redis: aioredis.Redis, keys: Keys, *, customer_id: str, summary: str, now: float,
                    owner_agent: str | None = None, severity: int = 3, still_needed: str = "",
                    next_step: str = "", actor: str = "system", due_at: float | None = None,
                    checklist: tuple[Any, ...] = (), why: str = "") -> Case:
    """Open a new case with the next id from the case sequence. Its `opened` change by `actor` is
    queued in the same MULTI (case-changes stream; with a system of record the outbox too)."""
    case_id = str(await redis.incr(keys.case_seq()))
    now = round(now, 6)  # microseconds, as PostgreSQL keeps it: the copy restored from the record is equal
    case = Case(id=case_id, customer_id=customer_id, status=CaseStatus.OPEN, summary=summary, opened_at=now,
                owner_agent=owner_agent, severity=severity, still_needed=still_needed, next_step=next_step,
                checklist=tuple(checklist), due_at=None if due_at is None else round(due_at, 6), updated_at=now)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.case(case_id), case_to_json(case))
        pipe.zadd(keys.customer_cases(customer_id), {case_id: now})
        _queue_change(pipe, keys, None, case, at=now, actor=actor, why=why)
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
                at = round(time.time() if now is None else now, 6)
                if updated != case:
                    updated = dataclasses.replace(updated, updated_at=at)
                pipe.multi()
                pipe.set(key, case_to_json(updated))
                if updated != case:
                    _queue_change(pipe, keys, case, updated, at=at, actor=actor)
                await pipe.execute()
                return updated
            except WatchError:
                continue


async def change_case(redis: aioredis.Redis, keys: Keys, case_id: str, decide: Callable[[Case], Step | None], *,
                      at: float, actor: str) -> tuple[Case, Step | None]:
    """Apply the lifecycle step `decide(case)` returns (None: nothing to change) to the stored case:
    the case, its indexes and its change in one MULTI, retried while someone else changes the case
    meanwhile (WATCH). `decide` may raise (domain.cases.CaseRuleError): nothing is written.
    Raises CaseNotFound. Returns the case as it is after, and the step (None: unchanged)."""
    key = keys.case(case_id)
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                case = case_from_json(await pipe.get(key))
                if case is None:
                    raise CaseNotFound(case_id)
                step = decide(case)
                if step is None:
                    await pipe.reset()
                    return case, None
                pipe.multi()
                pipe.set(key, case_to_json(step.case))
                _queue_change(pipe, keys, case, step.case, at=at, actor=actor, kind=step.kind, why=step.why,
                              detail=step.detail)
                await pipe.execute()
                return step.case, step
            except WatchError:
                continue


# --- compensations -------------------------------------------------------------------------------

DAY_TOTAL_TTL = 3 * 86400


async def get_compensation(redis: aioredis.Redis, keys: Keys, compensation_id: str) -> Compensation | None:
    raw = await redis.get(keys.compensation(compensation_id))
    if not raw:
        return None
    try:
        return comp.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        log.error("unreadable compensation record skipped: %s", exc)
        return None


async def _compensations(redis: aioredis.Redis, keys: Keys, index: str, limit: int) -> list[Compensation]:
    ids = await redis.zrange(index, 0, max(1, limit) - 1)
    found = [await get_compensation(redis, keys, i) for i in ids]
    return [c for c in found if c is not None]


async def case_compensations(redis: aioredis.Redis, keys: Keys, case_id: str, *, limit: int = 200,
                             ) -> list[Compensation]:
    """A case's compensations, oldest first."""
    return await _compensations(redis, keys, keys.case_compensations(case_id), limit)


async def requested_compensations(redis: aioredis.Redis, keys: Keys, *, limit: int = 200) -> list[Compensation]:
    """Compensations waiting for a supervisor, oldest first."""
    return await _compensations(redis, keys, keys.compensations_requested(), limit)


CompensationDecision = Callable[[Case, Compensation | None, int], tuple[Compensation, Step] | None]


async def write_compensation(redis: aioredis.Redis, keys: Keys, *, case_id: str, compensation_id: str,
                             person: str, day: str, decide: CompensationDecision, at: float, actor: str,
                             ) -> tuple[Compensation, Case, Step | None]:
    """Create or decide a compensation atomically with its case: `decide(case, stored compensation or
    None, cents `person` granted on `day`)` returns the compensation as it is to be and the case's
    step, or None to change nothing (then the stored compensation is returned). Granted and approved
    cents count towards `person`'s day. WATCHes the case, the compensation and the day's total."""
    case_key, comp_key = keys.case(case_id), keys.compensation(compensation_id)
    day_key = keys.compensation_day(person, day)
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(case_key, comp_key, day_key)
                case = case_from_json(await pipe.get(case_key))
                if case is None:
                    raise CaseNotFound(case_id)
                raw = await pipe.get(comp_key)
                stored = comp.from_dict(json.loads(raw)) if raw else None
                day_total = int(await pipe.get(day_key) or 0)
                decided = decide(case, stored, day_total)
                if decided is None:
                    await pipe.reset()
                    if stored is None:
                        raise LookupError(compensation_id)
                    return stored, case, None
                new, step = decided
                pipe.multi()
                pipe.set(comp_key, _dumps(comp.to_dict(new)))
                pipe.zadd(keys.case_compensations(case_id), {new.id: new.requested_at}, nx=True)
                if new.state is comp.CompensationState.REQUESTED:
                    pipe.zadd(keys.compensations_requested(), {new.id: new.requested_at})
                else:
                    pipe.zrem(keys.compensations_requested(), new.id)
                if new.state in comp.PAID and (stored is None or stored.state not in comp.PAID):
                    pipe.incrby(day_key, new.amount_cents)
                    pipe.expire(day_key, DAY_TOTAL_TTL)
                pipe.set(case_key, case_to_json(step.case))
                _queue_change(pipe, keys, case, step.case, at=at, actor=actor, kind=step.kind, why=step.why,
                              detail=step.detail)
                outbox = keys.outbox_if_recording()
                if outbox is not None:
                    pipe.xadd(outbox, compensation_entry(new))
                await pipe.execute()
                return new, step.case, step
            except WatchError:
                continue


# --- listing -------------------------------------------------------------------------------------

async def overdue_cases(redis: aioredis.Redis, keys: Keys, *, now: float, limit: int = 200) -> list[Case]:
    """Cases not resolved or closed past their due time, most overdue first."""
    ids = await redis.zrangebyscore(keys.cases_due(), "-inf", f"({now}", start=0, num=max(1, limit))
    if not ids:
        return []
    raws = await redis.mget([keys.case(i) for i in ids])
    return [c for c in (case_from_json(r) for r in raws) if c is not None and rules.is_overdue(c, now)]


async def handed_cases(redis: aioredis.Redis, keys: Keys, backoffice: str, *, limit: int = 200) -> list[Case]:
    """Cases handed to `backoffice` and not closed, oldest hand-off first."""
    ids = await redis.zrange(keys.cases_handed(backoffice), 0, max(1, limit) - 1)
    if not ids:
        return []
    raws = await redis.mget([keys.case(i) for i in ids])
    return [c for c in (case_from_json(r) for r in raws) if c is not None and rules.may_backoffice_see(c, backoffice)]


async def case_events(redis: aioredis.Redis, keys: Keys, case_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """The case's latest events, oldest first (at most MAX_EVENTS are kept in Redis)."""
    raws = await redis.lrange(keys.case_events(case_id), -max(1, limit), -1)
    out = []
    for raw in raws:
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


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
    handed = {c.id: c.handed_to for c in (case_from_json(r) for r in await redis.mget(
        [keys.case(cid) for cid in case_ids])) if c is not None} if case_ids else {}
    comp_ids = {cid: await redis.zrange(keys.case_compensations(cid), 0, -1) for cid in case_ids}
    async with redis.pipeline(transaction=True) as pipe:
        for cid in case_ids:
            pipe.delete(keys.case(cid), keys.case_compensations(cid), keys.case_events(cid))
            pipe.zrem(keys.cases_due(), cid)
            for backoffice in handed.get(cid, ()):
                pipe.zrem(keys.cases_handed(backoffice), cid)
            for comp_id in comp_ids[cid]:
                pipe.delete(keys.compensation(comp_id))
                pipe.zrem(keys.compensations_requested(), comp_id)
        pipe.delete(keys.open_cases(customer_id), keys.customer_cases(customer_id))
        await pipe.execute()
