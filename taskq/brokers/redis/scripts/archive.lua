#!lua
-- archive: active -> archived (failed for good).
--
-- KEYS: meta messages states active leases tokens cancelled archived task_unique unique_expiry unique_owner stats
-- ARGV: now, task id, token, error text, release_unique ("1" or "0")
-- Returns: 1 applied, 0 lease lost (nothing changed).
--
-- Stores the reason as last_error and now as last_failed_at, counts the task
-- processed and failed, and releases its unique lock when asked to.

local id, token, err = ARGV[2], ARGV[3], ARGV[4]
if not holds(K, id, token) then
  return 0
end
leave_active(K, id)
if ARGV[5] == '1' then
  release_unique(K, id)
end
patch_message(K, id, function(msg)
  msg.last_error = err
  msg.last_failed_at = NOW
end)
to_scored(K, id, 'x', K.archived, tscore(NOW, next_seq(K, 1)))
count(K, 1, 1)
return 1
