"""The JSON replies and request bodies of the customer and case routes (web/api_customers.py,
web/api_cases.py): one shape of error for both.

Bad input: 400 `{"error": "invalid request", "errors": [{"field", "message"}]}`; any other
refusal `{"error": message}` with its status; Redis unreachable 503 (`store_errors`).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from ivrserver.domain.customer_validation import FieldError
from ivrserver.web import bodies

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Problems = Sequence[FieldError | tuple[str, str]]


async def allow_all(request: web.Request, customer_id: str | None, purpose: str) -> None:
    """The default authorization hook: denies nothing."""
    return None


def reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers,
                             dumps=functools.partial(json.dumps, ensure_ascii=False))


def error(exc_type: type[web.HTTPException], message: str, errors: Problems | None = None) -> web.HTTPException:
    body: dict[str, Any] = {"error": message}
    if errors:
        pairs = [(e.field, e.message) if isinstance(e, FieldError) else e for e in errors]
        body["errors"] = [{"field": f, "message": m} for f, m in pairs]
    return exc_type(text=json.dumps(body, ensure_ascii=False), content_type="application/json")


def invalid(errors: Problems) -> web.HTTPException:
    return error(web.HTTPBadRequest, "invalid request", errors)


def not_found(what: str) -> web.HTTPException:
    return error(web.HTTPNotFound, f"no such {what}")


async def read_body(request: web.Request, *, optional: bool = False) -> Any:
    """The request's JSON body (any JSON value; the caller checks its shape). Empty: a 400, or
    None when `optional`."""
    raw = await request.read()
    if not raw:
        if optional:
            return None
        raise invalid([("body", "a JSON object is required")])
    try:
        return bodies.parse_json(raw)
    except bodies.BodyError as exc:
        raise invalid([("body", str(exc))]) from None


def store_errors(what: str) -> Callable[[Handler], Handler]:
    """A handler whose store (Redis) is unreachable answers 503 "`what` unavailable"."""
    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except RedisError as exc:
                log.error("%s %s: store unavailable: %s", request.method, request.path, type(exc).__name__)
                raise error(web.HTTPServiceUnavailable, f"{what} unavailable") from None
        return wrapped
    return decorate
