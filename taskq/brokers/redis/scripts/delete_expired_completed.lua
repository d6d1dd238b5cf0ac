#!lua
-- delete_expired_completed: completed -> deleted once the retention has ended (janitor).
--
-- KEYS: messages states completed completed_expiry results task_groups
-- ARGV: now, limit
-- Returns: how many tasks were deleted (at most `limit`).

local limit = tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', K.completed_expiry, '-inf', NOW, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', K.completed, id)
  redis.call('ZREM', K.completed_expiry, id)
  forget(K, id)
end
return #ids
