#!lua
-- enqueue: (new) -> pending | scheduled | aggregating, for a batch of new tasks of one queue.
--
-- KEYS: meta messages states pending scheduled aggregating groups task_groups task_unique unique_expiry unique_owner paused notify
-- ARGV: now, a layout ("6" or "2"), then per task either 6 values:
--   id, message (encoded TaskMessage), process_at (epoch ms; not in the future = now),
--   group ("" = none), unique_key ("" = none), unique_ttl (ms; a lock is taken when > 0)
-- or, with layout "2", only id and message: a batch of plain tasks (due now, no
-- group, no unique lock, each message with its enqueued_at), which all go to
-- pending without a state entry (pending since their enqueued_at; see _lib).
-- Returns: {registered, code...}: registered is 1 when this call created the queue
--   (the caller then adds it to the global queue set); one code per task, in order:
--   "p" pending, "s" scheduled, "g" aggregating, "C" the id exists, "D" the unique lock is held.
--
-- A task goes to scheduled when process_at is in the future, else to its group
-- when it has one, else to pending. Each task is checked before it is written.
--
-- The writes every accepted task needs (its message, the pending state of the
-- full layout and the pending list entry) are collected and issued once per
-- batch as variadic HSET/LPUSH calls, in the tasks' order: one redis.call per
-- task instead of four. The ids already stored are read from the messages hash
-- (every task has a message; a pending task may have no state) with one HMGET
-- per 1000 ids, and a table of the batch's own ids catches a repeated id within it.

local registered = redis.call('HSETNX', K.meta, 'created', fmt(NOW))
local out = {registered}
local messages, states, pending = {}, {}, {}
local seen = {}
local pending_state = 'p' .. fmt(NOW)
local pruned = false
local stride = tonumber(ARGV[2])
local ids = {}
for i = 3, #ARGV, stride do
  ids[#ids + 1] = ARGV[i]
end
local stored = {}
for first = 1, #ids, 1000 do
  local found = redis.call('HMGET', K.messages, unpack(ids, first, math.min(first + 999, #ids)))
  for k = 1, #found do
    stored[first + k - 1] = found[k] ~= false
  end
end
local n = 0
if stride == 2 then
  for i = 3, #ARGV, 2 do
    n = n + 1
    local id = ARGV[i]
    if seen[id] or stored[n] then
      out[#out + 1] = 'C'
    else
      seen[id] = true
      messages[#messages + 1] = id
      messages[#messages + 1] = ARGV[i + 1]
      pending[#pending + 1] = id
      out[#out + 1] = 'p'
    end
  end
end
-- The full layout (this loop runs no step for layout "2").
for i = 3, stride == 6 and #ARGV or 0, 6 do
  n = n + 1
  local id, message, group, ukey = ARGV[i], ARGV[i + 1], ARGV[i + 3], ARGV[i + 4]
  local process_at, unique_ttl = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 5])
  local lock = ukey ~= '' and unique_ttl > 0
  if lock and not pruned then
    prune_unique(K)
    pruned = true
  end
  if seen[id] or stored[n] then
    out[#out + 1] = 'C'
  elseif lock and unique_held(K, ukey) then
    out[#out + 1] = 'D'
  else
    seen[id] = true
    messages[#messages + 1] = id
    messages[#messages + 1] = message
    if process_at > NOW then
      if group ~= '' then
        redis.call('HSET', K.task_groups, id, group)
      end
      to_scored(K, id, 's', K.scheduled, tscore(process_at, next_seq(K, 1)))
      out[#out + 1] = 's'
    elseif group ~= '' then
      to_group(K, id, group, NOW, order_of(NOW, next_seq(K, 1)))
      out[#out + 1] = 'g'
    else
      states[#states + 1] = id
      states[#states + 1] = pending_state
      pending[#pending + 1] = id
      out[#out + 1] = 'p'
    end
    if lock then
      take_unique(K, ukey, id, math.max(process_at, NOW) + unique_ttl)
    end
  end
end
variadic('HSET', K.messages, messages)
variadic('HSET', K.states, states)
variadic('LPUSH', K.pending, pending)
notify(K, #pending)
return out
