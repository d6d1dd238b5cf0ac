#!lua
-- delete_tasks: any state but active -> deleted, for one task or a chunk of one state.
--
-- KEYS: all
-- ARGV: now, task id ("" = select by state), state letter, group ("" = all), limit
-- Returns: {"Q"} unknown queue, {"N"} no such task, {"S", letter} not allowed in
--   that state (nothing changed), else {"OK", how many were deleted}.
--
-- Releases each task's unique lock. With a state, deletes at most `limit`
-- tasks, oldest first; the caller repeats until it gets 0.

if redis.call('EXISTS', K.meta) == 0 then
  return {'Q'}
end
local id, want, group, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local ids
if id ~= '' then
  local letter = get_state(K, id)
  if not letter then
    return {'N'}
  end
  want, ids = letter, {id}
else
  ids = ids_in_state(K, want, group, 0, limit)
end
if want == 'a' then
  return {'S', want}
end
for _, task in ipairs(ids) do
  detach(K, task, get_state(K, task))
  release_unique(K, task)
  forget(K, task)
end
return {'OK', #ids}
