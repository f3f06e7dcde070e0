-- distlock: acquire a lock.
--
-- KEYS[1]  the lock key (prefix + user key)
-- ARGV[1]  the new holder's token: 32 lowercase hex characters
-- ARGV[2]  the lease in milliseconds
-- ARGV[3]  owner info ("host/pid/acquired-at-ms"), kept for inspection only
--
-- The value of a lock key is "<state><token>:<fence>:<owner>", where state is
--   H  held, nobody has been turned away
--   W  held, and someone was turned away (release publishes a notice)
--   T  tombstone of a released lock: "T:<fence>", kept briefly so the next fence is larger
--
-- Reply: {1, fence}  acquired; fence is the server clock in microseconds, raised above the
--                    fence the key still remembers
--        {0, pttl}   held by someone else; pttl is their remaining lease (-1: no expiry)
--        {-1}        the key holds a value distlock did not write (left untouched)
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' then
  return {-1}
end
local last = 0
if v then
  local state, fence = string.match(v, '^([HWT])%x*:(%d+)')
  if not state then
    return {-1}
  end
  if state ~= 'T' then
    if state == 'H' then
      redis.call('SETRANGE', KEYS[1], 0, 'W')
    end
    return {0, redis.call('PTTL', KEYS[1])}
  end
  last = tonumber(fence)
end
local now = redis.call('TIME')
local fence = tonumber(now[1]) * 1000000 + tonumber(now[2])
if fence <= last then
  fence = last + 1
end
redis.call('SET', KEYS[1], 'H' .. ARGV[1] .. ':' .. string.format('%.0f', fence) .. ':' .. ARGV[3],
  'PX', ARGV[2])
return {1, fence}
