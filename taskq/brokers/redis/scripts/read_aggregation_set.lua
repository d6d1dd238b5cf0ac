#!lua flags=no-writes
-- read_aggregation_set: the messages of an aggregation set.
--
-- KEYS: all
-- ARGV: now, group, set id
-- Returns: {id, message, id, message, ...} oldest first; empty when the set is gone or is not the group's.

local group, set_id = ARGV[2], ARGV[3]
if redis.call('HGET', K.agg_set_groups, set_id) ~= group then
  return {}
end
local out = {}
local lo, hi = lex_range(set_id)
for _, m in ipairs(redis.call('ZRANGEBYLEX', K.agg_set_members, lo, hi)) do
  local id = parse_member(m)
  local message = redis.call('HGET', K.messages, id)
  if message then
    out[#out + 1] = id
    out[#out + 1] = message
  end
end
return out
