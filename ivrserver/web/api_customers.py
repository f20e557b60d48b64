"""REST: customers, their history and contact notes under /api/v1 (cases: web/api_cases.py).

    GET    /api/v1/customers?offset=0&limit=50     page of customers (ordered by id) + total
    POST   /api/v1/customers                       create (id optional: generated) → 201
    GET    /api/v1/customers/{id}                  one customer (the PIN only as has_pin)
    PUT    /api/v1/customers/{id}                  replace the profile; without `pin` the PIN is kept,
                                                   `pin: null` removes it
    DELETE /api/v1/customers/{id}                  delete with contacts and cases → 204
    GET    /api/v1/customers/{id}/history?limit=50&before=<epoch>  contacts (newest first; Redis's hot
                                                   window, then PostgreSQL), open and all cases
    PUT    /api/v1/contacts/{id}                   set disposition / notes of a contact record (the rule
                                                   of domain/contact_notes.py, as the agent write-back)

Bad input is a 400 with `{"error": ..., "errors": [{"field": ..., "message": ...}]}`; a missing
resource 404; a conflict (id or account number taken) 409; Redis unreachable 503.
Authorization is delegated: `authorize(request, customer_id, purpose)` is awaited before every
access and raises web.HTTPForbidden to refuse (customer_id is None for listing and creation).
Changes of cases are made on behalf of the request's agent (`agent:<id>` / `supervisor:<id>`), or
of its back-office token (`backoffice:<name>`); routes built without an authorization hook and
without either act as `api`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from ivrserver.domain import contact_notes
from ivrserver.domain import customer_validation as cv
from ivrserver.domain.customer_validation import FieldError
from ivrserver.domain.model import Customer
from ivrserver.services import customers
from ivrserver.services.cases import actor_of_agent
from ivrserver.services.customers import CustomerService
from ivrserver.web import rest
from ivrserver.web.auth import AGENT
from ivrserver.web.backoffice import BACKOFFICE
from ivrserver.web.rest import allow_all

log = logging.getLogger(__name__)

Authorize = Callable[[web.Request, str | None, str], Awaitable[None]]

MAX_PAGE = 500
CONTACT_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_guard = rest.store_errors("customer store")


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not lo <= int(raw) <= hi:
        raise rest.invalid([FieldError(name, f"must be a whole number {lo}-{hi}")])
    return int(raw)


def _epoch_param(request: web.Request, name: str) -> float | None:
    """Epoch seconds (a contact's started_at, as `next_before` gives it); None when absent."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw) if raw.isascii() and len(raw) <= 32 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value < 4_102_444_800:
        raise rest.invalid([FieldError(name, "must be epoch seconds (a contact's started_at)")])
    return value


def _customer_id(request: web.Request) -> str:
    cid = request.match_info["id"]
    if not cv.ID_RE.fullmatch(cid):
        raise rest.not_found("customer")
    return cid


def actor_of(request: web.Request) -> str:
    """Who makes this change (the case event's actor): read after `authorize` resolved the agent."""
    agent = request.get(AGENT)
    if agent is not None:
        return actor_of_agent(agent)
    name = request.get(BACKOFFICE)
    if name is not None:
        return customers.backoffice_actor(name)
    return "api"


class CustomerRoutes:
    """The handlers, one method each (the route table: `routes`)."""

    def __init__(self, service: CustomerService, authorize: Authorize, default_country: str) -> None:
        self.service = service
        self.authorize = authorize
        self.default_country = default_country

    async def _validated_customer(self, request: web.Request, *, id_required: bool) -> cv.ValidCustomer:
        data = await rest.read_body(request)
        result, errors = cv.validate_customer(data, default_country=self.default_country, id_required=id_required)
        if result is None:
            raise rest.invalid(errors)
        return result

    async def _saved(self, write: Awaitable[Customer]) -> Customer:
        try:
            return await write
        except customers.PinsDisabled:
            raise rest.error(web.HTTPServiceUnavailable, "PINs cannot be set: no pepper configured", []) from None
        except customers.AccountInUse as exc:
            raise rest.error(web.HTTPConflict, "account number in use", [
                FieldError("account_number", f"already belongs to customer {exc.owner}")]) from None
        except customers.CustomerExists:
            raise rest.error(web.HTTPConflict, "customer exists", [
                FieldError("id", "a customer with this id already exists")]) from None
        except customers.CustomerNotFound:
            raise rest.not_found("customer") from None

    async def list_customers(self, request: web.Request) -> web.Response:
        offset = _int_param(request, "offset", 0, 0, 10**9)
        limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
        await self.authorize(request, None, "customer.list")
        items, total = await self.service.list(offset=offset, limit=limit)
        return rest.reply({"items": [cv.customer_to_dict(c) for c in items], "total": total,
                           "offset": offset, "limit": limit})

    async def create_customer(self, request: web.Request) -> web.Response:
        await self.authorize(request, None, "customer.create")
        item = await self._validated_customer(request, id_required=False)
        customer = await self._saved(self.service.create(item))
        return rest.reply(cv.customer_to_dict(customer), status=201,
                          headers={"Location": f"/api/v1/customers/{customer.id}"})

    async def get_customer(self, request: web.Request) -> web.Response:
        cid = _customer_id(request)
        await self.authorize(request, cid, "customer.read")
        customer = await self.service.get(cid)
        if customer is None:
            raise rest.not_found("customer")
        return rest.reply(cv.customer_to_dict(customer))

    async def update_customer(self, request: web.Request) -> web.Response:
        cid = _customer_id(request)
        await self.authorize(request, cid, "customer.update")
        data = await rest.read_body(request)
        if isinstance(data, dict):
            if "id" in data and data["id"] != cid:
                raise rest.invalid([FieldError("id", "must match the id in the URL (ids cannot change)")])
            data = {**data, "id": cid}
        result, errors = cv.validate_customer(data, default_country=self.default_country)
        if result is None:
            raise rest.invalid(errors)
        customer = await self._saved(self.service.update(result))
        return rest.reply(cv.customer_to_dict(customer))

    async def delete_customer(self, request: web.Request) -> web.Response:
        cid = _customer_id(request)
        await self.authorize(request, cid, "customer.delete")
        if not await self.service.delete(cid):
            raise rest.not_found("customer")
        return web.Response(status=204)

    async def customer_history(self, request: web.Request) -> web.Response:
        cid = _customer_id(request)
        limit = _int_param(request, "limit", 50, 1, customers.MAX_TIMELINE_LIMIT)
        before = _epoch_param(request, "before")
        await self.authorize(request, cid, "history.read")
        timeline = await self.service.timeline(cid, limit=limit, before=before)
        if timeline is None:
            raise rest.not_found("customer")
        contacts = timeline.contacts
        return rest.reply({
            "customer_id": cid,
            "contacts": [customers.contact_to_dict(c) for c in contacts],
            "open_cases": [customers.case_to_dict(c) for c in timeline.open_cases],
            "cases": [customers.case_to_dict(c) for c in timeline.cases],
            "source": timeline.source,
            # a full page: the next one is ?before=<this>
            "next_before": contacts[-1].started_at if len(contacts) >= limit else None,
        })

    async def update_contact(self, request: web.Request) -> web.Response:
        contact_id = request.match_info["id"]
        if not CONTACT_ID_RE.fullmatch(contact_id):
            raise rest.not_found("contact")
        note, errors = contact_notes.validate(await rest.read_body(request), write_back=False,
                                              fault_services=self.service.fault_services())
        if note is None:
            raise rest.invalid(errors)
        contact = await self.service.contact(contact_id)
        if contact is None:
            raise rest.not_found("contact")
        await self.authorize(request, contact.customer_id, "contact.update")
        updated = await self.service.save_note(contact_id, note, actor=actor_of(request))
        if updated is None:
            raise rest.not_found("contact")
        return rest.reply(customers.contact_to_dict(updated))


def routes(service: CustomerService, authorize: Authorize = allow_all, *,
           default_country: str = "") -> list[web.RouteDef]:
    """The customer, history and contact routes over a CustomerService (its pepper keys PIN hashes:
    without one a body with a clear `pin` is refused)."""
    h = CustomerRoutes(service, authorize, default_country)
    return [
        web.get("/api/v1/customers", _guard(h.list_customers)),
        web.post("/api/v1/customers", _guard(h.create_customer)),
        web.get("/api/v1/customers/{id}", _guard(h.get_customer)),
        web.put("/api/v1/customers/{id}", _guard(h.update_customer)),
        web.delete("/api/v1/customers/{id}", _guard(h.delete_customer)),
        web.get("/api/v1/customers/{id}/history", _guard(h.customer_history)),
        web.put("/api/v1/contacts/{id}", _guard(h.update_contact)),
    ]
