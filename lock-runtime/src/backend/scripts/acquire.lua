-- distlock: acquire a lock.
--
-- KEYS[1]  the lock key (prefix + user key)
-- KEYS[2]  optional, Redlock only: the node's boot marker (when this node's data started)
-- ARGV[1]  the new holder's token: 32 lowercase hex characters
-- ARGV[2]  the lease in milliseconds
-- ARGV[3]  owner info ("[label/]host/pid/acquired-at-ms"), kept for inspection only; it never
--          holds "|" (the label is escaped, see token.rs)
-- ARGV[4]  what to do when the lock is busy: the asking client's waiter id (hex, no "|"):
--          join the queue of waiting clients; "*": ask for a release notice without
--          queueing (Redlock); "": nothing (a one-try acquire, which will not wait)
-- ARGV[5]  set only by batch.lua, never sent by a client: the server clock (`TIME`'s reply)
--          read once for the whole batch
--
-- Values have a fixed layout, so scripts slice them instead of parsing them:
--   held         "H" token(32) fence(16) ":" owner
--   held, waited "W" token(32) fence(16) ":" owner ["|" id "|" id "|" ...]  (queued clients)
--   tombstone    "T" fence(16) token(32)          a released lock, briefly: the next fence is
--                                                 larger; the token answers a replayed release
--   reserved     "R" fence(16) token(32) id "|" ...  released to the first queued client, briefly
-- The fence is the server clock in microseconds, 16 digits (so strings compare like numbers).
-- (A 17-byte tombstone without the token, as older versions wrote, is understood too.)
--
-- Idempotent for its own token: a replayed acquire (a retry layer resending it after a lost
-- reply) finds its own lock and answers as the first one did.
--
-- Reply: {1, fence}  acquired (fence as a 16-digit string)
--        {0, pttl}   held by (or reserved for) someone else; pttl is what remains of that
--        {-1}        the key holds a value distlock did not write (left untouched)
-- With KEYS[2], {1, ..} and {0, ..} carry two more entries: the boot marker and the server
-- clock (both in microseconds), so that a node that lost its data recently can be told apart.
local now = ARGV[5] or redis.call('TIME')
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
local function reply(status, value)
  if boot then
    return {status, value, boot, clock}
  end
  return {status, value}
end

local old = redis.pcall('SET', KEYS[1], 'H' .. ARGV[1] .. fence .. ':' .. ARGV[3],
  'NX', 'PX', ARGV[2], 'GET')
if not old then
  return reply(1, fence)
end
if type(old) == 'table' then
  -- WRONGTYPE: the key holds another type of value; anything else (READONLY on a demoted
  -- primary, OOM, ...) goes back to the caller as the error it is.
  if string.find(old.err, 'WRONGTYPE', 1, true) then
    return {-1}
  end
  return old
end
-- Whether a value is one distlock wrote, in one of the layouts above: tokens and waiter ids
-- lowercase hex, fences 16 digits below 2^53 (so that the next fence, one more, is exact and
-- keeps 16 digits). Anything else is left untouched.
local function hex(s)
  return string.find(s, '^[0-9a-f]+$') ~= nil
end
local function fence_ok(f)
  return string.find(f, '^%d+$') ~= nil and f < '9007199254740992'
end
local function ours(v)
  local kind = string.sub(v, 1, 1)
  if kind == 'T' then
    return fence_ok(string.sub(v, 2, 17)) and (#v == 17 or (#v == 49 and hex(string.sub(v, 18))))
  elseif kind == 'R' then
    return #v > 50 and fence_ok(string.sub(v, 2, 17)) and hex(string.sub(v, 18, 49))
      and string.find(string.sub(v, 50), '^[0-9a-f|]*|$') ~= nil
  elseif kind == 'H' or kind == 'W' then
    return #v >= 50 and hex(string.sub(v, 2, 33)) and fence_ok(string.sub(v, 34, 49))
      and string.sub(v, 50, 50) == ':'
  end
  return false
end
if not ours(old) then
  return {-1}
end
local state = string.sub(old, 1, 1)
local queues = ARGV[4] ~= '' and ARGV[4] ~= '*'
local me = ARGV[4] .. '|'
if state == 'T' or state == 'R' then
  local last = string.sub(old, 2, 17)
  local queue = ''
  if state == 'R' then
    local waiting = string.sub(old, 50)
    if not queues or string.sub(waiting, 1, #me) ~= me then
      -- Released to the client ahead of us: queue up behind it (if we will wait).
      if queues and not string.find('|' .. waiting, '|' .. me, 1, true) then
        redis.call('APPEND', KEYS[1], me)
      end
      return reply(0, redis.call('PTTL', KEYS[1]))
    end
    queue = string.sub(waiting, #me + 1)
  end
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
  return reply(1, fence)
end
if string.sub(old, 2, 33) == ARGV[1] then
  -- Our own lock: this is a replay of an acquire that landed.
  return reply(1, string.sub(old, 34, 49))
end
if ARGV[4] == '' then
  return reply(0, redis.call('PTTL', KEYS[1]))
end
if state == 'H' then
  redis.call('SETRANGE', KEYS[1], 0, 'W')
end
if queues then
  local bar = string.find(old, '|', 51, true)
  if not bar then
    redis.call('APPEND', KEYS[1], '|' .. me)
  elseif not string.find(string.sub(old, bar), '|' .. me, 1, true) then
    redis.call('APPEND', KEYS[1], me)
  end
end
return reply(0, redis.call('PTTL', KEYS[1]))
