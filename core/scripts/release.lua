-- ARGV 4: n, 5: bounded (1/0). Releases the caller's permits first (lowest token first), then
-- other holders' (earliest lease deadline first); beyond that an unbounded semaphore grows.
-- Reply: {1, others released, capacity added, own tokens...} | {-2, available, initial}
local n = tonumber(ARGV[4])
local cap, quarantine = capacity()
purge()
local used = redis.call('ZCARD', LEASES)
if ARGV[5] == '1' and n > used then
  serve(cap, quarantine)
  return {-2, math.max(cap - used, 0), tonumber(redis.call('HGET', META, 'initial'))}
end
local own = redis.call('SMEMBERS', HELD)
table.sort(own, function(a, b) return tonumber(a) < tonumber(b) end)
local out = {1, 0, 0}
local left = n
for i = 1, math.min(n, #own) do
  drop_permit(own[i])
  out[#out + 1] = own[i]
  left = left - 1
end
if left > 0 then
  local others = redis.call('ZRANGE', LEASES, 0, left - 1)
  for _, tok in ipairs(others) do drop_permit(tok) end
  out[2] = #others
  left = left - #others
end
if left > 0 then
  redis.call('HINCRBY', META, 'capacity', left)
  cap = cap + left
  out[3] = left
end
serve(cap, quarantine)
return out
