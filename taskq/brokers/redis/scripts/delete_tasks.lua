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

local want, ids, refusal = by_hand_targets(K, ARGV)
if refusal then
  return refusal
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
