-- distlock: a waiting client gives up: take it out of the key's queue of waiting clients.
--
-- KEYS[1]  the lock key
-- ARGV[1]  the client's waiter id
-- ARGV[2]  how long a tombstone keeps the fence, in milliseconds
-- ARGV[3]  how long the lock stays reserved for the first queued client, in milliseconds
-- ARGV[4]  optional: the publish command, "SPUBLISH" on Redis Cluster; "PUBLISH" when absent
--
-- Value layouts are described in acquire.lua. A held lock keeps its lease; a lock reserved
-- for this client is handed to the next queued client (with a notice naming it), or becomes
-- a tombstone when nobody else is queued.
--
-- Reply: 1  the client was queued and is not any more
--        0  it was not queued: untouched
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' then
  return 0
end
local state = string.sub(v, 1, 1)
local me = ARGV[1] .. '|'
local start
if state == 'W' then
  start = string.find(v, '|', 51, true)
  if not start then
    return 0
  end
  start = start + 1
elseif state == 'R' and #v > 50 then
  start = 50
else
  return 0
end
local queue = string.sub(v, start)
local at = string.find('|' .. queue, '|' .. me, 1, true)
if not at then
  return 0
end
local rest = string.sub(queue, 1, at - 1) .. string.sub(queue, at + #me)
if state == 'R' and at == 1 then
  -- The lock was reserved for us: hand it on.
  local head = string.sub(v, 1, 49)
  if rest == '' then
    redis.call('SET', KEYS[1], 'T' .. string.sub(head, 2), 'PX', ARGV[2])
  else
    redis.call('SET', KEYS[1], head .. rest, 'PX', ARGV[3])
    redis.call(ARGV[4] or 'PUBLISH', KEYS[1], string.match(rest, '^[^|]*'))
  end
  return 1
end
redis.call('SET', KEYS[1], string.sub(v, 1, start - 1) .. rest, 'KEEPTTL')
return 1
