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
