"""The agent's own page preferences (issue 20 §4).

    GET /api/v1/me/preferences   → {"language": "en"|"zh", "source": "agent"|"setting"|"browser"|"fallback",
                                    "chosen": "en"|"zh"|null, "languages": ["en", "zh"]}
    PUT /api/v1/me/preferences   {"language": "en"|"zh"} → the same shape; 400 {"error"} otherwise

`source` says where the language comes from: the agent's own choice, the `web.default_language`
setting, the browser's Accept-Language, or the fallback (English). Logged-in agents only (401);
the PUT body must be `application/json` (415) and at most 1 KiB (413). With `postgres.dsn` the choice
is also a record in PostgreSQL (services/agent_prefs.py); these handlers read and write Redis only.
"""

from __future__ import annotations

from aiohttp import web

from ivrserver.services.agent_prefs import AgentPrefsService, LanguageInvalid
from ivrserver.web import bodies
from ivrserver.web.auth import current_agent

NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
KNOWN_FIELDS = frozenset({"language"})
MAX_BODY = 1024


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=NO_STORE)


def routes(prefs: AgentPrefsService) -> list[web.RouteDef]:
    async def get_prefs(request: web.Request) -> web.Response:
        agent = await current_agent(request)
        found = await prefs.get(agent.id, accept_language=request.headers.get("Accept-Language"))
        return web.json_response(found.to_dict(), headers=NO_STORE)

    async def put_prefs(request: web.Request) -> web.Response:
        agent = await current_agent(request)
        if request.content_type != "application/json":
            return _bad("Content-Type must be application/json", 415)
        if request.content_length is None or request.content_length > MAX_BODY:
            return _bad(f"body must be at most {MAX_BODY} bytes with a Content-Length", 413)
        try:
            body = bodies.parse_json(await request.content.read(MAX_BODY + 1))
        except bodies.BodyError as exc:
            return _bad(str(exc))
        if not isinstance(body, dict):
            return _bad("body must be a JSON object")
        if any(k not in KNOWN_FIELDS for k in body):
            return _bad(f"unknown field: only {', '.join(sorted(KNOWN_FIELDS))} may be set")
        if "language" not in body:
            return _bad("language is required")
        try:
            saved = await prefs.set_language(agent.id, body["language"])
        except LanguageInvalid as exc:
            return _bad(str(exc))
        return web.json_response(saved.to_dict(), headers=NO_STORE)

    return [
        web.get("/api/v1/me/preferences", get_prefs),
        web.put("/api/v1/me/preferences", put_prefs),
    ]
