"""Cases that follow through: the lifecycle, the checklist, hand-offs to back offices, their
results, and compensation within authority — the use cases `web/` calls.

Rules live in domain/cases.py and domain/compensation.py; this module reads the clock, builds the
actor names and audits grants. Every change is written with its case-change entry in one Redis
MULTI (store/cases.py); services/case_followup.py hands the changes to webhooks and notices.

Actors (on every change): `agent:<id>`, `supervisor:<id>`, `backoffice:<token name>`, `system`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis

from ivrserver.domain import cases as rules
from ivrserver.domain import compensation as comp
from ivrserver.domain.cases import CasePolicy, CaseRuleError, Step
from ivrserver.domain.compensation import Compensation, CompensationError, CompensationState
from ivrserver.domain.model import Agent, Case, CaseStatus
from ivrserver.services.customers import backoffice_actor
from ivrserver.store import cases as store
from ivrserver.store.keys import Keys

log = logging.getLogger(__name__)

SYSTEM = "system"
__all__ = ["CaseNotFound", "CaseRuleError", "CaseService", "CompensationError", "NotHandedHere", "actor_of_agent"]


class CaseNotFound(LookupError):
    pass


class CompensationNotFound(LookupError):
    pass


class NotHandedHere(PermissionError):
    """A back office asked about a case that was not handed to it."""


class AboveAuthority(PermissionError):
    """A supervisor's approval is above the supervisor's own authority."""


class Audit(Protocol):
    async def __call__(self, *, who: str, role: str, what: str, target: str, why: str, allowed: bool,
                       at: float, source: str = "") -> str: ...


CustomerExists = Callable[[str], Awaitable[bool]]


def actor_of_agent(agent: Agent) -> str:
    return f"{'supervisor' if agent.supervisor else 'agent'}:{agent.id}"


case_to_dict = store.case_to_dict
compensation_to_dict = comp.to_dict


class CaseService:
    def __init__(self, redis: aioredis.Redis, keys: Keys, policy: CasePolicy, *,
                 customer_exists: CustomerExists | None = None, audit: Audit | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.keys = keys
        self.policy = policy
        self.customer_exists = customer_exists
        self.audit = audit
        self.clock = clock

    def _now(self) -> float:
        return round(self.clock(), 6)  # microseconds, as PostgreSQL keeps times

    # ---- reading -----------------------------------------------------------------------------
    async def get(self, case_id: str) -> Case | None:
        return await store.get_case(self.redis, self.keys, case_id)

    async def events(self, case_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
        return await store.case_events(self.redis, self.keys, case_id, limit=limit)

    async def overdue(self, *, limit: int = 200) -> list[Case]:
        return await store.overdue_cases(self.redis, self.keys, now=self.clock(), limit=limit)

    async def handed(self, backoffice: str, *, limit: int = 200) -> list[Case]:
        return await store.handed_cases(self.redis, self.keys, backoffice, limit=limit)

    async def for_backoffice(self, case_id: str, backoffice: str) -> Case:
        """The case if it was handed to `backoffice` and is not closed, else NotHandedHere (the
        same answer for a case that does not exist: a back office learns nothing of other cases)."""
        case = await self.get(case_id)
        if case is None or not rules.may_backoffice_see(case, backoffice):
            raise NotHandedHere(case_id)
        return case

    def is_overdue(self, case: Case) -> bool:
        return rules.is_overdue(case, self.clock())

    # ---- changing ----------------------------------------------------------------------------
    async def _change(self, case_id: str, decide: Callable[[Case, float], Step | None], *, actor: str) -> Case:
        now = self._now()
        try:
            case, _ = await store.change_case(self.redis, self.keys, case_id, lambda c: decide(c, now),
                                              at=now, actor=actor)
        except store.CaseNotFound:
            raise CaseNotFound(case_id) from None
        return case

    async def open(self, fields: Mapping[str, Any], *, actor: str, checklist: Sequence[tuple[str, str]] = (),
                   why: str = "") -> Case:
        """Open a validated case (domain.customer_validation.validate_case_create) with its due
        time by severity and an optional checklist [(text, from)]."""
        if self.customer_exists is not None and not await self.customer_exists(fields["customer_id"]):
            raise CaseRuleError("customer_id", "no customer with this id")
        now = self._now()
        severity = int(fields.get("severity", 3))
        items = rules.new_checklist(checklist)
        return await store.open_case(self.redis, self.keys, now=now, actor=actor, checklist=items, why=why,
                                     due_at=rules.due_at(now, severity, self.policy), **fields)

    async def update(self, case_id: str, fields: Mapping[str, Any], status: str | None, *, actor: str,
                     why: str = "") -> Case:
        """PUT: edits and an optional status (the lifecycle's rules; `open` reopens a done case)."""
        return await self._change(case_id, lambda c, now: rules.update(c, fields, status, why=why, now=now,
                                                                       policy=self.policy), actor=actor)

    async def move(self, case_id: str, status: CaseStatus, *, actor: str, why: str = "") -> Case:
        return await self._change(case_id, lambda c, now: rules.move(c, status, why=why, now=now, policy=self.policy),
                                  actor=actor)

    async def checklist(self, case_id: str, *, add: Sequence[tuple[str, str]] = (), done: Sequence[str] = (),
                        undone: Sequence[str] = (), actor: str, why: str = "") -> Case:
        return await self._change(case_id, lambda c, now: rules.checklist_step(
            c, add=add, done=done, undone=undone, by=actor, why=why, now=now), actor=actor)

    async def hand_off(self, case_id: str, action: str, params: Mapping[str, Any], *, to: str | None, actor: str,
                       why: str = "") -> Case:
        """An agent action (cases.yaml `actions`): the case waits on the action's back office, which
        may now read it and post results; an `action_requested` change goes to the webhooks."""
        return await self._change(case_id, lambda c, now: rules.hand_off(
            c, action, params, to=to, why=why, now=now, policy=self.policy), actor=actor)

    async def backoffice_result(self, case_id: str, backoffice: str, result: str, *, resolve: bool,
                                done: Sequence[str] = ()) -> Case:
        try:
            return await self._change(case_id, lambda c, now: rules.backoffice_result(
                c, backoffice, result, resolve=resolve, done=done, now=now, policy=self.policy),
                actor=backoffice_actor(backoffice))
        except CaseNotFound:
            raise NotHandedHere(case_id) from None

    async def note_event(self, case_id: str, kind: str, detail: Mapping[str, Any], *, actor: str,
                         why: str = "") -> None:
        """An event on the case without a state change (a notice: kind "notice", detail
        {"notice_id", "outcome", ...}). Raises CaseNotFound."""
        await self._change(case_id, lambda c, now: rules.noted(c, kind, detail, why=why, now=now), actor=actor)

    # ---- compensation ------------------------------------------------------------------------
    async def compensations(self, case_id: str) -> list[Compensation]:
        return await store.case_compensations(self.redis, self.keys, case_id)

    async def requested_compensations(self, *, limit: int = 200) -> list[Compensation]:
        return await store.requested_compensations(self.redis, self.keys, limit=limit)

    async def compensation(self, compensation_id: str) -> Compensation | None:
        return await store.get_compensation(self.redis, self.keys, compensation_id)

    def authority_of(self, agent: Agent) -> dict[str, Any]:
        """What `agent` may grant (for the page): role, currency, per case by severity, per day."""
        policy = self.policy.compensation
        role = comp.role_of(agent.id, agent.supervisor, policy)
        authority = policy.roles.get(role)
        return {"role": role, "currency": policy.currency,
                "per_case": {str(k): v for k, v in sorted((authority.per_case if authority else {}).items())},
                "per_day": authority.per_day if authority else 0}

    async def grant(self, case_id: str, fields: Mapping[str, Any], *, agent: Agent) -> tuple[Compensation, bool]:
        """An agent (or supervisor) grants compensation on a case: within the role's authority it
        is granted, above it it becomes a request for a supervisor. Returns (compensation, created);
        a repeated request with the same `key` returns the first one (created False)."""
        policy = self.policy.compensation
        role = comp.role_of(agent.id, agent.supervisor, policy)
        actor = actor_of_agent(agent)
        now = self._now()
        key = fields.get("key")
        comp_id = comp.compensation_id(case_id, actor, key) if key else "cp-" + uuid.uuid4().hex[:24]
        amount = int(fields["amount_cents"])

        def decide(case: Case, stored: Compensation | None, day_total: int) -> tuple[Compensation, Step] | None:
            if stored is not None:
                return None
            if case.status is CaseStatus.CLOSED:
                raise CompensationError("case", "the case is closed", conflict=True)
            verdict = comp.decide(policy, role, case.severity, amount=amount, case_total=case.compensated_cents,
                                  day_total=day_total)
            state = CompensationState.GRANTED if verdict.granted else CompensationState.REQUESTED
            new = Compensation(id=comp_id, case_id=case.id, customer_id=case.customer_id, amount_cents=amount,
                               currency=policy.currency, reason=str(fields["reason"]), granted_by=actor, state=state,
                               requested_at=now)
            paid = dataclasses.replace(case, compensated_cents=case.compensated_cents + amount,
                                       currency=policy.currency) if verdict.granted else case
            detail = {**comp.to_dict(new), "authority": {"role": role, "case_limit": verdict.case_limit,
                                                          "day_left": verdict.day_left, "why_not": verdict.reason}}
            kind = "compensation_granted" if verdict.granted else "compensation_requested"
            return new, rules.noted(paid, kind, detail, why=new.reason, now=now)

        try:
            result, _, step = await store.write_compensation(
                self.redis, self.keys, case_id=case_id, compensation_id=comp_id, person=agent.id,
                day=comp.day_of(now, policy), decide=decide, at=now, actor=actor)
        except store.CaseNotFound:
            raise CaseNotFound(case_id) from None
        if step is not None:
            await self._audit(agent.id, role, "compensation.granted" if result.state is CompensationState.GRANTED
                              else "compensation.requested", result, allowed=result.state is CompensationState.GRANTED,
                              why=result.reason, at=now)
        return result, step is not None

    async def decide_request(self, compensation_id: str, *, approve: bool, supervisor: Agent,
                             why: str = "") -> Compensation:
        """A supervisor approves (within the supervisor's own authority) or refuses (why required)
        a requested compensation. CompensationNotFound, CompensationError (not requested any more,
        no why), AboveAuthority."""
        stored = await self.compensation(compensation_id)
        if stored is None:
            raise CompensationNotFound(compensation_id)
        if not approve and not why:
            raise CompensationError("why", "required to refuse")
        policy = self.policy.compensation
        actor = actor_of_agent(supervisor)
        role = comp.role_of(supervisor.id, supervisor.supervisor, policy)
        now = self._now()

        def decide(case: Case, current: Compensation | None, day_total: int) -> tuple[Compensation, Step] | None:
            if current is None:
                raise CompensationNotFound(compensation_id)
            if current.state is not CompensationState.REQUESTED:
                raise CompensationError("state", f"already {current.state.value}", conflict=True)
            decided = dataclasses.replace(current, approved_by=actor, decided_at=now, decision_why=why,
                                          state=CompensationState.APPROVED if approve else CompensationState.REFUSED)
            paid = case
            if approve:
                verdict = comp.decide(policy, role, case.severity, amount=current.amount_cents,
                                      case_total=case.compensated_cents, day_total=day_total)
                if not verdict.granted:
                    raise AboveAuthority(verdict.reason)
                paid = dataclasses.replace(case, compensated_cents=case.compensated_cents + current.amount_cents,
                                           currency=current.currency)
            kind = "compensation_approved" if approve else "compensation_refused"
            return decided, rules.noted(paid, kind, comp.to_dict(decided), why=why or current.reason, now=now)

        try:
            result, _, _ = await store.write_compensation(
                self.redis, self.keys, case_id=stored.case_id, compensation_id=compensation_id, person=supervisor.id,
                day=comp.day_of(now, policy), decide=decide, at=now, actor=actor)
        except store.CaseNotFound:
            raise CompensationNotFound(compensation_id) from None
        await self._audit(supervisor.id, role, "compensation.approved" if approve else "compensation.refused", result,
                          allowed=approve, why=why, at=now)
        return result

    async def _audit(self, who: str, role: str, what: str, c: Compensation, *, allowed: bool, why: str,
                     at: float) -> None:
        if self.audit is None:
            return
        text = f"{c.amount_cents} {c.currency} {c.id}: {why}"
        try:
            await self.audit(who=who, role=role, what=what, target=f"case:{c.case_id}", why=text, allowed=allowed,
                             at=at)
        except Exception as exc:  # the grant is written (and on the case's events): say so loudly
            log.error("compensation %s: audit entry not written: %s", c.id, type(exc).__name__)
