#!lua
-- dequeue: pending -> active under a lease, from several queues in priority order.
--
-- KEYS: meta paused pending messages states active leases tokens notify (repeated per queue)
-- ARGV: now, count, lease (ms), token prefix (random per call)
-- Returns: {now, then 5 values per task: queue position (0 = first queue), task id,
--   message, token, pending_since}; at most `count` tasks: all the first queue has,
--   then the next queue, and so on.
--
-- Paused queues are skipped. Each task gets a fresh token (prefix .. n) and a
-- lease ending now + lease. A queue's notify list (the wake-up tokens a waiting
-- consumer blocks on) is cleared when its pending list empties, and refilled
-- when tasks remain, so that another waiting consumer wakes up for them.

local wanted, lease, prefix = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local out = {NOW}
local taken = 0
for g = 0, #KEYS / KEY_COUNT - 1 do
  if taken >= wanted then
    break
  end
  local Q = keyset(g)
  if redis.call('EXISTS', Q.paused) == 1 then
    redis.call('DEL', Q.notify)
  else
    local ids = redis.call('RPOP', Q.pending, wanted - taken)
    if ids then
      local seq = next_seq(Q, #ids)
      for n, id in ipairs(ids) do
        local message = redis.call('HGET', Q.messages, id)
        local letter, since = get_state(Q, id)
        -- an id whose task is not pending (left by a crash or a bug) is dropped
        if message and letter == 'p' then
          taken = taken + 1
          local token = prefix .. fmt(taken)
          redis.call('ZADD', Q.active, tscore(NOW, seq + n - 1), id)
          redis.call('ZADD', Q.leases, NOW + lease, id)
          redis.call('HSET', Q.tokens, id, token)
          set_state(Q, id, 'a', since)
          out[#out + 1] = g
          out[#out + 1] = id
          out[#out + 1] = message
          out[#out + 1] = token
          out[#out + 1] = since
        end
      end
    end
    if redis.call('LLEN', Q.pending) == 0 then
      redis.call('DEL', Q.notify)
    elseif redis.call('LLEN', Q.notify) == 0 then
      redis.call('LPUSH', Q.notify, '1')
    end
  end
end
return out
