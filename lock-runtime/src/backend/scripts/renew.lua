-- distlock: renew a batch of leases (compare-and-PEXPIRE), one call per tick for all locks due.
--
-- KEYS[i]      lock keys
-- ARGV[2i-1]   the token that must hold KEYS[i]
-- ARGV[2i]     the new lease for KEYS[i], in milliseconds
--
-- The value layout is described in acquire.lua.
-- Reply: an array with one entry per key: 1 renewed, 0 not held by that token (lost).
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.pcall('GET', key)
  local renewed = 0
  if type(v) == 'string' and string.sub(v, 2, 33) == ARGV[2 * i - 1] then
    local state = string.sub(v, 1, 1)
    if state == 'H' or state == 'W' then
      redis.call('PEXPIRE', key, ARGV[2 * i])
      renewed = 1
    end
  end
  out[i] = renewed
end
return out
