"""The one JSON reader of the web adapters: every REST body and websocket message goes through it.

`json.loads` recurses once per nesting level in C: a 100,000-deep `[[[[…` body raised
RecursionError, which some routes turned into a 500. Here the nesting is measured first, without
recursion (strings removed by one regex, then a count over the brackets only), and refused past
`MAX_DEPTH`; NaN/Infinity (not JSON, and never a valid value here) are refused too. Each route maps
`BodyError` to its own 400 shape; the size limit is the app's `client_max_size` (413).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

MAX_DEPTH = 32  # the deepest body of the API is 3 levels; 32 leaves room and stays far from recursion limits
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class BodyError(ValueError):
    """The body is not acceptable JSON; the message says why (safe to send back: no input echoed)."""


def _constant(name: str) -> Any:
    raise BodyError(f"{name} is not allowed")


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in `text` (valid JSON or not), without recursion."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode UTF-8 JSON with a nesting limit; BodyError with a clear message otherwise."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise BodyError("body is not UTF-8") from None
    if not text.strip():
        raise BodyError("body is empty: a JSON object is required")
    if nesting_depth(text) > max_depth:
        raise BodyError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_constant)
    except BodyError:
        raise
    except (ValueError, RecursionError):
        raise BodyError("body is not valid JSON") from None


async def read_json(request: web.Request, *, max_depth: int = MAX_DEPTH) -> Any:
    """The request body as JSON (size bounded by the app's client_max_size: 413 past it)."""
    return parse_json(await request.read(), max_depth=max_depth)
