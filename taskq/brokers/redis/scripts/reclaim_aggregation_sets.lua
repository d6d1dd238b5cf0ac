#!lua
-- reclaim_aggregation_sets: aggregation set -> its group again, for sets older than a bound.
--
-- KEYS: all
-- ARGV: now, older_than (ms)
-- Returns: how many tasks went back to their group.
--
-- Members keep their original order in the group (a crashed aggregator's set
-- is aggregated again later, as one).

local older_than = tonumber(ARGV[2])
local moved = 0
for _, set_id in ipairs(redis.call('ZRANGEBYSCORE', K.agg_sets, '-inf', '(' .. fmt(NOW - older_than))) do
  local group = redis.call('HGET', K.agg_set_groups, set_id)
  local lo, hi = lex_range(set_id)
  local members = redis.call('ZRANGEBYLEX', K.agg_set_members, lo, hi)
  for _, m in ipairs(members) do
    local id, order = parse_member(m)
    redis.call('ZADD', K.aggregating, 0, group .. NUL .. order .. NUL .. id)
    redis.call('HSET', K.task_groups, id, group)
    set_state(K, id, 'g', tonumber(string.sub(order, 1, 15)), string.sub(order, 16))
  end
  if #members > 0 then
    group_size_add(K, group, #members)
  end
  moved = moved + #members
  redis.call('ZREMRANGEBYLEX', K.agg_set_members, lo, hi)
  redis.call('ZREM', K.agg_sets, set_id)
  redis.call('HDEL', K.agg_set_groups, set_id)
end
return moved
