-- distlock: acquire a lock.
--
-- KEYS[1]  the lock key (prefix + user key)
-- KEYS[2]  optional, Redlock only: the node's boot marker (when this node's data started)
-- ARGV[1]  the new holder's token: 32 lowercase hex characters
-- ARGV[2]  the lease in milliseconds
-- ARGV[3]  owner info ("host/pid/acquired-at-ms"), kept for inspection only
-- ARGV[4]  the waiter id of the asking client (no "|"), for the queue of turned-away
--          clients; empty: do not queue (Redlock), just ask for a release notice
--
-- Values have a fixed layout, so scripts slice them instead of parsing them:
--   held         "H" token(32) fence(16) ":" owner
--   held, waited "W" token(32) fence(16) ":" owner ["|" id "|" id "|" ...]  (queued clients)
--   tombstone    "T" fence(16)               a released lock, briefly: the next fence is larger
--   reserved     "R" fence(16) id "|" ...    released to the first queued client, briefly
-- The fence is the server clock in microseconds, 16 digits (so strings compare like numbers).
--
-- Reply: {1, fence}  acquired (fence as a 16-digit string)
--        {0, pttl}   held by (or reserved for) someone else; pttl is what remains of that
--        {-1}        the key holds a value distlock did not write (left untouched)
-- With KEYS[2], {1, ..} and {0, ..} carry two more entries: the boot marker and the server
-- clock (both in microseconds), so that a node that lost its data recently can be told apart.
local now = redis.call('TIME')
local usec = now[2]
local fence = now[1] .. string.rep('0', 6 - #usec) .. usec
local clock = fence
local boot
if KEYS[2] then
  boot = redis.call('GET', KEYS[2])
  if not boot then
    boot = clock
    redis.call('SET', KEYS[2], boot)
  end
end

local old = redis.pcall('SET', KEYS[1], 'H' .. ARGV[1] .. fence .. ':' .. ARGV[3],
  'NX', 'PX', ARGV[2], 'GET')
if not old then
  return boot and {1, fence, boot, clock} or {1, fence}
end
if type(old) == 'table' then
  -- WRONGTYPE: the key holds another type of value; anything else (READONLY on a demoted
  -- primary, OOM, ...) goes back to the caller as the error it is.
  if string.find(old.err, 'WRONGTYPE', 1, true) then
    return {-1}
  end
  return old
end
local state = string.sub(old, 1, 1)
local me = ARGV[4] .. '|'
if (state == 'T' and #old == 17) or (state == 'R' and #old > 18) then
  local queue = ''
  if state == 'R' then
    local waiting = string.sub(old, 18)
    if string.sub(waiting, 1, #me) ~= me then
      -- Released to the client ahead of us: queue up behind it.
      if ARGV[4] ~= '' and not string.find('|' .. waiting, '|' .. me, 1, true) then
        redis.call('APPEND', KEYS[1], me)
      end
      return boot and {0, redis.call('PTTL', KEYS[1]), boot, clock} or {0, redis.call('PTTL', KEYS[1])}
    end
    queue = string.sub(waiting, #me + 1)
  end
  local last = string.sub(old, 2, 17)
  if fence <= last then
    fence = string.format('%016.0f', tonumber(last) + 1)
  end
  local value = ARGV[1] .. fence .. ':' .. ARGV[3]
  if queue == '' then
    value = 'H' .. value
  else
    value = 'W' .. value .. '|' .. queue
  end
  redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
  return boot and {1, fence, boot, clock} or {1, fence}
end
if #old < 50 or string.sub(old, 50, 50) ~= ':' or (state ~= 'H' and state ~= 'W') then
  return {-1}
end
if state == 'H' then
  redis.call('SETRANGE', KEYS[1], 0, 'W')
end
if ARGV[4] ~= '' then
  local bar = string.find(old, '|', 51, true)
  if not bar then
    redis.call('APPEND', KEYS[1], '|' .. me)
  elseif not string.find(string.sub(old, bar), '|' .. me, 1, true) then
    redis.call('APPEND', KEYS[1], me)
  end
end
return boot and {0, redis.call('PTTL', KEYS[1]), boot, clock} or {0, redis.call('PTTL', KEYS[1])}
