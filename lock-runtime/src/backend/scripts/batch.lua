-- distlock: many acquires and releases in one call, applied in the order given (see
-- backend/coalesce.rs). acquire.lua and release.lua are prepended, each as a function of
-- (KEYS, ARGV), so every operation runs exactly the code it runs alone.
--
-- KEYS[i]             the lock key of operation i
-- ARGV[5i-4]          "A": acquire, "R": release
-- ARGV[5i-3 .. 5i]    that script's ARGV[1] .. ARGV[4]
--
-- Reply: one entry per operation, what its script alone would have answered (an error entry
-- where that would have been an error reply). Each operation runs under pcall, so an error
-- in one (a command refused, a script error) is its own answer and the rest still run.
local out = {}
for i, key in ipairs(KEYS) do
  local a = 5 * i - 4
  local args = {ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]}
  local run = release
  if ARGV[a] == 'A' then
    run = acquire
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
