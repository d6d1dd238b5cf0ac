#!lua
-- remove_queue: delete a queue and every key of it.
--
-- KEYS: all
-- ARGV: now, force ("1" or "0")
-- Returns: {"Q"} unknown queue, {"A", n} it has n active tasks, {"E", n} it holds n
--   tasks and force is "0" (nothing changed in both cases), else {"OK"}.
--
-- The caller then removes the name from the global queue set.

if redis.call('EXISTS', K.meta) == 0 then
  return {'Q'}
end
local active = redis.call('ZCARD', K.active)
if active > 0 then
  return {'A', active}
end
local size = redis.call('HLEN', K.messages)
if size > 0 and ARGV[2] ~= '1' then
  return {'E', size}
end
for _, key in ipairs(KEYS) do
  redis.call('UNLINK', key)
end
return {'OK'}
