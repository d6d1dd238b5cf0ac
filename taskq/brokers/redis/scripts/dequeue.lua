#!lua
-- dequeue: pending -> active under a lease, from several queues in priority order.
--
-- KEYS: meta paused pending messages states active leases tokens notify (repeated per queue)
-- ARGV: now, count, lease (ms), token prefix (random per call)
-- Returns: {now, then 5 values per task: queue position (0 = first queue), task id,
--   message, token, pending_since (0: the message's enqueued_at)}; at most `count`
--   tasks: all the first queue has, then the next queue, and so on.
--
-- Paused queues are skipped. Each task gets a fresh token (prefix .. n) and a
-- lease ending now + lease. A queue's notify list (the wake-up tokens a waiting
-- consumer blocks on) is cleared when its pending list empties, and refilled
-- when tasks remain, so that another waiting consumer wakes up for them.
-- Tasks are taken in slices of at most 256, each written with one command per key.

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
    while taken < wanted do
      local ids = redis.call('RPOP', Q.pending, math.min(wanted - taken, 256))
      if not ids then
        break
      end
      local messages = redis.call('HMGET', Q.messages, unpack(ids))
      local states = redis.call('HMGET', Q.states, unpack(ids))
      local seq = next_seq(Q, #ids)
      local active, leases, tokens, entered = {}, {}, {}, {}
      for n, id in ipairs(ids) do
        local message, state = messages[n], states[n]
        -- an id whose task is not pending (left by a crash or a bug) is dropped;
        -- a task without a state entry is pending (see _lib)
        if message and (not state or string.sub(state, 1, 1) == 'p') then
          taken = taken + 1
          local token = prefix .. fmt(taken)
          local since = state and string.sub(state, 2) or '0'
          active[#active + 1] = tscore(NOW, seq + n - 1)
          active[#active + 1] = id
          leases[#leases + 1] = NOW + lease
          leases[#leases + 1] = id
          tokens[#tokens + 1] = id
          tokens[#tokens + 1] = token
          entered[#entered + 1] = id
          entered[#entered + 1] = 'a' .. since
          out[#out + 1] = g
          out[#out + 1] = id
          out[#out + 1] = message
          out[#out + 1] = token
          out[#out + 1] = tonumber(since)
        end
      end
      if #active > 0 then
        redis.call('ZADD', Q.active, unpack(active))
        redis.call('ZADD', Q.leases, unpack(leases))
        redis.call('HSET', Q.tokens, unpack(tokens))
        redis.call('HSET', Q.states, unpack(entered))
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
