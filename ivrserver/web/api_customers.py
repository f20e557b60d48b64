"""REST: customers, their history, cases and contact notes under /api/v1.

    GET    /api/v1/customers?offset=0&limit=50     page of customers (ordered by id) + total
    POST   /api/v1/customers                       create (id optional: generated) → 201
    GET    /api/v1/customers/{id}                  one customer (the PIN only as has_pin)
    PUT    /api/v1/customers/{id}                  replace the profile; without `pin` the PIN is kept,
                                                   `pin: null` removes it
    DELETE /api/v1/customers/{id}                  delete with contacts and cases → 204
    GET    /api/v1/customers/{id}/history?limit=50 contacts (newest first), open and all cases
    POST   /api/v1/cases                           open a case → 201
    GET    /api/v1/cases/{id}                      one case
    PUT    /api/v1/cases/{id}                      change summary, still_needed, next_step,
                                                   owner_agent, severity, status (given fields only)
    PUT    /api/v1/contacts/{id}                   set disposition / notes of a contact record

Bad input is a 400 with `{"error": ..., "errors": [{"field": ..., "message": ...}]}`; a missing
resource 404; a conflict (id or account number taken) 409; Redis unreachable 503.
Authorization is delegated: `authorize(request, customer_id, purpose)` is awaited before every
access and raises web.HTTPForbidden to refuse (customer_id is None for listing and creation).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from ivrserver.domain import customer_validation as cv
from ivrserver.domain.customer_validation import FieldError
from ivrserver.domain.hashing import Pepper
from ivrserver.store import customers as store
from ivrserver.store import history
from ivrserver.store.keys import Keys
from ivrserver.web import bodies

log = logging.getLogger(__name__)

Authorize = Callable[[web.Request, str | None, str], Awaitable[None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_PAGE = 500
CASE_ID_RE = re.compile(r"[1-9][0-9]{0,18}")
CONTACT_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


async def allow_all(request: web.Request, customer_id: str | None, purpose: str) -> None:
    """The default authorization hook: denies nothing."""
    return None


def _json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers,
                             dumps=functools.partial(json.dumps, ensure_ascii=False))


def _error(exc_type: type[web.HTTPException], message: str, errors: list[FieldError] | None = None,
           ) -> web.HTTPException:
    body: dict[str, Any] = {"error": message}
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    return exc_type(text=json.dumps(body, ensure_ascii=False), content_type="application/json")


def _invalid(errors: list[FieldError]) -> web.HTTPException:
    return _error(web.HTTPBadRequest, "invalid request", errors)


def _not_found(what: str) -> web.HTTPException:
    return _error(web.HTTPNotFound, f"no such {what}")


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise _invalid([FieldError("body", "a JSON object is required")])
    try:
        return bodies.parse_json(raw)
    except bodies.BodyError as exc:
        raise _invalid([FieldError("body", str(exc))]) from None


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not lo <= int(raw) <= hi:
        raise _invalid([FieldError(name, f"must be a whole number {lo}-{hi}")])
    return int(raw)


def _customer_id(request: web.Request) -> str:
    cid = request.match_info["id"]
    if not cv.ID_RE.fullmatch(cid):
        raise _not_found("customer")
    return cid


def _guard(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except RedisError as exc:
            log.error("%s %s: store unavailable: %s", request.method, request.path, exc)
            raise _error(web.HTTPServiceUnavailable, "customer store unavailable") from None
    return wrapped


def routes(redis: aioredis.Redis, keys: Keys, authorize: Authorize = allow_all, *, default_country: str = "",
           retention_days: int = history.DEFAULT_RETENTION_DAYS,
           clock: Callable[[], float] = time.time, pepper: Pepper | None = None) -> list[web.RouteDef]:
    """The customer, history and case routes, bound to a Redis client and key layout. `pepper`
    keys PIN hashes (without it a body with a clear `pin` is refused)."""

    async def _validated_customer(request: web.Request, *, id_required: bool) -> cv.ValidCustomer:
        data = await _body(request)
        result, errors = cv.validate_customer(data, default_country=default_country, id_required=id_required)
        if result is None:
            raise _invalid(errors)
        return result

    async def _stored(item: cv.ValidCustomer) -> Any:
        if item.pin is None:
            return item.customer
        if pepper is None:
            raise _error(web.HTTPServiceUnavailable, "PINs cannot be set: no pepper configured", [])
        return await asyncio.to_thread(item.to_customer, os.urandom(16), pepper)

    async def _save(customer: Any, mode: Any) -> None:
        try:
            await store.save_customer(redis, keys, customer, mode=mode)
        except store.AccountInUse as exc:
            raise _error(web.HTTPConflict, "account number in use", [
                FieldError("account_number", f"already belongs to customer {exc.owner}")]) from None
        except store.CustomerExists:
            raise _error(web.HTTPConflict, "customer exists", [
                FieldError("id", "a customer with this id already exists")]) from None
        except store.CustomerNotFound:
            raise _not_found("customer") from None

    @_guard
    async def list_customers(request: web.Request) -> web.Response:
        offset = _int_param(request, "offset", 0, 0, 10**9)
        limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
        await authorize(request, None, "customer.list")
        items, total = await store.list_customers(redis, keys, offset=offset, limit=limit)
        return _json_response({"items": [cv.customer_to_dict(c) for c in items], "total": total,
                               "offset": offset, "limit": limit})

    @_guard
    async def create_customer(request: web.Request) -> web.Response:
        await authorize(request, None, "customer.create")
        item = await _validated_customer(request, id_required=False)
        if not item.customer.id:
            item = dataclasses.replace(item, customer=dataclasses.replace(item.customer, id=uuid.uuid4().hex[:12]))
        customer = await _stored(item)
        await _save(customer, "create")
        return _json_response(cv.customer_to_dict(customer), status=201,
                              headers={"Location": f"/api/v1/customers/{customer.id}"})

    @_guard
    async def get_customer(request: web.Request) -> web.Response:
        cid = _customer_id(request)
        await authorize(request, cid, "customer.read")
        customer = await store.get_customer(redis, keys, cid)
        if customer is None:
            raise _not_found("customer")
        return _json_response(cv.customer_to_dict(customer))

    @_guard
    async def update_customer(request: web.Request) -> web.Response:
        cid = _customer_id(request)
        await authorize(request, cid, "customer.update")
        data = await _body(request)
        if isinstance(data, dict):
            if "id" in data and data["id"] != cid:
                raise _invalid([FieldError("id", "must match the id in the URL (ids cannot change)")])
            data = {**data, "id": cid}
        result, errors = cv.validate_customer(data, default_country=default_country)
        if result is None:
            raise _invalid(errors)
        existing = await store.get_customer(redis, keys, cid)
        if existing is None:
            raise _not_found("customer")
        customer = await _stored(result)
        if not result.pin_given and customer.account_number:
            customer = dataclasses.replace(customer, pin_hash=existing.pin_hash)
        await _save(customer, "update")
        return _json_response(cv.customer_to_dict(customer))

    @_guard
    async def delete_customer(request: web.Request) -> web.Response:
        cid = _customer_id(request)
        await authorize(request, cid, "customer.delete")
        if not await store.delete_customer(redis, keys, cid):
            raise _not_found("customer")
        return web.Response(status=204)

    @_guard
    async def customer_history(request: web.Request) -> web.Response:
        cid = _customer_id(request)
        limit = _int_param(request, "limit", 50, 1, history.MAX_TIMELINE_LIMIT)
        await authorize(request, cid, "history.read")
        if await store.get_customer(redis, keys, cid) is None:
            raise _not_found("customer")
        contacts = await history.list_timeline(redis, keys, cid, limit=limit, now=clock(),
                                               retention_days=retention_days)
        cases = await history.list_cases(redis, keys, cid)
        return _json_response({
            "customer_id": cid,
            "contacts": [history.contact_to_dict(c) for c in contacts],
            "open_cases": [history.case_to_dict(c) for c in cases if c.status.value == "open"],
            "cases": [history.case_to_dict(c) for c in cases],
        })

    @_guard
    async def create_case(request: web.Request) -> web.Response:
        fields, errors = cv.validate_case_create(await _body(request))
        if fields is None:
            raise _invalid(errors)
        await authorize(request, fields["customer_id"], "case.create")
        if await store.get_customer(redis, keys, fields["customer_id"]) is None:
            raise _invalid([FieldError("customer_id", "no customer with this id")])
        case = await history.open_case(redis, keys, now=clock(), **fields)
        return _json_response(history.case_to_dict(case), status=201,
                              headers={"Location": f"/api/v1/cases/{case.id}"})

    async def _case(request: web.Request, purpose: str) -> Any:
        case_id = request.match_info["id"]
        if not CASE_ID_RE.fullmatch(case_id):
            raise _not_found("case")
        case = await history.get_case(redis, keys, case_id)
        if case is None:
            raise _not_found("case")
        await authorize(request, case.customer_id, purpose)
        return case

    @_guard
    async def get_case(request: web.Request) -> web.Response:
        case = await _case(request, "case.read")
        return _json_response(history.case_to_dict(case))

    @_guard
    async def update_case(request: web.Request) -> web.Response:
        changes, errors = cv.validate_case_update(await _body(request))
        if changes is None:
            raise _invalid(errors)
        case = await _case(request, "case.update")
        try:
            updated = await history.update_case(redis, keys, case.id, changes)
        except history.CaseNotFound:
            raise _not_found("case") from None
        return _json_response(history.case_to_dict(updated))

    @_guard
    async def update_contact(request: web.Request) -> web.Response:
        contact_id = request.match_info["id"]
        if not CONTACT_ID_RE.fullmatch(contact_id):
            raise _not_found("contact")
        changes, errors = cv.validate_contact_update(await _body(request))
        if changes is None:
            raise _invalid(errors)
        contact = await history.get_contact(redis, keys, contact_id)
        if contact is None:
            raise _not_found("contact")
        await authorize(request, contact.customer_id, "contact.update")
        updated = await history.update_contact_notes(redis, keys, contact_id, changes, now=clock(),
                                                     retention_days=retention_days)
        if updated is None:
            raise _not_found("contact")
        return _json_response(history.contact_to_dict(updated))

    return [
        web.get("/api/v1/customers", list_customers),
        web.post("/api/v1/customers", create_customer),
        web.get("/api/v1/customers/{id}", get_customer),
        web.put("/api/v1/customers/{id}", update_customer),
        web.delete("/api/v1/customers/{id}", delete_customer),
        web.get("/api/v1/customers/{id}/history", customer_history),
        web.post("/api/v1/cases", create_case),
        web.get("/api/v1/cases/{id}", get_case),
        web.put("/api/v1/cases/{id}", update_case),
        web.put("/api/v1/contacts/{id}", update_contact),
    ]
