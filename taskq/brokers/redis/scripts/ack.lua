#!lua
-- ack: active -> deleted (done) or active -> completed (complete), for a batch of tasks.
--
-- KEYS: meta messages states active leases tokens cancelled completed completed_expiry results task_groups task_unique unique_expiry unique_owner stats
-- ARGV: now, then triples: task id, token, retention (ms; -1 deletes the task)
-- Returns: {1 or 0 per triple}: 1 applied, 0 lease lost (stale token or expired
--   lease; nothing changed for that task).
--
-- Releases the task's unique lock and counts it processed. A completed task
-- keeps its result; completed ZSET score = completion time, completed_expiry
-- score = when the janitor may delete it.

local out = {}
local processed = 0
for i = 2, #ARGV, 3 do
  local id, token, retention = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if holds(K, id, token) then
    leave_active(K, id)
    release_unique(K, id)
    if retention >= 0 then
      patch_message(K, id, function(msg)
        msg.completed_at = NOW
      end)
      redis.call('ZADD', K.completed_expiry, NOW + retention, id)
      to_scored(K, id, 'c', K.completed, tscore(NOW, next_seq(K, 1)))
    else
      forget(K, id)
    end
    processed = processed + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
count(K, processed, 0)
return out
