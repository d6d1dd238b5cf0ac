#!lua flags=no-writes
-- queue_stats: a snapshot of one queue.
--
-- KEYS: all
-- ARGV: now
-- Returns: nil when the queue does not exist, else {now, size, pending, active,
--   scheduled, retry, archived, completed, aggregating, groups, paused (0/1),
--   pending_since of the next pending task (0 = none), processed today,
--   failed today, processed in total, failed in total}.

if redis.call('EXISTS', K.meta) == 0 then
  return false
end
local since = 0
local head = redis.call('LINDEX', K.pending, -1)
if head then
  local _, s = get_state(K, head)
  since = s or 0
end
local day = fmt(math.floor(NOW / DAY_MS))
local counts = redis.call('HMGET', K.stats, 'p:' .. day, 'f:' .. day, 'processed', 'failed')
return {
  NOW,
  redis.call('HLEN', K.messages),
  redis.call('LLEN', K.pending),
  redis.call('ZCARD', K.active),
  redis.call('ZCARD', K.scheduled),
  redis.call('ZCARD', K.retry),
  redis.call('ZCARD', K.archived),
  redis.call('ZCARD', K.completed),
  redis.call('ZCARD', K.aggregating) + redis.call('ZCARD', K.agg_set_members),
  redis.call('HLEN', K.groups),
  redis.call('EXISTS', K.paused),
  since,
  tonumber(counts[1]) or 0,
  tonumber(counts[2]) or 0,
  tonumber(counts[3]) or 0,
  tonumber(counts[4]) or 0,
}
