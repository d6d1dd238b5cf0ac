#!lua
-- ack: active -> deleted (done) or active -> completed (complete), for a batch of tasks.
--
-- KEYS: meta messages states active leases tokens cancelled completed completed_expiry results task_groups task_unique unique_expiry unique_owner stats
-- ARGV: now, then triples: task id, token, retention (ms; -1 deletes the task)
-- Returns: {1 or 0 per triple}: 1 applied, 0 lease lost (stale token or expired
--   lease, or the same attempt acknowledged earlier in the batch; nothing
--   changed for that task).
--
-- Releases the task's unique lock and counts it processed. A completed task
-- keeps its result; completed ZSET score = completion time, completed_expiry
-- score = when the janitor may delete it. Checks every task first, then
-- writes with one command per key for the whole batch.

local ids, tokens, retentions = {}, {}, {}
for i = 2, #ARGV, 3 do
  ids[#ids + 1] = ARGV[i]
  tokens[#tokens + 1] = ARGV[i + 1]
  retentions[#retentions + 1] = tonumber(ARGV[i + 2])
end
if #ids == 0 then
  return {}
end
local held = redis.call('HMGET', K.tokens, unpack(ids))
local expiries = redis.call('ZMSCORE', K.leases, unpack(ids))
local out, settled, deleted, completed, seen = {}, {}, {}, {}, {}
for n, id in ipairs(ids) do
  if not seen[id] and held[n] == tokens[n] and expiries[n] and tonumber(expiries[n]) > NOW then
    seen[id] = true
    settled[#settled + 1] = id
    if retentions[n] >= 0 then
      completed[#completed + 1] = n
    else
      deleted[#deleted + 1] = id
    end
    out[n] = 1
  else
    out[n] = 0
  end
end
if #settled == 0 then
  return out
end
redis.call('ZREM', K.active, unpack(settled))
redis.call('ZREM', K.leases, unpack(settled))
redis.call('HDEL', K.tokens, unpack(settled))
redis.call('SREM', K.cancelled, unpack(settled))
local ukeys = redis.call('HMGET', K.task_unique, unpack(settled))
for n, id in ipairs(settled) do
  if ukeys[n] then
    release_unique(K, id)
  end
end
if #deleted > 0 then
  redis.call('HDEL', K.messages, unpack(deleted))
  redis.call('HDEL', K.states, unpack(deleted))
  redis.call('HDEL', K.task_groups, unpack(deleted))
  redis.call('HDEL', K.results, unpack(deleted))
end
if #completed > 0 then
  local seq = next_seq(K, #completed)
  for j, n in ipairs(completed) do
    local id = ids[n]
    patch_message(K, id, function(msg)
      msg.completed_at = NOW
    end)
    redis.call('ZADD', K.completed_expiry, NOW + retentions[n], id)
    to_scored(K, id, 'c', K.completed, tscore(NOW, seq + j - 1))
  end
end
count(K, #settled, 0)
return out
