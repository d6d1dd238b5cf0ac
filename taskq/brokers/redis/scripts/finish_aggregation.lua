#!lua
-- finish_aggregation: aggregation set -> one new pending task; the set and its members are deleted.
--
-- KEYS: all
-- ARGV: now, group, set id, new task id, new message
-- Returns: 1 done; 0 the set is gone (finished already: nothing stored);
--   -1 the new id is used by another task (nothing changed).
--
-- The new task may reuse the id of one of the set's members.

local group, set_id, id = ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', K.agg_set_groups, set_id) ~= group then
  return 0
end
local letter = get_state(K, id)
if letter and not (letter == 'G' and redis.call('HGET', K.task_groups, id) == group .. NUL .. set_id) then
  return -1
end
drop_set(K, set_id)
redis.call('HSET', K.messages, id, ARGV[5])
to_pending(K, id, false)
notify(K, 1)
return 1
