-- distlock: put Redlock leases back on a node that lost its copies.
--
-- KEYS[i]        a lock key
-- ARGV[2i - 1]   the lock's value as a node that holds it stores it ("H" or "W", token,
--                fence, ":" owner; see acquire.lua)
-- ARGV[2i]       when that node's copy runs out (unix milliseconds, its PEXPIRETIME)
--
-- A copy goes where the key holds nothing, or the tombstone of another token (a contender's
-- given-back copy, an earlier holder's release). A held or reserved lock, a value distlock
-- did not write and the lease's own tombstone (it was released) stay untouched. Over a
-- tombstone the copy's fence becomes one more than the tombstone's when that is larger, so
-- fences on this node still only grow. A copy whose end has passed on this node's clock is
-- not written (the key stays as it is): a copy never outlives the lease it copies by more
-- than the two nodes' clocks differ.
--
-- Reply: per key, 1 put back, 0 left untouched.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local value = ARGV[2 * i - 1]
  local old = redis.pcall('GET', key)
  local put = type(old) ~= 'table' and tonumber(ARGV[2 * i]) > now
  if put and old then
    local fence = string.sub(old, 2, 17)
    -- (A 17-byte tombstone of older versions names no token: it could be this lease's.)
    put = string.sub(old, 1, 1) == 'T' and #old == 49
      and string.find(fence, '^%d+$') ~= nil and fence < '9007199254740991'
      and string.sub(old, 18, 49) ~= string.sub(value, 2, 33)
    if put and fence >= string.sub(value, 34, 49) then
      fence = string.format('%016.0f', tonumber(fence) + 1)
      value = string.sub(value, 1, 33) .. fence .. string.sub(value, 50)
    end
  end
  if put then
    redis.call('SET', key, value, 'PXAT', ARGV[2 * i])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
