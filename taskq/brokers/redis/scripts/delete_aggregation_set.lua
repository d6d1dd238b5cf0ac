#!lua
-- delete_aggregation_set: delete an aggregation set and its member tasks.
--
-- KEYS: all
-- ARGV: now, group, set id
-- Returns: 1 deleted, 0 no such set for that group (nothing changed).

local group, set_id = ARGV[2], ARGV[3]
if redis.call('HGET', K.agg_set_groups, set_id) ~= group then
  return 0
end
drop_set(K, set_id)
return 1
