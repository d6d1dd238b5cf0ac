#!lua flags=no-writes
-- get_task: one task, in whatever state it is.
--
-- KEYS: all
-- ARGV: now, task id
-- Returns: {"Q"} unknown queue, {"N"} no such task, else {"OK", message,
--   state letter, next_process_at, result (nil = none), orphaned (0/1)}.

if redis.call('EXISTS', K.meta) == 0 then
  return {'Q'}
end
local d = describe(K, ARGV[2])
if not d or not d[1] then
  return {'N'}
end
return {'OK', d[1], d[2], d[3], d[4], d[5]}
