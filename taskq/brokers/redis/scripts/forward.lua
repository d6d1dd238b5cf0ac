#!lua
-- forward: scheduled | retry -> pending (or aggregating, for a task with a group) when due.
--
-- KEYS: meta states scheduled retry pending aggregating groups task_groups paused notify
-- ARGV: now, limit
-- Returns: how many tasks moved (at most `limit`; scheduled first, then retry).

local limit = tonumber(ARGV[2])
local moved, became_pending = 0, 0
for _, zset in ipairs({K.scheduled, K.retry}) do
  if moved >= limit then
    break
  end
  -- scores carry a sub-millisecond tie-breaker: due means score < now + 1
  local ids = redis.call('ZRANGEBYSCORE', zset, '-inf', '(' .. fmt(NOW + 1), 'LIMIT', 0, limit - moved)
  for _, id in ipairs(ids) do
    redis.call('ZREM', zset, id)
    became_pending = became_pending + to_ready(K, id)
    moved = moved + 1
  end
end
notify(K, became_pending)
return moved
