#!lua
-- write_result: store the result of an active task (fenced; the task stays active).
--
-- KEYS: leases tokens results
-- ARGV: now, task id, token, result bytes
-- Returns: 1 stored, 0 lease lost (nothing changed).

local id, token = ARGV[2], ARGV[3]
if not holds(K, id, token) then
  return 0
end
redis.call('HSET', K.results, id, ARGV[4])
return 1
