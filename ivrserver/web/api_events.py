"""REST for a customer's events: POST /api/v1/customers/{id}/events (issue 18 §4, reminders).

```
POST /api/v1/customers/c-vip-1/events
{"event": "roaming_started", "id": "roam-2027-01-10-8841", "at": "2027-01-10T08:00:00+08:00"}
→ 202 {"customer_id": "c-vip-1", "event": "roaming_started", "id": "roam-…",
       "reminders": [{"rule": "roaming_welcome", "key": "reminder:roaming_welcome:c-vip-1:roam-…",
                      "status": "sms_sent", "notice_id": "…", "not_before": 1799…}]}
```

Who: a back-office token with the scope `events` (web/backoffice.py), or a supervisor's session.
Body: `event` (a name the reminders rules know), `id` (the event's own id, 1-128 of
[A-Za-z0-9._:-]: the same id never fires a rule twice), `at` (when it happened: epoch seconds or
ISO 8601 with an offset, not more than 5 minutes ahead; default now). Each rule for the event
answers scheduled / deferred / sms_sent (the notice service's status), existing (this id fired
before), refused (with the notice service's reason: no_consent, do_not_call …) or skipped (past:
too old for the rule).

Errors: 400 {"errors": {field: message}}, 401 {"error": "login required"}, 403 {"error": …} (an
agent, or a token without the scope), 404 {"error": "no such customer"}, 422 {"error": "unknown
event", "known": [names]}.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ivrserver.domain import reminders as rm
from ivrserver.domain.callbacks import parse_time
from ivrserver.domain.customer_validation import ID_RE
from ivrserver.services.reminders import NoSuchCustomer, ReminderService, UnknownEvent
from ivrserver.web import bodies
from ivrserver.web.auth import AGENT
from ivrserver.web.backoffice import BACKOFFICE, has_scope

log = logging.getLogger("ivrserver.web.events")

PATH = "/api/v1/customers/{id}/events"
SCOPE = "events"
FIELDS = ("event", "id", "at")
MAX_AHEAD = 300.0  # an event may be stamped at most this far ahead of our clock


def _json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _who(request: web.Request) -> tuple[str, str] | web.Response:
    """(who, role): (token name, backoffice) or (agent id, supervisor); else the error response."""
    name = request.get(BACKOFFICE)
    if name is not None:
        return (name, "backoffice") if has_scope(request, SCOPE) else _json_error(403, "token lacks the scope events")
    agent = request.get(AGENT)
    if agent is None:
        return _json_error(401, "login required")
    if not agent.supervisor:
        return _json_error(403, "supervisors and back-office systems only")
    return agent.id, "supervisor"


def parse_event(body: object, now: float) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """(event, id, at) from the body, or the errors by field."""
    if not isinstance(body, dict):
        return None, {"body": "expected a JSON object"}
    errors: dict[str, str] = {}
    unknown = sorted(str(k)[:40] for k in body if k not in FIELDS)
    if unknown:
        errors["body"] = f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(FIELDS)}"
    event, event_id = body.get("event"), body.get("id")
    if not isinstance(event, str) or not rm.NAME_RE.match(event):
        errors["event"] = "expected an event name (a-z, 0-9, _, starting with a letter, at most 32)"
    if not isinstance(event_id, str) or not rm.EVENT_ID_RE.match(event_id):
        errors["id"] = "expected the event's id: 1-128 of A-Z a-z 0-9 . _ : -"
    at = now
    if body.get("at") is not None:
        try:
            at = parse_time(body["at"], now)
        except ValueError as exc:
            errors["at"] = str(exc)[:200]
        else:
            if at > now + MAX_AHEAD:
                errors["at"] = "the event lies in the future"
    if errors:
        return None, errors
    return {"event": event, "id": event_id, "at": at}, {}


def routes(service: ReminderService, clock: Callable[[], float] = time.time) -> list[web.RouteDef]:
    async def post(request: web.Request) -> web.StreamResponse:
        who = _who(request)
        if isinstance(who, web.Response):
            return who
        customer_id = request.match_info["id"]
        if not ID_RE.fullmatch(customer_id):
            return _json_error(404, "no such customer")
        try:
            body = await bodies.read_json(request)
        except bodies.BodyError as exc:
            return web.json_response({"errors": {"body": str(exc)}}, status=400)
        parsed, errors = parse_event(body, clock())
        if parsed is None:
            return web.json_response({"errors": errors}, status=400)
        try:
            fired = await service.post_event(customer_id, parsed["event"], parsed["id"], parsed["at"], who=who[0],
                                             role=who[1], source=request.remote or "")
        except UnknownEvent as exc:
            return _json_error(422, "unknown event", known=list(exc.known))
        except NoSuchCustomer:
            return _json_error(404, "no such customer")
        log.info("event %s for customer %s posted by %s:%s: %s", parsed["event"], customer_id, who[1], who[0],
                 ", ".join(f"{f.rule} {f.status}" for f in fired))
        return web.json_response({"customer_id": customer_id, "event": parsed["event"], "id": parsed["id"],
                                  "reminders": [f.to_dict() for f in fired]}, status=202)

    return [web.post(PATH, post)]
