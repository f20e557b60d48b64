"""GET /api/v1/openapi.json: the REST API described in OpenAPI 3.1 (no login needed).

The document is `openapi.yaml` beside this module, written by hand and reviewed against the
handlers; tests/test_openapi.py fails when the app has a route the document lacks or the other
way round, and tests/test_contract.py checks the real app's answers against it (schemathesis).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

PATH = "/api/v1/openapi.json"
DOCUMENT = Path(__file__).resolve().parent / "openapi.yaml"


def load_document(path: Path = DOCUMENT) -> dict[str, Any]:
    """The OpenAPI document as a mapping (blocking: file read and YAML parse)."""
    with path.open(encoding="utf-8") as f:
        document = yaml.safe_load(f)
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        raise ValueError(f"{path}: not an OpenAPI document")
    return document


def routes(path: Path = DOCUMENT) -> list[web.RouteDef]:
    """The route serving the document as JSON; it is read once, off the event loop, on first use."""
    rendered: list[bytes] = []
    lock = asyncio.Lock()

    async def openapi(request: web.Request) -> web.Response:
        if not rendered:
            async with lock:
                if not rendered:
                    document = await asyncio.to_thread(load_document, path)
                    rendered.append(json.dumps(document, ensure_ascii=False).encode())
        return web.Response(body=rendered[0], content_type="application/json", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    return [web.get(PATH, openapi)]
