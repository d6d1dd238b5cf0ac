#!lua
-- archive_tasks: pending | scheduled | retry | aggregating -> archived, by hand, for one
-- task or a chunk of one state.
--
-- KEYS: all
-- ARGV: now, task id ("" = select by state), state letter, group ("" = all), limit
-- Returns: {"Q"} unknown queue, {"N"} no such task, {"S", letter} not allowed in
--   that state (active, archived, completed; nothing changed), else {"OK", how many}.
--
-- Releases each archived task's unique lock (if the task still owns it).

local want, ids, refusal = by_hand_targets(K, ARGV)
if refusal then
  return refusal
end
if want == 'a' or want == 'x' or want == 'c' then
  return {'S', want}
end
for _, task in ipairs(ids) do
  local letter, since, extra = get_state(K, task)
  archive_by_hand(K, task, letter, since, extra, nil)
end
return {'OK', #ids}
