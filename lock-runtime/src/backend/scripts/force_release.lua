-- distlock: an operator releases a lock by its fencing token (compare-and-delete by fence).
--
-- KEYS[1]  the lock key
-- ARGV[1]  the fence the operator saw: 16 digits, zero-padded (as stored)
-- ARGV[2]  how long a tombstone keeps the fence, in milliseconds
-- ARGV[3]  how long the lock stays reserved for the first queued client, in milliseconds
-- ARGV[4]  optional: the publish command, "SPUBLISH" on Redis Cluster; "PUBLISH" when absent
--
-- Value layouts are described in acquire.lua. Only a lock held under that very fence is
-- touched, and it ends as release.lua ends a lock: a tombstone carrying its fence and token
-- (so the next fence is larger, and the holder's next renewal finds it lost), or a
-- reservation for the first queued client with a notice naming it, or a tombstone and an
-- empty notice when someone asked for a notice without queueing (Redlock).
--
-- Reply: 2  released, notice published
--        1  released
--        0  not held under this fence (released, expired, taken again, or not a lock): untouched
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' then
  return 0
end
local state = string.sub(v, 1, 1)
if (state ~= 'H' and state ~= 'W') or string.sub(v, 50, 50) ~= ':'
    or string.sub(v, 34, 49) ~= ARGV[1] then
  return 0
end
local token = string.sub(v, 2, 33)
local tombstone = 'T' .. ARGV[1] .. token
local publish = ARGV[4] or 'PUBLISH'
if state == 'H' then
  redis.call('SET', KEYS[1], tombstone, 'PX', ARGV[2])
  return 1
end
local bar = string.find(v, '|', 51, true)
if not bar or bar == #v then
  redis.call('SET', KEYS[1], tombstone, 'PX', ARGV[2])
  redis.call(publish, KEYS[1], '')
  return 2
end
local queue = string.sub(v, bar + 1)
redis.call('SET', KEYS[1], 'R' .. ARGV[1] .. token .. queue, 'PX', ARGV[3])
redis.call(publish, KEYS[1], string.match(queue, '^[^|]*'))
return 2
