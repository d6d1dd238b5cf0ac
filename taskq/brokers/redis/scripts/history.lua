#!lua flags=no-writes
-- history: daily processed and failed counts of a queue (UTC days of broker time).
--
-- KEYS: stats
-- ARGV: now, days
-- Returns: {today (days since the epoch), processed, failed, processed, failed, ...}
--   for today and the days before it, newest first (daily counts are kept 366 days).

local today = math.floor(NOW / DAY_MS)
local out = {today}
for d = today, today - tonumber(ARGV[2]) + 1, -1 do
  local counts = redis.call('HMGET', K.stats, 'p:' .. fmt(d), 'f:' .. fmt(d))
  out[#out + 1] = tonumber(counts[1]) or 0
  out[#out + 1] = tonumber(counts[2]) or 0
end
return out
