-- distlock: release a lock by token (compare-and-delete).
--
-- KEYS[1]  the lock key
-- ARGV[1]  the holder's token
-- ARGV[2]  how long the tombstone keeps the fence, in milliseconds
--
-- The lock is replaced by a short-lived tombstone "T:<fence>" so that the next acquire
-- derives a larger fence even if the server clock steps back a little. When someone was
-- turned away while it was held (state W), a release notice is published on a channel named
-- like the key; the uncontended path publishes nothing.
--
-- Reply: 1  released
--        0  not held by this token (expired, released, or taken by a newer holder): untouched
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' or string.sub(v, 2, 33) ~= ARGV[1] then
  return 0
end
local state = string.sub(v, 1, 1)
if state == 'T' then
  return 0
end
local fence = string.match(v, '^%a%x+:(%d+)')
redis.call('SET', KEYS[1], 'T:' .. fence, 'PX', ARGV[2])
if state == 'W' then
  redis.call('PUBLISH', KEYS[1], 'released')
end
return 1
