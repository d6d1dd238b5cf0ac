#!lua
-- record_event: append to a scheduler entry's enqueue history, keeping the newest.
--
-- KEYS: history   (ZSET task id -> enqueued_at ms)
-- ARGV: now, task id, enqueued_at (ms), keep
-- Returns: 1.

redis.call('ZADD', K.history, tonumber(ARGV[3]), ARGV[2])
redis.call('ZREMRANGEBYRANK', K.history, 0, -(tonumber(ARGV[4]) + 1))
return 1
