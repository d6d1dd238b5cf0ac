#!lua flags=no-writes
-- expired_leases: list active tasks whose lease expired, or that have no lease at all.
--
-- KEYS: active leases
-- ARGV: now, limit
-- Returns: {task id, ...}, expired leases first (oldest expiry first), then
--   active tasks without a lease (which only a crash or a bug can leave).

local limit = tonumber(ARGV[2])
return expired_or_unleased(K, limit)
