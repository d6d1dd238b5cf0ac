#!lua
-- fleet_write: publish one member's state (a server, or a scheduler's entries) until now + ttl.
--
-- KEYS: index data   (fleet keys: ZSET id -> expiry ms, HASH id -> JSON)
-- ARGV: now, id, ttl (ms), JSON state
-- Returns: 1.
--
-- Also forgets up to 32 members that expired (readers skip expired ones anyway).

local id, ttl = ARGV[2], tonumber(ARGV[3])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', K.index, '-inf', NOW, 'LIMIT', 0, 32)) do
  redis.call('ZREM', K.index, gone)
  redis.call('HDEL', K.data, gone)
end
redis.call('ZADD', K.index, NOW + ttl, id)
redis.call('HSET', K.data, id, ARGV[4])
return 1
