-- distlock: acquire a lock.
--
-- KEYS[1]  the lock key (prefix + user key)
-- ARGV[1]  the new holder's token: 32 lowercase hex characters
-- ARGV[2]  the lease in milliseconds
-- ARGV[3]  owner info ("host/pid/acquired-at-ms"), kept for inspection only
-- ARGV[4]  the waiter id of the asking client (no "|"), for the queue of turned-away clients
--
-- Values have a fixed layout, so scripts slice them instead of parsing them:
--   held         "H" token(32) fence(16) ":" owner
--   held, queue  "W" token(32) fence(16) ":" owner "|" id "|" id "|" ...   (clients turned away)
--   tombstone    "T" fence(16)               a released lock, briefly: the next fence is larger
--   reserved     "R" fence(16) id "|" ...    released to the first queued client, briefly
-- The fence is the server clock in microseconds, 16 digits (so strings compare like numbers).
--
-- Reply: {1, fence}  acquired (fence as a 16-digit string)
--        {0, pttl}   held by (or reserved for) someone else; pttl is what remains of that
--        {-1}        the key holds a value distlock did not write (left untouched)
local now = redis.call('TIME')
local usec = now[2]
local fence = now[1] .. string.rep('0', 6 - #usec) .. usec
local old = redis.pcall('SET', KEYS[1], 'H' .. ARGV[1] .. fence .. ':' .. ARGV[3],
  'NX', 'PX', ARGV[2], 'GET')
if not old then
  return {1, fence}
end
if type(old) == 'table' then
  return {-1}
end
local state = string.sub(old, 1, 1)
local me = ARGV[4] .. '|'
if (state == 'T' and #old == 17) or (state == 'R' and #old > 18) then
  local queue = ''
  if state == 'R' then
    local waiting = string.sub(old, 18)
    if string.sub(waiting, 1, #me) ~= me then
      -- Released to the client ahead of us: queue up behind it.
      if not string.find('|' .. waiting, '|' .. me, 1, true) then
        redis.call('APPEND', KEYS[1], me)
      end
      return {0, redis.call('PTTL', KEYS[1])}
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
  return {1, fence}
end
if #old < 50 or string.sub(old, 50, 50) ~= ':' then
  return {-1}
end
if state == 'H' then
  redis.call('SETRANGE', KEYS[1], 0, 'W')
  redis.call('APPEND', KEYS[1], '|' .. me)
elseif state == 'W' then
  local bar = string.find(old, '|', 51, true)
  if not bar or not string.find(string.sub(old, bar), '|' .. me, 1, true) then
    redis.call('APPEND', KEYS[1], me)
  end
else
  return {-1}
end
return {0, redis.call('PTTL', KEYS[1])}
