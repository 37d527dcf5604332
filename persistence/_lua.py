"""The Lua scripts of ``RedisStore``; each touches the keys of one partition only.

A script runs atomically, but Redis does not roll back a script that fails halfway, so every
script that writes checks everything first and only then writes; the first write is the one
that could be refused (OOM), so a refusal leaves nothing behind. Since Redis 7 a script is
replicated and written to the AOF as one MULTI/EXEC of its effects, so a crash never leaves half
of one in the AOF either.

Errors are returned as ``CAPFLOW_<CODE> <details>`` replies and turned into capflow errors by
``RedisStore``.
"""

from __future__ import annotations

from typing import Final

# Milliseconds now on the server's clock, as an exact decimal string (no float formatting).
_NOW_MS: Final = """
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end
"""

# KEYS[1] journal stream, KEYS[2] dedupe zset.
# ARGV: (has_key "1"|"0", dedupe_key, payload) per entry.
# Returns one stream id per entry, or false (nil) where the dedupe key was seen before,
# including earlier in the same call.
APPEND: Final = (
    _NOW_MS
    + """
local now = now_ms()
local ids = {}
for i = 1, #ARGV, 3 do
  local has_key, key, payload = ARGV[i] == '1', ARGV[i + 1], ARGV[i + 2]
  if has_key and redis.call('ZSCORE', KEYS[2], key) then
    ids[#ids + 1] = false
  elseif has_key then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'k', key, 'p', payload)
    redis.call('ZADD', KEYS[2], now, key)
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'p', payload)
  end
end
return ids
"""
)

# KEYS[1] lease, KEYS[2] fence counter. ARGV[1] holder, ARGV[2] ttl ms.
# A live lease of another holder refuses; otherwise a new token (INCR: never reused, survives
# lease expiry) and the lease "<token> <holder>" with the ttl.
ACQUIRE: Final = """
local lease = redis.call('GET', KEYS[1])
if lease then
  local holder = string.sub(lease, string.find(lease, ' ', 1, true) + 1)
  if holder ~= ARGV[1] then
    return redis.error_reply('CAPFLOW_LEASED ' .. redis.call('PTTL', KEYS[1]) .. ' ' .. lease)
  end
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
return token
"""

# KEYS[1] lease. ARGV[1] expected lease value "<token> <holder>", ARGV[2] ttl ms.
RENEW: Final = """
local lease = redis.call('GET', KEYS[1])
if lease ~= ARGV[1] then
  return redis.error_reply('CAPFLOW_STALE ' .. (lease or ''))
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1] lease, KEYS[2] fence counter. ARGV[1] lease value "<token> <holder>", ARGV[2] token,
# ARGV[3] ttl ms. A live lease of this value is renewed; a lapsed one is set again only if no
# ACQUIRE has happened since (the counter is still this token).
REVIVE: Final = """
local lease = redis.call('GET', KEYS[1])
if lease == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if lease or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return redis.error_reply('CAPFLOW_STALE ' .. (lease or ''))
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 2
"""

# KEYS[1] lease. ARGV[1] expected lease value.
RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS[1] lease, KEYS[2] journal stream, KEYS[3..2+n] snapshot hashes.
# ARGV[1] group, ARGV[2] expected lease value, ARGV[3] n,
# ARGV[2+2i], ARGV[3+2i]: offset and envelope of snapshot i, then the entry ids to ack.
#
# 1. the lease must hold exactly this holder and token (a zombie, an expired lease, a newer
#    incarnation of the same holder: refused);
# 2. no snapshot may move its offset back (HGET also fails on a key of the wrong type, still
#    before any write);
# 3. XACK (a missing group or stream acks nothing: it cannot fail), then the snapshot hashes.
COMMIT: Final = """
local function num_lt(a, b)  -- canonical unsigned decimals
  if #a ~= #b then return #a < #b end
  return a < b
end
local function id_lt(a, b)
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local ma, mb = string.sub(a, 1, da - 1), string.sub(b, 1, db - 1)
  if ma ~= mb then return num_lt(ma, mb) end
  return num_lt(string.sub(a, da + 1), string.sub(b, db + 1))
end

local lease = redis.call('GET', KEYS[1])
if lease ~= ARGV[2] then
  return redis.error_reply('CAPFLOW_STALE ' .. (lease or ''))
end
local n = tonumber(ARGV[3])
for i = 1, n do
  local stored = redis.call('HGET', KEYS[2 + i], 'o')
  if stored and id_lt(ARGV[2 + 2 * i], stored) then
    return redis.error_reply('CAPFLOW_BACKWARDS ' .. i .. ' ' .. stored)
  end
end
local acked = 0
for i = 4 + 2 * n, #ARGV, 1000 do  -- unpack() has a stack limit
  acked = acked + redis.call('XACK', KEYS[2], ARGV[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
for i = 1, n do
  redis.call('HSET', KEYS[2 + i], 'o', ARGV[2 + 2 * i], 'e', ARGV[3 + 2 * i])
end
return acked
"""

# KEYS[1] dedupe zset. ARGV[1] age in ms: forget keys ingested before now - age.
PRUNE_SEEN: Final = (
    _NOW_MS
    + """
local cutoff = tonumber(now_ms()) - tonumber(ARGV[1])
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', cutoff))
"""
)
