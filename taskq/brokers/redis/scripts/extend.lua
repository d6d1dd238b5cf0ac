#!lua
-- extend: renew the leases of active tasks (heartbeat).
--
-- KEYS: leases tokens
-- ARGV: now, lease (ms), then pairs: task id, token
-- Returns: {1 or 0 per pair}: 1 extended to now + lease, 0 the token is stale or
--   the lease already expired (nothing changed for that task).

local lease = tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if holds(K, id, ARGV[i + 1]) then
    redis.call('ZADD', K.leases, NOW + lease, id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
