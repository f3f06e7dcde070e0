-- distlock: release a lock by token (compare-and-delete).
--
-- KEYS[1]  the lock key
-- ARGV[1]  the holder's token
-- ARGV[2]  how long a tombstone keeps the fence, in milliseconds
-- ARGV[3]  how long the lock stays reserved for the first queued client, in milliseconds
-- ARGV[4]  optional: the publish command, "SPUBLISH" on Redis Cluster (sharded channels in the
--          key's own slot); "PUBLISH" when absent
--
-- Value layouts are described in acquire.lua. Uncontended, the lock becomes a tombstone
-- carrying its fence and token, and nothing is published. When clients were queued, it is
-- reserved for the first of them (the rest stay queued) and a notice naming that client is
-- published on a channel named like the key. When someone asked for a notice without
-- queueing (Redlock), it becomes a tombstone and an empty notice (for anyone) is published.
--
-- Idempotent for its own token: a replayed release (a retry layer resending it after a lost
-- reply) finds the tombstone or reservation it left and answers 1.
--
-- Reply: 2  released to the next queued client, notice published
--        1  released (now, or by an earlier copy of this call)
--        0  not held by this token (expired, released, or taken by a newer holder): untouched
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' then
  return 0
end
local state = string.sub(v, 1, 1)
if (state == 'T' or state == 'R') and string.sub(v, 18, 49) == ARGV[1] then
  return 1
end
if (state ~= 'H' and state ~= 'W') or string.sub(v, 2, 33) ~= ARGV[1] then
  return 0
end
local fence = string.sub(v, 34, 49)
local tombstone = 'T' .. fence .. ARGV[1]
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
redis.call('SET', KEYS[1], 'R' .. fence .. ARGV[1] .. queue, 'PX', ARGV[3])
redis.call(publish, KEYS[1], string.match(queue, '^[^|]*'))
return 2
