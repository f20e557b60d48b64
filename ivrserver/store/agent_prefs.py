"""Agents' page preferences in Redis: one HASH per agent (`keys.agent_prefs`), no TTL (state).

Fields: "language" (en | zh). Values are validated by the service before they get here.
With a system of record (`Keys.records`) every change is also queued for PostgreSQL (an outbox
entry of kind "agent_prefs", record/sink.py) in the same MULTI; the warm-up writes them back with
`restore` after Redis lost its data, and `ivrserver db import-redis` reads them with `iter_all`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence

import redis.asyncio as aioredis

from ivrserver.store.grants import check_agent_id
from ivrserver.store.keys import Keys


def agent_prefs_entry(agent_id: str, fields: Mapping[str, str], at: float) -> dict[str, str]:
    """The outbox entry of one change (built here, next to the write that queues it: store/ must not
    import record/); `at` is when the agent made it."""
    data = {"agent_id": agent_id, "at": at, "prefs": dict(fields)}
    return {"kind": "agent_prefs", "data": json.dumps(data, separators=(",", ":"), ensure_ascii=False)}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class AgentPrefsStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def read(self, agent_id: str) -> dict[str, str]:
        check_agent_id(agent_id)
        raw = await self.redis.hgetall(self.keys.agent_prefs(agent_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def write(self, agent_id: str, fields: Mapping[str, str], *, at: float) -> None:
        """Set `fields`; with a system of record, queue the change for it in the same MULTI."""
        check_agent_id(agent_id)
        if not fields:
            return
        outbox = self.keys.outbox_if_recording()
        if outbox is None:
            await self.redis.hset(self.keys.agent_prefs(agent_id), mapping=dict(fields))  # type: ignore[arg-type]
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.agent_prefs(agent_id), mapping=dict(fields))  # type: ignore[arg-type]
            pipe.xadd(outbox, agent_prefs_entry(agent_id, fields, at))  # type: ignore[arg-type]
            await pipe.execute()

    async def restore(self, prefs: Sequence[tuple[str, Mapping[str, str]]]) -> int:
        """Write back recorded preferences, field by field only where absent (HSETNX): a choice an
        agent made since Redis lost its data is newer than the record and kept. Returns how many
        agents got at least one field back."""
        written = 0
        async with self.redis.pipeline(transaction=False) as pipe:
            shape = []
            for agent_id, fields in prefs:
                check_agent_id(agent_id)
                for name, value in fields.items():
                    pipe.hsetnx(self.keys.agent_prefs(agent_id), name, value)
                shape.append(len(fields))
            replies = await pipe.execute() if shape else []
        at = 0
        for n in shape:
            written += any(replies[at:at + n])
            at += n
        return written

    async def iter_all(self, *, batch: int = 500) -> AsyncIterator[list[tuple[str, dict[str, str]]]]:
        """Every agent's preferences, a batch at a time (SCAN: no blocking KEYS); keys whose agent id
        is not a valid one are skipped."""
        prefix = self.keys.agent_prefs("")
        ids: list[str] = []
        async for key in self.redis.scan_iter(match=self.keys.agent_prefs("*"), count=batch, _type="hash"):
            agent_id = _text(key)[len(prefix):]
            try:
                ids.append(check_agent_id(agent_id))
            except ValueError:
                continue
            if len(ids) >= batch:
                yield await self._read_many(ids)
                ids = []
        if ids:
            yield await self._read_many(ids)

    async def _read_many(self, ids: list[str]) -> list[tuple[str, dict[str, str]]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for agent_id in ids:
                pipe.hgetall(self.keys.agent_prefs(agent_id))
            replies = await pipe.execute()
        return [(agent_id, {_text(k): _text(v) for k, v in raw.items()})
                for agent_id, raw in zip(ids, replies, strict=True) if raw]
