"""The languages of the pages (agent desk, wallboard, reports) and how one is chosen.

An agent's own choice wins; else the `web.default_language` setting ("en" | "zh"); with "auto",
the browser's Accept-Language (RFC 9110 §12.5.4: the highest-weighted supported language); else
English. Pure: the caller passes the stored choice, the setting and the header.
"""

from __future__ import annotations

LANGUAGES = ("en", "zh")
DEFAULT_CHOICES = ("auto", *LANGUAGES)
FALLBACK = "en"
MAX_HEADER = 1024  # longer Accept-Language headers are ignored (hostile, or no real browser)
MAX_RANGES = 32


class LanguageInvalid(ValueError):
    """A language a page cannot be shown in."""


def check_language(value: object) -> str:
    """A stored/requested language: exactly one of LANGUAGES, else LanguageInvalid (precise message)."""
    if not isinstance(value, str):
        raise LanguageInvalid(f"language must be a string, one of {', '.join(LANGUAGES)}")
    if value not in LANGUAGES:
        shown = value if len(value) <= 16 and value.isprintable() else value[:16].encode("unicode_escape").decode()
        raise LanguageInvalid(f"language must be one of {', '.join(LANGUAGES)}, got {shown!r}")
    return value


def _supported(tag: str) -> str | None:
    primary = tag.split("-", 1)[0].strip().lower()
    return primary if primary in LANGUAGES else None


def _weight(params: list[str]) -> float | None:
    for p in params:
        name, _, value = p.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return None
            return q if 0.0 <= q <= 1.0 else None
    return 1.0


def negotiate(accept_language: str | None) -> str | None:
    """The supported language the header prefers most (ties: the first listed), or None."""
    if not accept_language or len(accept_language) > MAX_HEADER:
        return None
    best: tuple[float, str] | None = None
    for item in accept_language.split(",")[:MAX_RANGES]:
        tag, *params = item.split(";")
        lang = _supported(tag)
        q = _weight(params)
        if lang is None or q is None or q <= 0.0:
            continue
        if best is None or q > best[0]:
            best = (q, lang)
    return best[1] if best else None


def choose(stored: str | None, default: str, accept_language: str | None) -> tuple[str, str]:
    """(language, why): why is "agent" (their choice), "setting" (web.default_language),
    "browser" (Accept-Language) or "fallback"."""
    if stored in LANGUAGES:
        return stored, "agent"
    if default in LANGUAGES:
        return default, "setting"
    browser = negotiate(accept_language)
    if browser is not None:
        return browser, "browser"
    return FALLBACK, "fallback"
