-- distlock: many acquires and releases in one call, applied in the order given (see
-- backend/coalesce.rs). acquire.lua and release.lua are prepended, each as a function of
-- (KEYS, ARGV), so every operation runs exactly the code it runs alone.
--
-- KEYS[i]             the lock key of operation i
-- ARGV[1] .. ARGV[3]  release.lua's ARGV[2] .. ARGV[4], the same for every release
-- then, per operation in turn:
--   "A" token lease owner waiter   an acquire: acquire.lua's ARGV[1] .. ARGV[4]
--   "R" token                      a release: release.lua's ARGV[1]
--
-- The server clock is read once, at the first acquire, and given to every acquire of the
-- call (their fences still only grow: see acquire.lua).
--
-- Reply: one entry per operation, what its script alone would have answered (an error entry
-- where that would have been an error reply). Each operation runs under pcall, so an error
-- in one (a command refused, a script error) is its own answer and the rest still run.
local out = {}
local now
local a = 4
for i, key in ipairs(KEYS) do
  local args, run
  if ARGV[a] == 'A' then
    now = now or redis.call('TIME')
    args = {ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], now}
    run = acquire
    a = a + 5
  else
    args = {ARGV[a + 1], ARGV[1], ARGV[2], ARGV[3]}
    run = release
    a = a + 2
  end
  local ok, answer = pcall(run, {key}, args)
  if ok then
    out[i] = answer
  elseif type(answer) == 'table' and answer.err then
    out[i] = answer
  else
    out[i] = {err = 'ERR ' .. tostring(answer)}
  end
end
return out
