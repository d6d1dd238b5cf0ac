#!lua
-- requeue: active -> pending, at the head of the queue, without spending a retry.
--
-- KEYS: states active leases tokens cancelled pending paused notify
-- ARGV: now, task id, token
-- Returns: 1 applied, 0 lease lost (nothing changed).

local id, token = ARGV[2], ARGV[3]
if not holds(K, id, token) then
  return 0
end
leave_active(K, id)
to_pending(K, id, true)
notify(K, 1)
return 1
