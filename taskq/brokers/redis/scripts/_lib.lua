-- Helpers shared by every taskq script. The loader (scripts.py) builds each
-- script as: the script's shebang line, a generated key table `K` (key name ->
-- KEYS[i], from the script's "KEYS:" header line), the definitions of this file
-- that the script uses, the script body.
--
-- Conventions:
--   ARGV[1] is "now" in epoch ms, or "" to use the server's TIME.
--   states HASH: task id -> <one letter><entered-at ms>[:<seq>], the letter being
--     p pending, a active, s scheduled, r retry, x archived, c completed,
--     g aggregating (in its group), G aggregating (in an aggregation set).
--     For "a" the time is when the task became pending (0 = its message's
--     enqueued_at); for g/G it is when it joined its group, and <seq> orders
--     members that joined in the same ms.
--     A task enqueued straight to pending by a plain batch (enqueue's layout
--     "2") has no entry: a task with a message and no state is pending, since
--     its message's enqueued_at. That saves a hash entry (about 100 bytes) and
--     a write per task of the common bulk load. Every task has a message, so
--     the messages hash is the index of the queue's tasks.
--   Sorted sets ordered by time use score = ms + (seq mod 1024) / 1024, so that
--   tasks entering in the same millisecond keep their order; floor() gives ms.
--   Group and aggregation-set members are lexicographic ZSET members:
--     <group or set id> NUL <order> NUL <task id>, <order> = 15-digit ms .. 12-digit seq.
-- Every script validates before its first write, so an error reply never
-- leaves a half-applied transition.

local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local NOW = tonumber(ARGV[1]) or server_now()
local DAY_MS = 86400000
local KEEP_DAYS = 366
local NOTIFY_CAP = 8
local NUL = string.char(0)
local ONE = string.char(1)

local function fmt(n)
  return string.format('%d', n)
end

-- Per-queue sequence: orders equal timestamps. Reserves n numbers, returns the first.
local function next_seq(K, n)
  return redis.call('HINCRBY', K.meta, 'seq', n) - n + 1
end

local function tscore(ms, seq)
  return ms + (seq % 1024) / 1024
end

local function order_of(ms, seq)
  return string.format('%015d%012d', ms, seq)
end

-- The enqueued_at (epoch ms) of an encoded message, 0 when it has none. Reads
-- the field's text rather than decoding the message (a payload is base64 and
-- other strings are JSON-escaped, so the pattern cannot match inside them).
local function enqueued_at_of(message)
  return tonumber(string.match(message, '"enqueued_at"%s*:%s*(%d+)')) or 0
end

-- state letter, entered-at ms and the optional ":<extra>" part; nil when there is
-- no such task. A task without a state entry is pending, since its enqueued_at.
local function get_state(K, id)
  local v = redis.call('HGET', K.states, id)
  if not v then
    local message = redis.call('HGET', K.messages, id)
    if message then
      return 'p', enqueued_at_of(message), nil
    end
    return nil, 0, nil
  end
  local colon = string.find(v, ':', 2, true)
  if colon then
    return string.sub(v, 1, 1), tonumber(string.sub(v, 2, colon - 1)), string.sub(v, colon + 1)
  end
  return string.sub(v, 1, 1), tonumber(string.sub(v, 2)), nil
end

local function set_state(K, id, letter, since, extra)
  local v = letter .. fmt(since)
  if extra then
    v = v .. ':' .. extra
  end
  redis.call('HSET', K.states, id, v)
end

-- the id and order encoded in a group or set member
local function parse_member(m)
  local p = string.find(m, NUL, 1, true)
  return string.sub(m, p + 29), string.sub(m, p + 1, p + 27)
end

local function lex_range(name)
  return '[' .. name .. NUL, '(' .. name .. ONE
end

-- Run `cmd key items...` in calls of at most 1000 items (Lua's unpack has a
-- stack limit); items stay in order. Nothing is sent for an empty list.
local function variadic(cmd, key, items)
  for first = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, first, math.min(first + 999, #items)))
  end
end

local function notify(K, n)
  if n <= 0 or redis.call('EXISTS', K.paused) == 1 then
    return
  end
  local room = math.min(n, NOTIFY_CAP - redis.call('LLEN', K.notify))
  if room > 0 then
    local tokens = {}
    for i = 1, room do
      tokens[i] = '1'
    end
    redis.call('LPUSH', K.notify, unpack(tokens))
  end
end

-- true when the task's lease is held with `token` and has not expired
local function holds(K, id, token)
  if redis.call('HGET', K.tokens, id) ~= token then
    return false
  end
  local expiry = redis.call('ZSCORE', K.leases, id)
  return expiry ~= false and tonumber(expiry) > NOW
end

local function leave_active(K, id)
  redis.call('ZREM', K.active, id)
  redis.call('ZREM', K.leases, id)
  redis.call('HDEL', K.tokens, id)
  redis.call('SREM', K.cancelled, id)
end

local function count(K, processed, failed)
  if processed <= 0 then
    return
  end
  local day = math.floor(NOW / DAY_MS)
  local first = redis.call('HINCRBY', K.stats, 'p:' .. fmt(day), processed) == processed
  redis.call('HINCRBY', K.stats, 'processed', processed)
  if failed > 0 then
    redis.call('HINCRBY', K.stats, 'f:' .. fmt(day), failed)
    redis.call('HINCRBY', K.stats, 'failed', failed)
  end
  if first then
    -- once a day: forget daily counts older than KEEP_DAYS
    for _, field in ipairs(redis.call('HKEYS', K.stats)) do
      local d = tonumber(string.match(field, '^[pf]:(%d+)$'))
      if d and day - d > KEEP_DAYS then
        redis.call('HDEL', K.stats, field)
      end
    end
  end
end

-- Decode a stored message, let `change` edit it, store it again. A message
-- that is not valid JSON is left as it is (it is archived by the caller).
local function patch_message(K, id, change)
  local ok, msg = pcall(cjson.decode, redis.call('HGET', K.messages, id))
  if ok and type(msg) == 'table' then
    change(msg)
    redis.call('HSET', K.messages, id, cjson.encode(msg))
  end
end

-- Unique locks: unique_expiry ZSET key -> expiry ms, unique_owner HASH key -> id,
-- task_unique HASH id -> key (the lock a task took, to release it later).
local function prune_unique(K)
  local expired = redis.call('ZRANGEBYSCORE', K.unique_expiry, '-inf', NOW, 'LIMIT', 0, 16)
  for _, ukey in ipairs(expired) do
    redis.call('ZREM', K.unique_expiry, ukey)
    redis.call('HDEL', K.unique_owner, ukey)
  end
end

local function unique_held(K, ukey)
  local expiry = redis.call('ZSCORE', K.unique_expiry, ukey)
  return expiry ~= false and tonumber(expiry) > NOW
end

local function take_unique(K, ukey, id, expiry)
  redis.call('ZADD', K.unique_expiry, expiry, ukey)
  redis.call('HSET', K.unique_owner, ukey, id)
  redis.call('HSET', K.task_unique, id, ukey)
end

local function release_unique(K, id)
  local ukey = redis.call('HGET', K.task_unique, id)
  if not ukey then
    return
  end
  redis.call('HDEL', K.task_unique, id)
  if redis.call('HGET', K.unique_owner, ukey) == id then
    redis.call('ZREM', K.unique_expiry, ukey)
    redis.call('HDEL', K.unique_owner, ukey)
  end
end

local function group_size_add(K, group, delta)
  if redis.call('HINCRBY', K.groups, group, delta) <= 0 then
    redis.call('HDEL', K.groups, group)
  end
end

local function to_pending(K, id, head)
  if head then
    redis.call('RPUSH', K.pending, id)
  else
    redis.call('LPUSH', K.pending, id)
  end
  set_state(K, id, 'p', NOW)
end

local function to_group(K, id, group, since, order)
  redis.call('ZADD', K.aggregating, 0, group .. NUL .. order .. NUL .. id)
  redis.call('HSET', K.task_groups, id, group)
  group_size_add(K, group, 1)
  set_state(K, id, 'g', since, string.sub(order, 16))
end

-- Make a task ready now: into its group if it has one, else pending.
-- Returns 1 when it became pending (for notify), else 0.
local function to_ready(K, id)
  local group = redis.call('HGET', K.task_groups, id)
  if group then
    to_group(K, id, group, NOW, order_of(NOW, next_seq(K, 1)))
    return 0
  end
  to_pending(K, id, false)
  return 1
end

local function to_scored(K, id, letter, zset, score)
  redis.call('ZADD', zset, score, id)
  set_state(K, id, letter, NOW)
end

-- Remove a task from the structure of its state (not its data).
local function detach(K, id, letter, since, extra)
  if letter == 'p' then
    redis.call('LREM', K.pending, 1, id)
  elseif letter == 'a' then
    leave_active(K, id)
  elseif letter == 's' then
    redis.call('ZREM', K.scheduled, id)
  elseif letter == 'r' then
    redis.call('ZREM', K.retry, id)
  elseif letter == 'x' then
    redis.call('ZREM', K.archived, id)
  elseif letter == 'c' then
    redis.call('ZREM', K.completed, id)
    redis.call('ZREM', K.completed_expiry, id)
  elseif letter == 'g' then
    local group = redis.call('HGET', K.task_groups, id)
    redis.call('ZREM', K.aggregating, group .. NUL .. order_of(since, tonumber(extra)) .. NUL .. id)
    group_size_add(K, group, -1)
  elseif letter == 'G' then
    local v = redis.call('HGET', K.task_groups, id)
    local p = string.find(v, NUL, 1, true)
    local set_id = string.sub(v, p + 1)
    redis.call('ZREM', K.agg_set_members, set_id .. NUL .. order_of(since, tonumber(extra)) .. NUL .. id)
    redis.call('HSET', K.task_groups, id, string.sub(v, 1, p - 1))
    local lo, hi = lex_range(set_id)
    if redis.call('ZLEXCOUNT', K.agg_set_members, lo, hi) == 0 then
      redis.call('ZREM', K.agg_sets, set_id)
      redis.call('HDEL', K.agg_set_groups, set_id)
    end
  end
end

-- Delete a task's data (after detach).
local function forget(K, id)
  redis.call('HDEL', K.messages, id)
  redis.call('HDEL', K.states, id)
  redis.call('HDEL', K.task_groups, id)
  redis.call('HDEL', K.results, id)
end

-- Active ids whose lease expired, then active ids without a lease; at most limit.
local function expired_or_unleased(K, limit)
  if limit <= 0 then
    return {}
  end
  local ids = redis.call('ZRANGEBYSCORE', K.leases, '-inf', NOW, 'LIMIT', 0, limit)
  if #ids < limit and redis.call('ZCARD', K.active) > redis.call('ZCARD', K.leases) then
    local start = 0
    while #ids < limit do
      local chunk = redis.call('ZRANGE', K.active, start, start + 255)
      if #chunk == 0 then
        break
      end
      for _, id in ipairs(chunk) do
        if #ids < limit and not redis.call('ZSCORE', K.leases, id) then
          ids[#ids + 1] = id
        end
      end
      start = start + 256
    end
  end
  return ids
end

-- A task that has not started -> archived (by hand or cancelled); releases its unique lock.
local function archive_by_hand(K, id, letter, since, extra, reason)
  detach(K, id, letter, since, extra)
  release_unique(K, id)
  if reason then
    patch_message(K, id, function(msg)
      msg.last_error = reason
      msg.last_failed_at = NOW
    end)
  end
  to_scored(K, id, 'x', K.archived, tscore(NOW, next_seq(K, 1)))
end

-- Delete an aggregation set with its member tasks.
local function drop_set(K, set_id)
  local lo, hi = lex_range(set_id)
  for _, m in ipairs(redis.call('ZRANGEBYLEX', K.agg_set_members, lo, hi)) do
    local id = parse_member(m)
    release_unique(K, id)
    forget(K, id)
  end
  redis.call('ZREMRANGEBYLEX', K.agg_set_members, lo, hi)
  redis.call('ZREM', K.agg_sets, set_id)
  redis.call('HDEL', K.agg_set_groups, set_id)
end

-- The members (ids) of a group, or of all groups when group is "", including
-- those in aggregation sets, oldest first; from offset, at most limit.
local function aggregating_ids(K, group, offset, limit)
  local found = {}
  local function add(zset, lo, hi)
    for _, m in ipairs(redis.call('ZRANGEBYLEX', zset, lo, hi)) do
      local id, order = parse_member(m)
      found[#found + 1] = {order, id}
    end
  end
  if group == '' then
    add(K.aggregating, '-', '+')
    add(K.agg_set_members, '-', '+')
  else
    add(K.aggregating, lex_range(group))
    local sets = redis.call('HGETALL', K.agg_set_groups)
    for i = 1, #sets, 2 do
      if sets[i + 1] == group then
        add(K.agg_set_members, lex_range(sets[i]))
      end
    end
  end
  table.sort(found, function(a, b)
    return a[1] < b[1]
  end)
  local ids = {}
  for i = offset + 1, math.min(#found, offset + limit) do
    ids[#ids + 1] = found[i][2]
  end
  return ids
end

-- Ids in the state `letter` in the state's natural order, from offset, at most limit.
local function ids_in_state(K, letter, group, offset, limit)
  if limit <= 0 then
    return {}
  end
  if letter == 'p' then
    -- the list is consumed from the right: FIFO order reads it right to left
    local page = redis.call('LRANGE', K.pending, -(offset + limit), -(offset + 1))
    local ids = {}
    for i = #page, 1, -1 do
      ids[#ids + 1] = page[i]
    end
    return ids
  elseif letter == 'g' then
    return aggregating_ids(K, group, offset, limit)
  end
  local zsets = {a = K.active, s = K.scheduled, r = K.retry, x = K.archived, c = K.completed}
  return redis.call('ZRANGE', zsets[letter], offset, offset + limit - 1)
end

-- What a by-hand script (delete_tasks, run_tasks, archive_tasks) acts on, from its
-- ARGV (now, task id or "", state letter, group or "", limit): the named task with its
-- state, else at most limit tasks in the given state (of group, "" = all), oldest
-- first. Returns state letter, ids; or nil, nil, the reply refusing an unknown queue
-- ({"Q"}) or task ({"N"}).
local function by_hand_targets(K, argv)
  if redis.call('EXISTS', K.meta) == 0 then
    return nil, nil, {'Q'}
  end
  local id, want, group, limit = argv[2], argv[3], argv[4], tonumber(argv[5])
  if id == '' then
    return want, ids_in_state(K, want, group, 0, limit)
  end
  local letter = get_state(K, id)
  if not letter then
    return nil, nil, {'N'}
  end
  return letter, {id}
end

-- {message, letter, next_process_at, result or false, orphaned 0/1} of a task, or nil.
local function describe(K, id)
  local letter = get_state(K, id)
  if not letter then
    return nil
  end
  local next_at = 0
  if letter == 'p' then
    next_at = NOW
  elseif letter == 's' or letter == 'r' then
    local due = redis.call('ZSCORE', letter == 's' and K.scheduled or K.retry, id)
    next_at = due and math.floor(tonumber(due)) or 0
  end
  local orphaned = 0
  if letter == 'a' then
    local expiry = redis.call('ZSCORE', K.leases, id)
    if not expiry or tonumber(expiry) <= NOW then
      orphaned = 1
    end
  end
  local message = redis.call('HGET', K.messages, id)
  return {message, letter, next_at, redis.call('HGET', K.results, id), orphaned}
end
