"""Agents' page preferences as a use case: the desk's language, chosen on the page and remembered
per agent (store/agent_prefs.py), with the default from `web.default_language` or the browser.

The choice rule is pure (`domain.i18n.choose`); `web/api_prefs.py` calls this service. Redis holds
the choice for the pages; with `postgres.dsn` it is a record: each change also goes through the
outbox to PostgreSQL (table agent_preferences), and the warm-up brings it back after Redis lost it
(services/record_warmup.py). Reads stay one Redis round trip either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from ivrserver.domain import i18n
from ivrserver.domain.i18n import LanguageInvalid  # noqa: F401  (re-exported for web/)
from ivrserver.store.agent_prefs import AgentPrefsStore
from ivrserver.store.keys import Keys


@dataclass(frozen=True)
class Preferences:
    language: str  # the language the agent's pages are shown in
    source: str  # agent | setting | browser | fallback (domain.i18n.choose)
    chosen: str | None  # the agent's own stored choice, if any

    def to_dict(self) -> dict[str, object]:
        return {"language": self.language, "source": self.source, "chosen": self.chosen,
                "languages": list(i18n.LANGUAGES)}


class AgentPrefsService:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, default_language: str = "auto",
                 clock: Callable[[], float] = time.time) -> None:
        if default_language not in i18n.DEFAULT_CHOICES:
            raise ValueError(f"default_language must be one of {', '.join(i18n.DEFAULT_CHOICES)}")
        self.store = AgentPrefsStore(redis, keys)
        self.default_language = default_language
        self.clock = clock

    async def get(self, agent_id: str, *, accept_language: str | None = None) -> Preferences:
        stored = (await self.store.read(agent_id)).get("language")
        chosen = stored if stored in i18n.LANGUAGES else None
        language, source = i18n.choose(chosen, self.default_language, accept_language)
        return Preferences(language=language, source=source, chosen=chosen)

    async def set_language(self, agent_id: str, language: object) -> Preferences:
        """Remember the agent's language (and, with a system of record, queue it for PostgreSQL);
        LanguageInvalid (a precise message) for anything else."""
        checked = i18n.check_language(language)
        await self.store.write(agent_id, {"language": checked}, at=self.clock())
        return Preferences(language=checked, source="agent", chosen=checked)
