"""A signed-webhook receiver for tests and benchmarks: the other side of services/webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Behaviour = Callable[[int], Awaitable[web.StreamResponse]]


@dataclass
class SignedReceiver:
    """Verifies each request's X-Ivrserver-Signature with plain hmac (t within 5 minutes), records
    raw hits (headers, body, time received) and accepts each Idempotency-Key once. `answers`
    decides each hit's answer (by its number, 1-based); default 200. Listens on a free port of
    127.0.0.1 chosen at `start` (`port` 0) or on `port`."""

    secret: bytes = b""
    port: int = 0
    answers: list[Behaviour] = field(default_factory=list)
    hits: list[dict[str, Any]] = field(default_factory=list)
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_signatures: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        header = request.headers.get("X-Ivrserver-Signature", "")
        fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        expected = hmac.new(self.secret, f"{fields.get('t', '')}.".encode() + raw, hashlib.sha256).hexdigest()
        fresh = fields.get("t", "").isdigit() and abs(time.time() - int(fields["t"])) < 300
        if not (fresh and hmac.compare_digest(expected, fields.get("v1", ""))):
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        body = json.loads(raw)
        self.hits.append({"headers": dict(request.headers), "body": body, "at": time.time()})
        n = len(self.hits)
        key = request.headers["Idempotency-Key"]
        self.accepted.setdefault(key, body)  # a repeat of a key is acknowledged, not acted on again
        if n <= len(self.answers):
            return await self.answers[n - 1](n)
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
