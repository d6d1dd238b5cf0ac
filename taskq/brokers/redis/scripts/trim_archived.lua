#!lua
-- trim_archived: archived -> deleted beyond a size or an age bound (janitor).
--
-- KEYS: messages states archived task_groups results task_unique unique_expiry unique_owner
-- ARGV: now, max_size ("" = no bound), max_age ms ("" = no bound), limit
-- Returns: how many tasks were deleted (at most `limit`), oldest first.
--
-- The archive is ordered by archive time, so each bound cuts a prefix of it and
-- the longer prefix goes. Each task goes as delete_tasks deletes it: all of its
-- data (forget) and its unique lock if it still owns one (release_unique).

local max_size, max_age, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local how_many = 0
if max_size then
  how_many = math.max(redis.call('ZCARD', K.archived) - max_size, 0)
end
if max_age and how_many < limit then
  -- a score is ms + a fraction: archived at ms <= NOW - max_age is a score below that + 1
  local below = '(' .. fmt(NOW - max_age + 1)
  local old = redis.call('ZRANGEBYSCORE', K.archived, '-inf', below, 'LIMIT', 0, limit)
  how_many = math.max(how_many, #old)
end
how_many = math.min(how_many, limit)
if how_many <= 0 then
  return 0
end
local ids = redis.call('ZRANGE', K.archived, 0, how_many - 1)
for _, id in ipairs(ids) do
  release_unique(K, id)
  forget(K, id)
end
redis.call('ZREMRANGEBYRANK', K.archived, 0, how_many - 1)
return #ids
