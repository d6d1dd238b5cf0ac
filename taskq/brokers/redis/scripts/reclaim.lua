#!lua
-- reclaim: take over active tasks whose lease expired (or that have none).
--
-- KEYS: active leases tokens messages states
-- ARGV: now, lease (ms), limit, token prefix (random per call)
-- Returns: {now, then 5 values per task: 0, task id, message, token, pending_since}
--   like dequeue.
--
-- Each task stays active with a fresh token and a lease ending now + lease, so
-- the previous holder's late transitions are refused; the caller then settles
-- it (retry or archive). An active id without a message is removed.

local lease, limit, prefix = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local out = {NOW}
local n = 0
for _, id in ipairs(expired_or_unleased(K, limit)) do
  local message = redis.call('HGET', K.messages, id)
  if message then
    n = n + 1
    local token = prefix .. fmt(n)
    local _, since = get_state(K, id)
    redis.call('ZADD', K.leases, NOW + lease, id)
    redis.call('HSET', K.tokens, id, token)
    out[#out + 1] = 0
    out[#out + 1] = id
    out[#out + 1] = message
    out[#out + 1] = token
    out[#out + 1] = since
  else
    redis.call('ZREM', K.active, id)
    redis.call('ZREM', K.leases, id)
    redis.call('HDEL', K.tokens, id)
    redis.call('HDEL', K.states, id)
  end
end
return out
