#!lua
-- fleet_clear: remove one member's published state.
--
-- KEYS: index data
-- ARGV: now, id
-- Returns: 1.

redis.call('ZREM', K.index, ARGV[2])
redis.call('HDEL', K.data, ARGV[2])
return 1
