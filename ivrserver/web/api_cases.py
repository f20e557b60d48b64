"""REST: cases and their lifecycle, checklists, hand-offs to back offices, results and compensation.

    GET  /api/v1/case-policy                      actions, due hours, the caller's compensation authority
    POST /api/v1/cases                            open a case (+ checklist) → 201
    GET  /api/v1/cases?filter=overdue|handed      supervisors: overdue cases; a back office: cases handed to it
    GET  /api/v1/cases/{id}                       one case (+ overdue); a back office: only one handed to it
    PUT  /api/v1/cases/{id}                       change fields and/or status (+ why)
    GET  /api/v1/cases/{id}/events                the case's latest events (who, when, why, what)
    POST /api/v1/cases/{id}/status                move: {status, why}
    POST /api/v1/cases/{id}/checklist             {add: [{text, from}], done: [id], undone: [id], why}
    POST /api/v1/cases/{id}/actions               hand to a back office: {action, to, params, why}
    POST /api/v1/cases/{id}/results               a back office's result: {result, resolve, checklist}
    GET  /api/v1/cases/{id}/compensations         the case's compensations
    POST /api/v1/cases/{id}/compensations         grant within authority, else request: {amount_cents,
                                                  currency, reason, key?} → 201 granted | 202 requested
    GET  /api/v1/compensations?state=requested    supervisors: requests waiting for a decision
    POST /api/v1/compensations/{cid}/approve      supervisors: {why?}
    POST /api/v1/compensations/{cid}/refuse       supervisors: {why}

Who: agents and supervisors (session) through `authorize(request, customer_id, purpose)` — an
agent only for a customer they are handling (web/auth.py), every decision audited. Back-office
tokens (web/backoffice.py) with `cases:read` read the cases handed to them (anything else is a 404,
as if it did not exist) and with `cases:write` post results on them; nothing else.
Bad input: 400 `{"error", "errors": [{"field", "message"}]}`; a move the case's state refuses 409;
above a supervisor's own authority 403; Redis unreachable 503.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ivrserver.domain import cases as rules
from ivrserver.domain import compensation as comp
from ivrserver.domain import customer_validation as cv
from ivrserver.domain.model import Agent, Case
from ivrserver.services import cases as case_service
from ivrserver.services.cases import CaseService
from ivrserver.web import rest
from ivrserver.web.api_customers import actor_of
from ivrserver.web.auth import AGENT
from ivrserver.web.backoffice import BACKOFFICE, has_scope
from ivrserver.web.rest import allow_all

log = logging.getLogger(__name__)

Authorize = Callable[[web.Request, str | None, str], Awaitable[Any]]
Guard = Callable[[web.Request], Awaitable[Agent]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CASE_ID_RE = re.compile(r"[1-9][0-9]{0,18}")
COMPENSATION_ID_RE = re.compile(r"cp-[0-9a-f]{24}")
MAX_LIST = 500


def _rule(exc: rules.CaseRuleError | comp.CompensationError) -> web.HTTPException:
    if exc.conflict:
        return rest.error(web.HTTPConflict, exc.message, [(exc.field, exc.message)])
    return rest.invalid([(exc.field, exc.message)])


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "")
    if not raw:
        return 200
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= MAX_LIST:
        raise rest.invalid([("limit", f"must be a whole number 1-{MAX_LIST}")])
    return int(raw)


def _guard(handler: Handler) -> Handler:
    @rest.store_errors("case store")
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except rules.CaseRuleError as exc:
            raise _rule(exc) from None
        except comp.CompensationError as exc:
            raise _rule(exc) from None
        except (case_service.CaseNotFound, case_service.NotHandedHere):
            raise rest.not_found("case") from None
        except case_service.CompensationNotFound:
            raise rest.not_found("compensation") from None
        except case_service.AboveAuthority as exc:
            raise rest.error(web.HTTPForbidden, f"above your authority: {exc}") from None
    return wrapped


class CaseRoutes:
    def __init__(self, service: CaseService, authorize: Authorize, supervisor: Guard) -> None:
        self.service = service
        self.authorize = authorize
        self.supervisor = supervisor

    def view(self, case: Case) -> dict[str, Any]:
        return {**case_service.case_to_dict(case), "overdue": self.service.is_overdue(case),
                "open_items": len(rules.open_items(case))}

    # ---- who may see the case ---------------------------------------------------------------
    async def _case(self, request: web.Request, purpose: str, *, backoffice: str | None = None) -> Case:
        """The case of the URL, once the caller may `purpose` it. A back-office token needs the
        scope `backoffice` (None: back offices may not) and the case handed to it."""
        case_id = request.match_info["id"]
        if not CASE_ID_RE.fullmatch(case_id):
            raise rest.not_found("case")
        name = request.get(BACKOFFICE)
        if name is not None:
            if backoffice is None or not has_scope(request, backoffice):
                raise rest.error(web.HTTPForbidden, "this token's scopes do not allow that")
            return await self.service.for_backoffice(case_id, name)
        case = await self.service.get(case_id)
        if case is None:
            raise rest.not_found("case")
        await self.authorize(request, case.customer_id, purpose)
        return case

    async def _agent(self, request: web.Request) -> Agent:
        agent = request.get(AGENT)
        if agent is None:
            raise rest.error(web.HTTPUnauthorized, "an agent login is required")
        return agent

    # ---- handlers ---------------------------------------------------------------------------
    async def policy(self, request: web.Request) -> web.Response:
        agent = await self._agent(request)  # no customer's data: any logged-in agent
        p = self.service.policy
        return rest.reply({
            "due_hours": {str(k): v for k, v in sorted(p.due_hours.items())},
            "actions": [{"name": a.name, "description": a.description, "backoffice": a.backoffice}
                        for a in p.actions.values()],
            "compensation": self.service.authority_of(agent),
            "statuses": {s.value: sorted(t.value for t in rules.TRANSITIONS[s]) for s in rules.TRANSITIONS},
        })

    async def create(self, request: web.Request) -> web.Response:
        if request.get(BACKOFFICE) is not None:
            raise rest.error(web.HTTPForbidden, "back offices do not open cases")
        data = await rest.read_body(request)
        problems: list[tuple[str, str]] = []
        checklist: list[tuple[str, str]] = []
        why = ""
        if isinstance(data, dict):
            checklist = rules.parse_items(problems, "checklist", data.get("checklist"))
            why = rules.parse_why(problems, data.get("why"))
            data = {k: v for k, v in data.items() if k not in ("checklist", "why")}
        fields, errors = cv.validate_case_create(data)
        if fields is None or problems:
            raise rest.invalid([(e.field, e.message) for e in errors] + problems)
        await self.authorize(request, fields["customer_id"], "case.create")
        case = await self.service.open(fields, actor=actor_of(request), checklist=checklist, why=why)
        return rest.reply(self.view(case), status=201, headers={"Location": f"/api/v1/cases/{case.id}"})

    async def list_cases(self, request: web.Request) -> web.Response:
        which = request.query.get("filter", "")
        limit = _limit(request)
        name = request.get(BACKOFFICE)
        if which == "handed":
            if name is None or not has_scope(request, "cases:read"):
                raise rest.error(web.HTTPForbidden, "filter=handed is for back-office tokens with cases:read")
            found = await self.service.handed(name, limit=limit)
        elif which == "overdue":
            if name is not None:
                raise rest.error(web.HTTPForbidden, "filter=overdue is for supervisors")
            await self.supervisor(request)
            await self.authorize(request, None, "case.overdue")
            found = await self.service.overdue(limit=limit)
        else:
            raise rest.invalid([("filter", "must be overdue (supervisors) or handed (back offices)")])
        return rest.reply({"items": [self.view(c) for c in found], "filter": which})

    async def get(self, request: web.Request) -> web.Response:
        case = await self._case(request, "case.read", backoffice="cases:read")
        return rest.reply(self.view(case))

    async def events(self, request: web.Request) -> web.Response:
        case = await self._case(request, "case.read", backoffice="cases:read")
        return rest.reply({"case_id": case.id, "events": await self.service.events(case.id, limit=_limit(request))})

    async def update(self, request: web.Request) -> web.Response:
        data = await rest.read_body(request)
        problems: list[tuple[str, str]] = []
        why = ""
        if isinstance(data, dict) and "why" in data:
            why = rules.parse_why(problems, data["why"])
            data = {k: v for k, v in data.items() if k != "why"}
        changes, errors = cv.validate_case_update(data)
        if changes is None or problems:
            raise rest.invalid([(e.field, e.message) for e in errors] + problems)
        case = await self._case(request, "case.update")
        status = changes.pop("status", None)
        updated = await self.service.update(case.id, changes, None if status is None else status.value,
                                            actor=actor_of(request), why=why)
        return rest.reply(self.view(updated))

    async def move(self, request: web.Request) -> web.Response:
        parsed, problems = rules.parse_move(await rest.read_body(request))
        if parsed is None:
            raise rest.invalid(problems)
        case = await self._case(request, "case.update")
        moved = await self.service.move(case.id, parsed["status"], actor=actor_of(request), why=parsed["why"])
        return rest.reply(self.view(moved))

    async def checklist(self, request: web.Request) -> web.Response:
        parsed, problems = rules.parse_checklist(await rest.read_body(request))
        if parsed is None:
            raise rest.invalid(problems)
        case = await self._case(request, "case.update")
        updated = await self.service.checklist(case.id, add=parsed["add"], done=parsed["done"],
                                               undone=parsed["undone"], actor=actor_of(request), why=parsed["why"])
        return rest.reply(self.view(updated))

    async def action(self, request: web.Request) -> web.Response:
        parsed, problems = rules.parse_action(await rest.read_body(request))
        if parsed is None:
            raise rest.invalid(problems)
        case = await self._case(request, "case.action")
        await self._agent(request)
        updated = await self.service.hand_off(case.id, parsed["action"], parsed["params"], to=parsed["to"],
                                              actor=actor_of(request), why=parsed["why"])
        return rest.reply(self.view(updated))

    async def result(self, request: web.Request) -> web.Response:
        name = request.get(BACKOFFICE)
        if name is None:
            raise rest.error(web.HTTPForbidden, "results come from back-office tokens (scope cases:write)")
        parsed, problems = rules.parse_result(await rest.read_body(request))
        if parsed is None:
            raise rest.invalid(problems)
        case = await self._case(request, "case.result", backoffice="cases:write")
        updated = await self.service.backoffice_result(case.id, name, parsed["result"], resolve=parsed["resolve"],
                                                       done=parsed["done"])
        return rest.reply(self.view(updated))

    async def compensations(self, request: web.Request) -> web.Response:
        case = await self._case(request, "compensation.read")
        return rest.reply({"case_id": case.id,
                           "items": [comp.to_dict(c) for c in await self.service.compensations(case.id)]})

    async def grant(self, request: web.Request) -> web.Response:
        data = await rest.read_body(request)
        fields, problems = comp.validate_request(data, self.service.policy.compensation)
        if fields is None:
            raise rest.invalid(problems)
        case = await self._case(request, "compensation.grant")
        agent = await self._agent(request)
        result, created = await self.service.grant(case.id, fields, agent=agent)
        status = (201 if result.state is comp.CompensationState.GRANTED else 202) if created else 200
        return rest.reply(comp.to_dict(result), status=status,
                          headers={"Location": f"/api/v1/cases/{case.id}/compensations"})

    async def requested(self, request: web.Request) -> web.Response:
        await self.supervisor(request)
        state = request.query.get("state", "requested")
        if state != "requested":
            raise rest.invalid([("state", "only requested can be listed")])
        items = await self.service.requested_compensations(limit=_limit(request))
        return rest.reply({"items": [comp.to_dict(c) for c in items], "state": state})

    async def _decide(self, request: web.Request, approve: bool) -> web.Response:
        supervisor = await self.supervisor(request)
        cid = request.match_info["cid"]
        if not COMPENSATION_ID_RE.fullmatch(cid):
            raise rest.not_found("compensation")
        why, problems = comp.decision_why(await rest.read_body(request, optional=True))
        if why is None:
            raise rest.invalid(problems)
        stored = await self.service.compensation(cid)
        if stored is None:
            raise rest.not_found("compensation")
        await self.authorize(request, stored.customer_id, "compensation.decide")
        result = await self.service.decide_request(cid, approve=approve, supervisor=supervisor, why=why)
        return rest.reply(comp.to_dict(result))

    async def approve(self, request: web.Request) -> web.Response:
        return await self._decide(request, True)

    async def refuse(self, request: web.Request) -> web.Response:
        return await self._decide(request, False)


def routes(service: CaseService, authorize: Authorize = allow_all, *, supervisor: Guard) -> list[web.RouteDef]:
    h = CaseRoutes(service, authorize, supervisor)
    return [
        web.get("/api/v1/case-policy", _guard(h.policy)),
        web.post("/api/v1/cases", _guard(h.create)),
        web.get("/api/v1/cases", _guard(h.list_cases)),
        web.get("/api/v1/cases/{id}", _guard(h.get)),
        web.put("/api/v1/cases/{id}", _guard(h.update)),
        web.get("/api/v1/cases/{id}/events", _guard(h.events)),
        web.post("/api/v1/cases/{id}/status", _guard(h.move)),
        web.post("/api/v1/cases/{id}/checklist", _guard(h.checklist)),
        web.post("/api/v1/cases/{id}/actions", _guard(h.action)),
        web.post("/api/v1/cases/{id}/results", _guard(h.result)),
        web.get("/api/v1/cases/{id}/compensations", _guard(h.compensations)),
        web.post("/api/v1/cases/{id}/compensations", _guard(h.grant)),
        web.get("/api/v1/compensations", _guard(h.requested)),
        web.post("/api/v1/compensations/{cid}/approve", _guard(h.approve)),
        web.post("/api/v1/compensations/{cid}/refuse", _guard(h.refuse)),
    ]
