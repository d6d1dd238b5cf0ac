#!lua
-- claim_tick: let exactly one scheduler enqueue a periodic entry's tick.
--
-- KEYS: claims   (ZSET "<entry id> NUL <tick>" -> claim expiry ms)
-- ARGV: now, entry id, tick (epoch ms), ttl (ms)
-- Returns: 1 claimed by this call, 0 claimed already by another caller.

redis.call('ZREMRANGEBYSCORE', K.claims, '-inf', NOW)
local member = ARGV[2] .. NUL .. ARGV[3]
if redis.call('ZSCORE', K.claims, member) then
  return 0
end
redis.call('ZADD', K.claims, NOW + tonumber(ARGV[4]), member)
return 1
