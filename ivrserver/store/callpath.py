"""IVR call paths in Redis: one list per call, an index per menu, both expiring.

Layout (names from store/keys.py):
- `ivr_path(call_id)`: LIST; item 0 is the header {"call","menu","version","started_at"}, then one
  compact JSON object per PathEvent. Expires after the retention period.
- `ivr_calls(menu)`: ZSET call_id scored by start time (epoch seconds); entries older than the
  retention are trimmed on every write.
- `announcement(menu)`: STRING, comma-separated sound names played at entry while it exists.

The retention is the recorder's `retention_seconds`: the app passes `Settings.redis_keep_days`
(``redis.retention_days`` Redis-only, ``redis.hot_days`` with PostgreSQL, which keeps every path
and counts `menus stats` from its own tables).

A call's path is written in ONE round trip when the call leaves the menu (before the dialplan
takes over, so the screen-pop can read it as soon as an agent rings), by one script that can
also save the call's context (`record(path, context=...)`): one command for redis-py to send and
parse instead of seven in a pipeline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio import Redis

from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath
from ivrserver.store import scripts
from ivrserver.store.incidents import RUN_OPS_LUA
from ivrserver.store.keys import Keys

ANNOUNCEMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")


class PathRecorder(Protocol):
    async def record(self, path: CallPath) -> None: ...


def encode_event(e: PathEvent) -> str:
    data: dict[str, Any] = {"k": str(e.kind), "n": e.node, "t": round(e.at, 3)}
    if e.key:
        data["key"] = e.key
    if e.target:
        data["to"] = e.target
    if e.detail:
        data["d"] = e.detail
    return json.dumps(data, separators=(",", ":"))


def decode_event(raw: str) -> PathEvent | None:
    try:
        data = json.loads(raw)
        return PathEvent(PathKind(data["k"]), str(data["n"]), float(data["t"]), key=str(data.get("key", "")),
                         target=str(data.get("to", "")), detail=str(data.get("d", "")))
    except (ValueError, KeyError, TypeError):
        return None


def path_to_json(path: CallPath, events: Sequence[str] | None = None) -> str:
    """The path as one JSON document (the outbox record the sink writes to `ivr_paths`); `events`
    are its events already encoded (`encode_event`), if at hand."""
    encoded = list(events) if events is not None else [encode_event(e) for e in path.events]
    return json.dumps({"call": path.call_id, "menu": path.menu, "version": path.version,
                       "started_at": path.started_at, "events": encoded}, separators=(",", ":"), ensure_ascii=False)


# KEYS: path list, menu index[, context]; ARGV: retention, call id, start, trim bound, context TTL,
# context JSON ('' with no context key), outbox key and the path's record ('' when no system of
# record is configured), the call's counter operations (JSON, '' for none: store/incidents.py
# complaint_ops), then the list items (header, events)
_SAVE_PATH = scripts.declare(RUN_OPS_LUA + """
local retention = tonumber(ARGV[1])
redis.call('DEL', KEYS[1])
if ARGV[9] ~= '' then
  run_ops(cjson.decode(ARGV[9]))
end
for i = 10, #ARGV, 1000 do  -- in chunks: unpack() of a long path would overflow Lua's C stack
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if ARGV[7] ~= '' then
  redis.call('XADD', ARGV[7], '*', 'kind', 'path', 'data', ARGV[8])
end
redis.call('EXPIRE', KEYS[1], retention)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
redis.call('EXPIRE', KEYS[2], retention)
if KEYS[3] then
  redis.call('SET', KEYS[3], ARGV[6], 'EX', tonumber(ARGV[5]))
end
return 1
""")


class RedisPathRecorder:
    def __init__(self, redis: Redis, keys: Keys, retention_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.retention = int(retention_seconds)

    async def record(self, path: CallPath, *, context: tuple[str, str, int] | None = None,
                     counters: Sequence[Sequence[str]] = ()) -> None:
        """Write the path (replacing an earlier one of the same call) and index it by start time;
        `context` = (key, JSON, TTL seconds) is saved in the same script run, and with a system of
        record (`keys.records`) the path is appended to the outbox there too; `counters` are the
        call's complaint counters (store/incidents.complaint_ops), in the same run as well."""
        header = json.dumps({"call": path.call_id, "menu": path.menu, "version": path.version,
                             "started_at": path.started_at}, separators=(",", ":"))
        keys = [self.keys.ivr_path(path.call_id), self.keys.ivr_calls(path.menu)]
        ttl, document = 0, ""
        if context is not None:
            key, document, ttl = context
            keys.append(key)
        events = [encode_event(e) for e in path.events]
        outbox = self.keys.outbox_if_recording()
        record = "" if outbox is None else path_to_json(path, events)
        await scripts.script(self.redis, _SAVE_PATH)(keys=keys, args=[
            self.retention, path.call_id, repr(path.started_at), f"({path.started_at - self.retention!r}", int(ttl),
            document, outbox or "", record,
            json.dumps(counters, separators=(",", ":")) if counters else "", header, *events])


def _parse(raw: Sequence[str]) -> CallPath | None:
    if not raw:
        return None
    try:
        head = json.loads(raw[0])
        call_id, menu, version = str(head["call"]), str(head["menu"]), str(head["version"])
        started = float(head["started_at"])
    except (ValueError, KeyError, TypeError):
        return None
    events = tuple(e for e in (decode_event(r) for r in raw[1:]) if e is not None)
    return CallPath(call_id, menu, version, started, events)


async def read_path(redis: Redis, keys: Keys, call_id: str) -> CallPath | None:
    return _parse(await redis.lrange(keys.ivr_path(call_id), 0, -1))


async def recent_paths(redis: Redis, keys: Keys, menu: str, since: float, until: float = float("inf"),
                       limit: int = 100_000, batch: int = 500) -> list[CallPath]:
    """Paths of calls to `menu` started in [since, until], oldest first, pipelined in batches."""
    ids: list[str] = await redis.zrangebyscore(keys.ivr_calls(menu), since, until, start=0, num=limit)
    out: list[CallPath] = []
    for i in range(0, len(ids), batch):
        async with redis.pipeline(transaction=False) as pipe:
            for call_id in ids[i:i + batch]:
                pipe.lrange(keys.ivr_path(call_id), 0, -1)
            results = await pipe.execute()
        out.extend(p for p in (_parse(r) for r in results) if p is not None)
    return out


def parse_announcement(raw: str | None) -> tuple[str, ...]:
    """The sound names of a stored announcement value; anything that is not a sound name is dropped."""
    if not raw:
        return ()
    return tuple(f for f in raw.split(",") if ANNOUNCEMENT_RE.match(f) and ".." not in f)


async def read_announcement(redis: Redis, keys: Keys, menu: str) -> tuple[str, ...]:
    return parse_announcement(await redis.get(keys.announcement(menu)))


async def set_announcement(redis: Redis, keys: Keys, menu: str, sounds: Sequence[str],
                           ttl_seconds: int | None = None) -> None:
    """Switch the entry announcement on (sounds) or off (empty). Names are validated."""
    bad = [s for s in sounds if not ANNOUNCEMENT_RE.match(s) or ".." in s]
    if bad:
        raise ValueError(f"not sound names: {', '.join(bad)}")
    if not sounds:
        await redis.delete(keys.announcement(menu))
        return
    await redis.set(keys.announcement(menu), ",".join(sounds), ex=ttl_seconds)
