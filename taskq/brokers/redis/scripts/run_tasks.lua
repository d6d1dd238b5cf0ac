#!lua
-- run_tasks: scheduled | retry | archived | completed | aggregating -> pending, for one
-- task or a chunk of one state.
--
-- KEYS: all
-- ARGV: now, task id ("" = select by state), state letter, group ("" = all), limit
-- Returns: {"Q"} unknown queue, {"N"} no such task, {"S", letter} not allowed in
--   that state (pending or active; nothing changed), else {"OK", how many moved}.
--
-- An archived task gets its full retry budget again (retried and last_error
-- cleared); a completed one loses its completed_at.

local want, ids, refusal = by_hand_targets(K, ARGV)
if refusal then
  return refusal
end
if want == 'p' or want == 'a' then
  return {'S', want}
end
for _, task in ipairs(ids) do
  local letter, since, extra = get_state(K, task)
  detach(K, task, letter, since, extra)
  if letter == 'x' then
    patch_message(K, task, function(msg)
      msg.retried = nil
      msg.last_error = nil
    end)
  elseif letter == 'c' then
    patch_message(K, task, function(msg)
      msg.completed_at = nil
    end)
  end
  to_pending(K, task, false)
end
notify(K, #ids)
return {'OK', #ids}
