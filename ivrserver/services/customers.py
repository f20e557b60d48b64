"""Customers, identification by account + PIN, cases and contact notes: the use cases `web/` and
`commands/` call (they never touch `store/`).

Rules that live here (and nowhere in an adapter):
- An update without a PIN keeps the stored PIN hash (`pin: null` removes it); an import row
  without a PIN keeps the stored one when the account number did not change.
- A PIN is hashed with the server's pepper, in a thread, never on the event loop; without a
  pepper a clear PIN is refused (`PinsDisabled`).
- Contact notes: one validation (`domain.contact_notes`) and one path (`save_note`) for both
  `PUT /api/v1/contacts/{id}` and the agent desktop's write-back; a case changed with a note must
  belong to the contact's customer.
- Identification by account + PIN: the lockout policy is `domain.identification`; the flow
  (lock check, constant-time verify with a dummy hash for unknown accounts, failure count, hash
  upgrade) is `identify_by_account`; `store.customers` only reads and writes.
- Who changed a case (`actor`, on its `case_event` record with a system of record): the caller
  says — an agent's id (web), `backoffice:<name>` (a back-office token), `import` (the CLI import),
  `system` (the server itself: the IVR, anything without a person behind it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ivrserver.config import RedisSettings
from ivrserver.domain import cases as case_rules
from ivrserver.domain import identification, phone
from ivrserver.domain.cases import CasePolicy
from ivrserver.domain.contact_notes import NoteChange, fault_service
from ivrserver.domain.customer_validation import ValidCustomer
from ivrserver.domain.hashing import Pepper
from ivrserver.domain.identification import Locked, LockoutPolicy
from ivrserver.domain.model import Case, Contact, Customer
from ivrserver.store import cases as case_store
from ivrserver.store import contacts as contact_store
from ivrserver.store import customers as store
from ivrserver.store.client import connect_for_command
from ivrserver.store.keys import Keys

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = contact_store.DEFAULT_RETENTION_DAYS
MAX_TIMELINE_LIMIT = contact_store.MAX_TIMELINE_LIMIT

# the wire form of contacts and cases (REST, `customers show`)
contact_to_dict = contact_store.contact_to_dict
case_to_dict = case_store.case_to_dict

# actors of case changes that are not an agent
SYSTEM = "system"
IMPORT = "import"


def backoffice_actor(name: str) -> str:
    """The actor of a change made with the back-office token `name`."""
    return f"backoffice:{name}"


class AccountInUse(Exception):
    def __init__(self, owner: str) -> None:
        super().__init__(f"account number already belongs to customer {owner}")
        self.owner = owner


class CustomerExists(Exception):
    pass


class CustomerNotFound(LookupError):
    pass


class CaseNotFound(LookupError):
    pass


class PinsDisabled(Exception):
    """A clear PIN was given but no pepper is configured to hash it."""


class FaultComplaints(Protocol):
    """The part of services/incidents.IncidentService a fault disposition uses."""

    def fault_services(self) -> tuple[str, ...]: ...

    async def count_disposition(self, contact_id: str, service: str, *, number: str, customer_id: str | None,
                                attributes: Mapping[str, str] | None, started_at: float,
                                now: float | None = None) -> bool: ...


class NoteRejected(ValueError):
    """The note is inconsistent (e.g. the case is another customer's)."""


class ContactArchive(Protocol):
    """The system of record's contacts (record/reads.RecordArchive)."""

    async def contacts_before(self, customer_id: str, until: float | None, limit: int) -> list[Contact] | None: ...


@dataclass(frozen=True)
class Timeline:
    contacts: list[Contact]
    cases: list[Case]
    # where the contacts come from: "redis" (no system of record: Redis keeps everything it
    # keeps), "record" (Redis's hot window, then PostgreSQL beyond it), "redis only" (PostgreSQL
    # did not answer: older contacts may be missing)
    source: str = "redis"

    @property
    def open_cases(self) -> list[Case]:
        return [c for c in self.cases if case_rules.is_open(c)]


@dataclass(frozen=True)
class ImportCheck:
    existing: dict[str, Customer]  # stored profiles of the rows' ids
    conflicts: list[tuple[int, str]]  # (row line, owner) for account numbers another customer owns


async def identify_by_account(redis: aioredis.Redis, keys: Keys, account: str, pin: str, now: float, *,
                              pepper: Pepper, policy: LockoutPolicy | None = None) -> Customer | Locked | None:
    """The customer whose account number and PIN match, Locked while the account is locked, else None.

    Wrong PINs and unknown accounts both count towards the lockout and take the same time (a dummy
    hash is verified), so the answer does not tell whether an account exists. The PIN is never
    logged; the account number only masked. A matching hash that is unkeyed or below the current
    cost is replaced by one keyed with `pepper`.
    """
    policy = policy or LockoutPolicy()
    if not identification.is_valid_account_number(account):
        log.info("identification refused: malformed account number")
        return None
    attempts, owner = await store.read_attempts(redis, keys, account)
    until = identification.locked_until(attempts, now)
    if until is not None:
        log.info("identification refused: account %s locked", phone.masked(account))
        return Locked(until)
    customer = await store.get_customer(redis, keys, owner) if owner else None
    stored = customer.pin_hash if customer is not None else None
    matched = await asyncio.to_thread(identification.verify_pin, pin, stored or identification.dummy_hash(pepper),
                                      pepper)
    if matched and customer is not None and stored is not None:
        await store.clear_attempts(redis, keys, account)
        if identification.pin_needs_rehash(stored, pepper):
            new = await asyncio.to_thread(identification.hash_pin, pin, os.urandom(16), pepper)
            if await store.replace_pin_hash(redis, keys, customer.id, stored, new):
                log.info("PIN hash of customer %s upgraded (keyed with the pepper)", customer.id)
        log.info("identified customer %s by account %s", customer.id, phone.masked(account))
        return customer
    updated = await store.update_attempts(redis, keys, account, now, policy,
                                          lambda current: identification.after_failure(current, now, policy))
    locked = identification.locked_until(updated, now)
    if locked is not None:
        log.warning("account %s locked until %.0f after %d wrong PINs", phone.masked(account), locked,
                    policy.max_failures)
        return Locked(locked)
    log.info("identification failed for account %s (%d recent failures)", phone.masked(account),
             len(updated.failures))
    return None


def keep_pin(customer: Customer, given: ValidCustomer, existing: Customer | None, *, same_account: bool) -> Customer:
    """The keep-the-PIN rule: a profile written without `pin` keeps the stored PIN hash.
    `same_account`: only while the account number stays the same (imports)."""
    if given.pin_given or existing is None or not existing.pin_hash or not customer.account_number:
        return customer
    if same_account and existing.account_number != customer.account_number:
        return customer
    return dataclasses.replace(customer, pin_hash=existing.pin_hash)


def import_profile(item: ValidCustomer, existing: Customer | None, pepper: Pepper | None) -> Customer:
    """The profile an import row stores: its PIN hashed with `pepper` (blocking: run in a thread),
    else the stored PIN hash kept while the account number stays the same."""
    if item.pin is not None and pepper is None:
        raise PinsDisabled("PINs cannot be set: no pepper configured")
    customer = item.to_customer(os.urandom(16), pepper) if pepper is not None else item.customer
    return keep_pin(customer, item, existing, same_account=True)


class CustomerService:
    """One per app (or per CLI command): customers, cases, contact notes on one Redis."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, pepper: Pepper | None = None,
                 retention_days: int = DEFAULT_RETENTION_DAYS, clock: Callable[[], float] = time.time,
                 lockout: LockoutPolicy | None = None, case_policy: CasePolicy | None = None) -> None:
        self.case_policy = case_policy or CasePolicy()  # due times of the cases it opens (import)
        self.redis = redis
        self.keys = keys
        self.pepper = pepper
        self.retention_days = retention_days
        self.clock = clock
        self.lockout = lockout or LockoutPolicy()
        # Called with the id after every save (create, update, import upsert); must not block or
        # raise (reminders: ReminderService.customer_changed queues the id).
        self.on_saved: list[Callable[[str], None]] = []
        self.faults: FaultComplaints | None = None  # services/incidents (a fault disposition counts)
        self.archive: ContactArchive | None = None  # the system of record's contacts (postgres.dsn)

    def attach_archive(self, archive: ContactArchive) -> None:
        """The history reads PostgreSQL for what is older than Redis's hot window."""
        self.archive = archive

    def attach_incidents(self, faults: FaultComplaints) -> None:
        """Mass-fault incidents: an agent's `fault:<service>` disposition counts as a complaint."""
        self.faults = faults

    def fault_services(self) -> tuple[str, ...]:
        """The services a `fault:<service>` disposition may name (none without incidents)."""
        return self.faults.fault_services() if self.faults is not None else ()

    # ---- customers --------------------------------------------------------------------------
    async def list(self, *, offset: int, limit: int) -> tuple[list[Customer], int]:
        return await store.list_customers(self.redis, self.keys, offset=offset, limit=limit)

    async def all(self) -> list[Customer]:
        return [c async for c in store.iter_customers(self.redis, self.keys)]

    async def get(self, customer_id: str) -> Customer | None:
        return await store.get_customer(self.redis, self.keys, customer_id)

    async def exists(self, customer_id: str) -> bool:
        return await self.get(customer_id) is not None

    async def _hashed(self, item: ValidCustomer) -> Customer:
        if item.pin is None:
            return item.customer
        if self.pepper is None:
            raise PinsDisabled("PINs cannot be set: no pepper configured")
        return await asyncio.to_thread(item.to_customer, os.urandom(16), self.pepper)

    async def _save(self, customer: Customer, mode: Literal["upsert", "create", "update"]) -> None:
        try:
            await store.save_customer(self.redis, self.keys, customer, mode=mode)
        except store.AccountInUse as exc:
            raise AccountInUse(exc.owner) from None
        except store.CustomerExists:
            raise CustomerExists(customer.id) from None
        except store.CustomerNotFound:
            raise CustomerNotFound(customer.id) from None
        for hook in self.on_saved:
            hook(customer.id)

    async def create(self, item: ValidCustomer) -> Customer:
        """Store a new customer (an id is generated when none is given)."""
        if not item.customer.id:
            item = dataclasses.replace(item, customer=dataclasses.replace(item.customer, id=uuid.uuid4().hex[:12]))
        customer = await self._hashed(item)
        await self._save(customer, "create")
        return customer

    async def update(self, item: ValidCustomer) -> Customer:
        """Replace a customer's profile; without `pin` the stored PIN hash is kept."""
        existing = await self.get(item.customer.id)
        if existing is None:
            raise CustomerNotFound(item.customer.id)
        customer = keep_pin(await self._hashed(item), item, existing, same_account=False)
        await self._save(customer, "update")
        return customer

    async def delete(self, customer_id: str) -> bool:
        return await store.delete_customer(self.redis, self.keys, customer_id)

    async def timeline(self, customer_id: str, *, limit: int = 50, before: float | None = None) -> Timeline | None:
        """Contacts (newest first; with `before`, those that started before it) and cases of a
        customer; None if there is no such customer. Redis holds the hot window; with a system of
        record, what it lacks comes from PostgreSQL (Redis's copy wins: notes added since)."""
        if await self.get(customer_id) is None:
            return None
        contacts = await contact_store.list_timeline(self.redis, self.keys, customer_id, limit=limit,
                                                     now=self.clock(), retention_days=self.retention_days,
                                                     before=before)
        cases = await case_store.list_cases(self.redis, self.keys, customer_id)
        if self.archive is None:
            return Timeline(contacts=contacts, cases=cases)
        if len(contacts) >= limit:
            return Timeline(contacts=contacts, cases=cases, source="record")
        # at or before the oldest Redis gave (ids dedupe a contact on the edge), else before `before`
        until = contacts[-1].started_at if contacts else before
        older = await self.archive.contacts_before(customer_id, until, limit - len(contacts) + 1)
        if older is None:
            return Timeline(contacts=contacts, cases=cases, source="redis only")
        seen = {c.id for c in contacts}
        more = [c for c in older if c.id not in seen and (before is None or c.started_at < before)]
        return Timeline(contacts=(contacts + more)[:limit], cases=cases, source="record")

    async def recent(self, customer_id: str, *, limit: int = 10) -> tuple[list[Case], list[Contact]]:
        """Open cases and the latest contacts (`customers show`)."""
        return (await case_store.list_open_cases(self.redis, self.keys, customer_id),
                await contact_store.list_timeline(self.redis, self.keys, customer_id, limit=limit))

    # ---- bulk import ------------------------------------------------------------------------
    async def check_import(self, rows: list[tuple[int, ValidCustomer]]) -> ImportCheck:
        """Stored profiles of the rows' ids and rows whose account number another customer owns."""
        existing: dict[str, Customer] = {}
        conflicts: list[tuple[int, str]] = []
        for start in range(0, len(rows), 1000):
            chunk = rows[start:start + 1000]
            found = await store.profiles_and_owners(
                self.redis, self.keys, [(item.customer.id, item.customer.account_number) for _, item in chunk])
            for (line, item), (profile, owner) in zip(chunk, found, strict=True):
                if profile is not None:
                    existing[profile.id] = profile
                if owner and owner != item.customer.id:
                    conflicts.append((line, owner))
        return ImportCheck(existing, conflicts)

    async def upsert(self, customer: Customer) -> None:
        await self._save(customer, "upsert")

    async def open_cases_once(self, cases: Iterable[Mapping[str, Any]], *, now: float, actor: str = IMPORT) -> int:
        """Open the cases a customer does not already have open (same summary): re-imports are no-ops."""
        opened = 0
        for fields in cases:
            current = await case_store.list_open_cases(self.redis, self.keys, fields["customer_id"])
            if any(c.summary == fields["summary"] for c in current):
                continue
            await case_store.open_case(self.redis, self.keys, now=now, actor=actor, **fields,
                                       due_at=case_rules.due_at(now, int(fields.get("severity", 3)), self.case_policy))
            opened += 1
        return opened

    # ---- cases ------------------------------------------------------------------------------
    async def open_case(self, fields: Mapping[str, Any], *, actor: str = SYSTEM) -> Case:
        """Open a validated case (`domain.customer_validation.validate_case_create`) on behalf of `actor`."""
        if await self.get(fields["customer_id"]) is None:
            raise CustomerNotFound(fields["customer_id"])
        now = self.clock()
        return await case_store.open_case(self.redis, self.keys, now=now, actor=actor, **fields,
                                          due_at=case_rules.due_at(now, int(fields.get("severity", 3)),
                                                                   self.case_policy))

    async def case(self, case_id: str) -> Case | None:
        return await case_store.get_case(self.redis, self.keys, case_id)

    async def update_case(self, case_id: str, changes: Mapping[str, Any], *, actor: str = SYSTEM,
                          now: float | None = None) -> Case:
        """Apply validated changes on behalf of `actor` (closing, reopening, updating)."""
        try:
            return await case_store.update_case(self.redis, self.keys, case_id, changes,
                                                now=self.clock() if now is None else now, actor=actor)
        except case_store.CaseNotFound:
            raise CaseNotFound(case_id) from None

    # ---- contact notes ----------------------------------------------------------------------
    async def contact(self, contact_id: str) -> Contact | None:
        return await contact_store.get_contact(self.redis, self.keys, contact_id)

    async def save_note(self, contact_id: str, note: NoteChange, *, now: float | None = None,
                        actor: str = SYSTEM) -> Contact | None:
        """Set disposition / notes on a contact record and apply the note's case change (the case
        must belong to the contact's customer, else NoteRejected) on behalf of `actor`. None: no
        such contact."""
        contact = await self.contact(contact_id)
        if contact is None:
            return None
        change = note.case
        case = None
        if change is not None:
            case = await self.case(change.case_id)
            if case is None or case.customer_id != contact.customer_id:
                raise NoteRejected("case is not one of this caller's cases")
        now = self.clock() if now is None else now
        updated = await contact_store.update_contact_notes(
            self.redis, self.keys, contact_id, note.fields, now=now, retention_days=self.retention_days)
        if updated is None:
            return None
        fault = fault_service(note.fields.get("disposition") or "")
        if fault is not None and self.faults is not None:
            await self._count_fault(updated, fault, now)
        if change is not None:
            changes: dict[str, Any] = {}
            # "open" on a resolved or closed case reopens it (in_progress), else changes nothing
            status = None if change.status is None or case is None else case_rules.requested_status(
                case.status, change.status)
            if status is not None and case is not None and status is not case.status:
                changes["status"] = status
            if change.next_step is not None:
                changes["next_step"] = change.next_step
            if change.still_needed is not None:
                changes["still_needed"] = change.still_needed
            if changes:
                await self.update_case(change.case_id, changes, actor=actor, now=now)
        return updated

    async def _count_fault(self, contact: Contact, service: str, now: float) -> None:
        """A fault disposition: one complaint for (service, the caller's area), once per contact
        (services/incidents). A failure to count never fails the note."""
        assert self.faults is not None
        try:
            customer = await self.get(contact.customer_id) if contact.customer_id else None
            await self.faults.count_disposition(
                contact.id, service, number=contact.number, customer_id=contact.customer_id,
                attributes=customer.attributes if customer is not None else None, started_at=contact.started_at,
                now=now)
        except (RedisError, OSError) as exc:
            log.warning("fault disposition not counted", extra={"contact": contact.id, "error": str(exc)})

    # ---- identification ---------------------------------------------------------------------
    async def identify(self, account: str, pin: str) -> Customer | Locked | None:
        """Identification by account + PIN (see `identify_by_account`); None without a pepper."""
        if self.pepper is None:
            log.warning("identification refused: no pepper configured for PIN hashes")
            return None
        return await identify_by_account(self.redis, self.keys, account, pin, self.clock(), pepper=self.pepper,
                                         policy=self.lockout)


@asynccontextmanager
async def for_command(settings: RedisSettings, url: str | None = None, *, pepper: Pepper | None = None,
                      records: bool = False) -> AsyncIterator[CustomerService]:
    """A CustomerService on its own Redis connection, for one CLI command (closed on exit).
    `records`: a system of record is configured (postgres.dsn): writes also go to the outbox, as the
    server's do (the server's sink moves them to PostgreSQL)."""
    client = connect_for_command(settings, url, decode_responses=True)
    try:
        yield CustomerService(client, Keys(prefix=settings.prefix, records=records), pepper=pepper)
    finally:
        await client.aclose()
