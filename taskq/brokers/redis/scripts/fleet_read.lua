#!lua flags=no-writes
-- fleet_read: the states of every member that has not expired.
--
-- KEYS: index data
-- ARGV: now
-- Returns: {id, JSON state, id, JSON state, ...} ordered by id.

local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.index, '(' .. fmt(NOW), '+inf')) do
  local state = redis.call('HGET', K.data, id)
  if state then
    out[#out + 1] = id
    out[#out + 1] = state
  end
end
return out
