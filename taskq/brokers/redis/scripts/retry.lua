#!lua
-- retry: active -> retry, due `delay` ms from now.
--
-- KEYS: meta messages states active leases tokens cancelled retry stats
-- ARGV: now, task id, token, delay (ms), error text, is_failure ("1" or "0")
-- Returns: 1 applied, 0 lease lost (nothing changed).
--
-- Stores the error as last_error and now as last_failed_at; a failure also
-- increments retried and counts the task processed and failed.

local id, token, delay, err = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local failure = ARGV[6] == '1'
if not holds(K, id, token) then
  return 0
end
leave_active(K, id)
patch_message(K, id, function(msg)
  msg.last_error = err
  msg.last_failed_at = NOW
  if failure then
    msg.retried = (tonumber(msg.retried) or 0) + 1
  end
end)
to_scored(K, id, 'r', K.retry, tscore(NOW + math.max(delay, 0), next_seq(K, 1)))
if failure then
  count(K, 1, 1)
end
return 1
