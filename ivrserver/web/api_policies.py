"""REST for the policy files (services/policy_reload.py).

POST /api/v1/policies/reload   read cases.yaml, incidents.yaml, reminders.yaml, webhooks.yaml and
                               routing.yaml again (the same reload as SIGHUP; no body):
                               200 {"ok": true, "files": [{name, file, ok, changed, error, problems}]}
                               or 400 with "ok": false when a file was refused (its running policy
                               stays; `error` holds its file:line problems). Audited (policies.reload).

Who: supervisors only (`guard`, e.g. web.auth.require_supervisor).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ivrserver.services.policy_reload import PolicyFiles
from ivrserver.web.auth import AUTH

Guard = Callable[[web.Request], Awaitable[Any]]
Audit = Callable[..., Awaitable[Any]]


def routes(policies: PolicyFiles, *, audit: Audit | None, guard: Guard) -> list[web.RouteDef]:
    async def reload(request: web.Request) -> web.StreamResponse:
        supervisor = await guard(request)
        outcomes = await policies.reload()
        ok = all(o.ok for o in outcomes)
        if audit is not None:
            auth = request.app.get(AUTH)
            summary = "; ".join(f"{o.name}: {'refused' if not o.ok else 'changed' if o.changed else 'same'}"
                                for o in outcomes)
            await audit(who=str(getattr(supervisor, "id", "supervisor")), role="supervisor", what="policies.reload",
                        target=",".join(o.name for o in outcomes if o.changed) or "policies", why=summary,
                        allowed=ok, at=time.time(),
                        source=auth.source_of(request) if auth is not None else request.remote or "")
        return web.json_response({"ok": ok, "files": [o.as_dict() for o in outcomes]}, status=200 if ok else 400)

    return [web.post("/api/v1/policies/reload", reload)]
