"""The aiohttp application: health, metrics, the agent page, and the REST/websocket pieces
that each feature contributes as route lists."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ivrserver.metrics import Metrics

STATIC_DIR = Path(__file__).resolve().parent / "static"
HealthCheck = Callable[[], Awaitable[tuple[bool, str]]]

METRICS_KEY = web.AppKey("metrics", Metrics)
HEALTH_KEY = web.AppKey("health", dict)

# The agent page loads only its own script and style and talks only to this origin.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


async def healthz(request: web.Request) -> web.Response:
    """200 when every dependency answers, 503 otherwise; the body says which one failed."""
    checks: dict[str, HealthCheck] = request.app[HEALTH_KEY]
    report: dict[str, Any] = {}
    healthy = True
    for name, check in checks.items():
        ok, detail = await check()
        report[name] = {"ok": ok, "detail": detail}
        healthy = healthy and ok
    return web.json_response({"ok": healthy, "checks": report}, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        raise web.HTTPNotFound(text="agent page not installed")
    return web.FileResponse(page, headers={"Content-Security-Policy": PAGE_CSP,
                                           "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer"})


async def wallboard(request: web.Request) -> web.StreamResponse:
    """The supervisors' wallboard page (its socket, /ws/wallboard, refuses everyone else)."""
    page = STATIC_DIR / "wallboard.html"
    if not page.is_file():
        raise web.HTTPNotFound(text="wallboard page not installed")
    return web.FileResponse(page, headers={"Content-Security-Policy": PAGE_CSP,
                                           "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer"})


async def reports(request: web.Request) -> web.StreamResponse:
    """The supervisors' reports page (its API, /api/v1/reports/<name>, refuses everyone else)."""
    page = STATIC_DIR / "reports.html"
    if not page.is_file():
        raise web.HTTPNotFound(text="reports page not installed")
    return web.FileResponse(page, headers={"Content-Security-Policy": PAGE_CSP,
                                           "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer"})


@web.middleware
async def security_headers(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.startswith("/static/"):
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """API errors are JSON; nothing from the request is echoed back unescaped."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.content_type == "application/json" or exc.status < 400:
            raise
        # 405 keeps its Allow header (RFC 9110 requires it; the contract test checks it).
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response({"error": exc.reason, "detail": exc.text or exc.reason}, status=exc.status,
                                 headers=headers)


def build_app(metrics_: Metrics, health: dict[str, HealthCheck],
              route_sets: Iterable[Iterable[web.AbstractRouteDef]] = (),
              middlewares: Iterable[Any] = ()) -> web.Application:
    """Compose the web app from health checks, each feature's routes and extra middlewares
    (authentication runs inside the JSON error mapping)."""
    app = web.Application(middlewares=[json_errors, security_headers, *middlewares], client_max_size=256 * 1024)
    app[METRICS_KEY] = metrics_
    app[HEALTH_KEY] = health
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    app.router.add_get("/wallboard", wallboard)
    app.router.add_get("/reports", reports)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    for routes in route_sets:
        app.add_routes(list(routes))
    return app
