"""The lease protocol of the Redis job queues (callbacks, webhook deliveries), as Lua fragments
that each store's scripts start with.

Every lease script takes the same first three keys: KEYS[1] = due (ZSET id → due epoch),
KEYS[2] = leased (ZSET id → lease expiry), KEYS[3] = leaseinfo (HASH id → "<token> <due> <claimer>").
A job is in exactly one of due / leased; a claim moves due → leased with a fresh token, a reap
moves expired leases back to due at their original due score (at-least-once), and a holder's
write checks its token first, so a holder whose lease expired and was re-claimed cannot overwrite
the new holder.
"""

from __future__ import annotations

# ARGV[1] = id, ARGV[2] = token: the script returns 0 unless that token holds the job's lease.
TOKEN_CHECK = """
local info = redis.call('HGET', KEYS[3], ARGV[1])
if (not info) or string.sub(info, 1, #ARGV[2] + 1) ~= (ARGV[2] .. ' ') then return 0 end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
"""

# reap(now, limit): up to `limit` leases expired by `now` back to due; returns their ids.
REAP = """
local function reap(now, limit)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(expired) do
    local info = redis.call('HGET', KEYS[3], id)
    local due = now
    if info then due = string.match(info, '^%S+ (%S+)') or now end
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZADD', KEYS[1], due, id)
  end
  return expired
end
"""

# claim(now, lease seconds, limit, claimer, token prefix, row): up to `limit` jobs due by `now`
# leased to `claimer` (tokens "<prefix>.<n>"), `row(id, token, due score)` called for each;
# returns the earliest due score still waiting ('' = none).
CLAIM = """
local function claim(now, lease_seconds, limit, claimer, prefix, row)
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(limit))
  local expiry = tonumber(now) + tonumber(lease_seconds)
  for i = 1, #due, 2 do
    local id, score = due[i], due[i + 1]
    local token = prefix .. '.' .. ((i + 1) / 2)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], expiry, id)
    redis.call('HSET', KEYS[3], id, token .. ' ' .. score .. ' ' .. claimer)
    row(id, token, score)
  end
  return redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or ''
end
"""
