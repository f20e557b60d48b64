"""The call context: what ivrserver learned about one call, kept for the agent's screen-pop.

Written by the hotline use case when it hands the call to the dialplan, read when an agent's
phone rings (the AMI event carries IVR_CONTEXT_ID). Stored as one JSON document with a TTL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

import redis.asyncio as aioredis

from ivrserver.store.keys import Keys

TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class CallContext:
    id: str
    number: str
    started_at: float
    kind: str = "inbound"  # inbound | callback | notification
    customer_id: str | None = None
    contact_id: str | None = None
    routing_reason: str = ""
    menu: str = ""
    menu_version: str = ""
    ivr_path: tuple[dict[str, Any], ...] = ()
    callback: dict[str, Any] = field(default_factory=dict)
    # active incidents relevant to the caller (services/incidents.pop_entry), shown on the pop
    incidents: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> str:
        # not dataclasses.asdict: it deep-copies the path's dicts (written for every call)
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["ivr_path"] = list(self.ivr_path)
        doc["incidents"] = list(self.incidents)
        return json.dumps(doc, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str) -> CallContext:
        doc = json.loads(raw)
        doc["ivr_path"] = tuple(doc.get("ivr_path") or ())
        doc["incidents"] = tuple(i for i in doc.get("incidents") or () if isinstance(i, dict))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})


async def save(redis: aioredis.Redis, keys: Keys, ctx: CallContext, ttl: int = TTL_SECONDS) -> None:
    await redis.set(keys.call_context(ctx.id), ctx.to_json(), ex=ttl)


def as_write(keys: Keys, ctx: CallContext, ttl: int = TTL_SECONDS) -> tuple[str, str, int]:
    """(key, JSON, TTL) of the save, for a writer that saves it with other data in one round trip
    (the hotline: with the IVR path, `callpath.RedisPathRecorder.record(context=...)`)."""
    return keys.call_context(ctx.id), ctx.to_json(), ttl


async def load(redis: aioredis.Redis, keys: Keys, context_id: str) -> CallContext | None:
    raw = await redis.get(keys.call_context(context_id))
    return CallContext.from_json(raw) if raw else None
