"""The privacy gate as a use case: who may read or change a customer's record, audited.

The decision is pure (`domain.privacy`); this service reads the agent's live grants
(`store.grants`), writes every decision to the audit log (`store.audit`) and serves the audit
log to supervisors. `web/` calls it; it never reads Redis itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from ivrserver.domain import privacy
from ivrserver.domain.model import Agent, AuditEntry
from ivrserver.store.audit import AuditLog
from ivrserver.store.grants import AccessGrants, check_agent_id


def valid_agent_id(agent_id: object) -> bool:
    """True for an agent id as the stores accept them (logins with anything else fail early)."""
    try:
        check_agent_id(agent_id)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


class AuditArchive(Protocol):
    """The system of record's audit table (record/reads.RecordArchive)."""

    async def audit_before(self, before: str | None, count: int) -> list[AuditEntry] | None: ...


@dataclass(frozen=True)
class AuditPage:
    entries: list[dict[str, Any]]  # newest first
    # "redis" (no system of record), "record" (Redis's hot window, then PostgreSQL), "redis only"
    # (PostgreSQL did not answer: older entries may be missing)
    source: str


class PrivacyService:
    def __init__(self, grants: AccessGrants, audit: AuditLog, *, clock: Callable[[], float] = time.time) -> None:
        self.grants = grants
        self.audit = audit
        self.clock = clock
        self.archive: AuditArchive | None = None  # the audit table (postgres.dsn)

    async def may_access(self, agent: Agent, customer_id: str | None, purpose: str, *, reason: str = "",
                         source: str = "") -> bool:
        """The privacy gate (`domain.privacy.decide`); every decision is audited: who, what
        (purpose), target, why (the caller's stated reason, else the basis of the decision), when."""
        now = self.clock()
        has_grant = privacy.needs_grant_lookup(supervisor=agent.supervisor, customer_id=customer_id,
                                               purpose=purpose) \
            and await self.grants.has_access(agent.id, customer_id or "", now=now)
        decision = privacy.decide(supervisor=agent.supervisor, customer_id=customer_id, purpose=purpose,
                                  has_grant=has_grant)
        await self.audit.append(who=agent.id, role=privacy.role(agent.supervisor), what=purpose,
                                target=customer_id or "*", why=privacy.audit_why(reason, decision.basis),
                                allowed=decision.allowed, at=now, source=source)
        return decision.allowed

    async def may_write_contact(self, agent: Agent, contact_id: str, *, source: str = "") -> bool:
        """May the agent write back notes on this contact (supervisors, or the agent whose pop
        granted it)? Audited as `contact.notes`."""
        now = self.clock()
        allowed = agent.supervisor or await self.grants.has_access(agent.id, privacy.contact_grant(contact_id),
                                                                   now=now)
        await self.audit.append(who=agent.id, role=privacy.role(agent.supervisor), what="contact.notes",
                                target=contact_id, why="write-back after call", allowed=allowed, at=now,
                                source=source)
        return allowed

    async def granted(self, agent_id: str) -> set[str]:
        """Every live grant of the agent (customer ids and contact grants)."""
        return set(await self.grants.grants(agent_id, now=self.clock()))

    async def customers_of(self, agent_id: str) -> list[str]:
        """The customers the agent may read now, sorted."""
        return privacy.granted_customers(await self.granted(agent_id))

    def attach_archive(self, archive: AuditArchive) -> None:
        """The audit log reads PostgreSQL for what is older than Redis's hot window."""
        self.archive = archive

    async def read_audit(self, supervisor: Agent, *, count: int, before: str | None,
                         source: str = "") -> AuditPage:
        """A page of the audit log, newest first: Redis's stream, then (with a system of record)
        PostgreSQL's entries older than its oldest. The read itself is audited."""
        entries = await self.audit.recent(count=count, before=before)
        where = "redis"
        if self.archive is not None:
            where = "record"
            if len(entries) < count:
                older = await self.archive.audit_before(entries[-1].id if entries else before, count - len(entries))
                if older is None:
                    where = "redis only"
                else:
                    seen = {e.id for e in entries}
                    entries = entries + [e for e in older if e.id not in seen]
        await self.audit.append(who=supervisor.id, role="supervisor", what="audit.read", target="audit",
                                why="supervisor review", allowed=True, at=self.clock(), source=source)
        return AuditPage([asdict(e) for e in entries], where)
