#!lua flags=no-writes
-- list_tasks: a page of the tasks in one state, in the state's natural order.
--
-- KEYS: all
-- ARGV: now, state letter (p a s r x c g), offset, limit, group ("" = every group)
-- Returns: nil when the queue does not exist, else {now, then 6 values per task:
--   id, message, state letter, next_process_at (ms, 0 = none), result (nil = none),
--   orphaned (1 = an active task whose lease expired)}.
--
-- Pending and active: FIFO. Scheduled and retry: by due time. Archived and
-- completed: by time of entry. Aggregating: oldest first (O(n) in the tasks
-- of the group, or of the queue when no group is given).

if redis.call('EXISTS', K.meta) == 0 then
  return false
end
local out = {NOW}
local ids = ids_in_state(K, ARGV[2], ARGV[5], tonumber(ARGV[3]), tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  local d = describe(K, id)
  if d and d[1] then
    out[#out + 1] = id
    for i = 1, 5 do
      out[#out + 1] = d[i]
    end
  end
end
return out
