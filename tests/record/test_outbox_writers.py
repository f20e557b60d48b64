"""The writers of contacts, IVR paths and audit entries append to the outbox in the round trip they
already make (Redis INFO commandstats of a real redis-server: the client's commands are the same
with and without a system of record; only the XADD run inside the script is added), and not at all
without one. The entries decode into the records the sink writes."""

from __future__ import annotations

import collections
import time

import redis.asyncio as aioredis

from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import Contact, ContactKind, Outcome
from ivrserver.record.sink import decode
from ivrserver.store import contacts, scripts
from ivrserver.store.audit import AuditLog
from ivrserver.store.callpath import RedisPathRecorder
from ivrserver.store.keys import Keys

NOW = time.time()


async def stats(redis: aioredis.Redis) -> collections.Counter[str]:
    info = await redis.info("commandstats")
    return collections.Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()})


async def commands_of(redis: aioredis.Redis, keys: Keys) -> collections.Counter[str]:
    before = await stats(redis)
    contact = Contact(id="k1", kind=ContactKind.INBOUND, number="+8613800000001", started_at=NOW, customer_id="c1",
                      outcome=Outcome.ANSWERED, notes="refund")
    await contacts.save_contact(redis, keys, contact, now=NOW, keep_write_back=True, linkedid="L1")
    await RedisPathRecorder(redis, keys, 86400).record(CallPath("call-1", "hotline", "v1", NOW, (
        PathEvent(PathKind.ENTER, "main", NOW), PathEvent(PathKind.EXIT, "main", NOW + 2, detail="queue"))))
    await AuditLog(redis, keys).append(who="agent1001", role="agent", what="customer.read", target="c1",
                                       why="pop", allowed=True, at=NOW)
    await contacts.update_contact_notes(redis, keys, "k1", {"notes": "called back"}, now=NOW)
    delta = await stats(redis) - before
    delta.pop("info", None)
    return delta


async def test_same_client_commands_with_and_without_the_outbox(redis_client: aioredis.Redis) -> None:
    await scripts.load_all(redis_client)  # as the app does at start: every EVALSHA hits
    plain = await commands_of(redis_client, Keys("p"))
    assert not await redis_client.exists(Keys("p").outbox())
    recorded = await commands_of(redis_client, Keys("r", records=True))
    # client round trips: EVALSHA (contact, path), XADD (audit: plain XADD / EVALSHA when recorded),
    # WATCH/GET/MULTI/EXEC (notes); inside the scripts and the MULTI one XADD per record more
    assert recorded["evalsha"] == plain["evalsha"] + 1  # the audit entry and its record: one script
    assert recorded["xadd"] == plain["xadd"] + 4  # contact, path, audit (now inside a script), notes
    for command in ("multi", "exec", "watch", "get", "set"):
        assert recorded[command] == plain[command], command


async def test_outbox_entries_decode_into_the_records(redis_client: aioredis.Redis) -> None:
    keys = Keys("r", records=True)
    await commands_of(redis_client, keys)
    entries = await redis_client.xrange(keys.outbox())
    assert [f["kind"] for _, f in entries] == ["contact", "path", "audit", "contact"]
    batch = decode(entries)
    assert not batch.dead
    audit_id = (await redis_client.xrange(keys.audit()))[0][0]
    assert audit_id in entries[2][1]["data"]
    assert "called back" in entries[3][1]["data"] and "refund" in entries[0][1]["data"]
