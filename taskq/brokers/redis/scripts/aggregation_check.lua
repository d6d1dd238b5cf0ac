#!lua
-- aggregation_check: aggregating (group) -> aggregating (a new aggregation set) when ready.
--
-- KEYS: all
-- ARGV: now, group, new set id, grace_period, max_delay, max_size (ms, ms, count; 0 = off)
-- Returns: the set id when the group was ready and its oldest members (up to
--   max_size, or all) moved into the set; nil otherwise.
--
-- Ready when it holds max_size tasks or more, or its oldest member is max_delay
-- old, or its newest member is grace_period old.

local group, set_id = ARGV[2], ARGV[3]
local grace, max_delay, max_size = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local lo, hi = lex_range(group)
local size = redis.call('ZLEXCOUNT', K.aggregating, lo, hi)
if size == 0 then
  return false
end
local _, oldest = parse_member(redis.call('ZRANGEBYLEX', K.aggregating, lo, hi, 'LIMIT', 0, 1)[1])
local _, newest = parse_member(redis.call('ZREVRANGEBYLEX', K.aggregating, hi, lo, 'LIMIT', 0, 1)[1])
local ready = (max_size > 0 and size >= max_size)
  or (max_delay > 0 and NOW - tonumber(string.sub(oldest, 1, 15)) >= max_delay)
  or NOW - tonumber(string.sub(newest, 1, 15)) >= grace
if not ready then
  return false
end
local take = size
if max_size > 0 and max_size < size then
  take = max_size
end
local members = redis.call('ZRANGEBYLEX', K.aggregating, lo, hi, 'LIMIT', 0, take)
for _, m in ipairs(members) do
  local id, order = parse_member(m)
  redis.call('ZREM', K.aggregating, m)
  redis.call('ZADD', K.agg_set_members, 0, set_id .. NUL .. order .. NUL .. id)
  redis.call('HSET', K.task_groups, id, group .. NUL .. set_id)
  set_state(K, id, 'G', tonumber(string.sub(order, 1, 15)), string.sub(order, 16))
end
group_size_add(K, group, -#members)
redis.call('ZADD', K.agg_sets, NOW, set_id)
redis.call('HSET', K.agg_set_groups, set_id, group)
return set_id
