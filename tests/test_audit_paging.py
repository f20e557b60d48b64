"""Paging the audit log with `before` at the edges of Redis stream ids (found by the contract
test, tests/test_contract.py: `GET /api/v1/audit?before=0-0` answered 500)."""

from __future__ import annotations

import redis.asyncio as aioredis

from ivrserver.store.audit import AuditLog
from ivrserver.store.keys import Keys

MAX = 2**64 - 1


async def test_before_at_the_edges_of_stream_ids(redis_client: aioredis.Redis, keys: Keys) -> None:
    audit = AuditLog(redis_client, keys)
    for i in range(3):
        await audit.append(who="agent1010", role="supervisor", what="customer.read", target=f"c{i}",
                           why="test", allowed=True, at=1000.0 + i, source="127.0.0.1")
    newest_first = [e.target for e in await audit.recent()]
    assert newest_first == ["c2", "c1", "c0"]
    ids = [e.id for e in await audit.recent()]
    assert [e.target for e in await audit.recent(before=ids[0])] == ["c1", "c0"]
    assert await audit.recent(before="0-0") == []  # nothing is older than the smallest id
    assert [e.target for e in await audit.recent(before="0-1")] == []
    # ids beyond Redis' 64-bit range: every entry is older
    assert [e.target for e in await audit.recent(before=f"{MAX + 1}-0")] == newest_first
    assert [e.target for e in await audit.recent(before="99999999999999999999-99999999999999999999")] == newest_first
    ms = ids[0].split("-")[0]
    assert [e.target for e in await audit.recent(before=f"{ms}-{MAX + 5}")][:1] == ["c2"]
