#!lua
-- cancel: mark an active task cancelled, or archive a task that has not started yet.
--
-- KEYS: all
-- ARGV: now, task id
-- Returns: the state letter the task was in (see _lib.lua), or nil when there is no such task.
--
-- An active task joins the `cancelled` set (a persisted flag its worker polls;
-- the caller also publishes the id). A pending, scheduled, retry or aggregating
-- task is archived with the reason "canceled" and releases its unique lock (if
-- it still owns it). Archived and completed tasks are left alone.

local id = ARGV[2]
local letter, since, extra = get_state(K, id)
if not letter then
  return false
end
if letter == 'a' then
  redis.call('SADD', K.cancelled, id)
elseif letter ~= 'x' and letter ~= 'c' then
  archive_by_hand(K, id, letter, since, extra, 'canceled')
end
return letter
