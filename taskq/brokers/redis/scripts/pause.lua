#!lua
-- pause: stop (or resume) dequeuing from a queue; enqueue and forwarding go on.
--
-- KEYS: meta paused pending notify
-- ARGV: now, "1" to pause or "0" to resume
-- Returns: 1 done, 0 the queue does not exist.
--
-- Resuming wakes waiting consumers when tasks are pending.

if redis.call('EXISTS', K.meta) == 0 then
  return 0
end
if ARGV[2] == '1' then
  redis.call('SET', K.paused, fmt(NOW))
  redis.call('DEL', K.notify)
else
  redis.call('DEL', K.paused)
  notify(K, redis.call('LLEN', K.pending))
end
return 1
