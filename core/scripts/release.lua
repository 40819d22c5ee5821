-- ARGV 4: n, 5: bounded (1/0), 6: request id (done.lua), 7..: the caller's own tokens, lowest
-- first. Releases those first (the caller names them: a permit is its own only as
-- "token:holder"), then other holders' (earliest lease deadline first); beyond that an unbounded
-- semaphore grows.
-- Reply: {1, others released, capacity added, own tokens...} | {-2, available, initial}
--        | {-3, capacity} unbounded, and the growth would pass the most permits a semaphore has
--        | 1 from release_fast.lua: the first n named tokens, all released as the caller's own
local n = tonumber(ARGV[4])
local cap, quarantine = capacity(create)
purge()
local used = redis.call('ZCARD', LEASES)
if ARGV[5] == '1' and n > used then
  serve(cap, quarantine)
  return {-2, math.max(cap - used, 0), tonumber(redis.call('HGET', META, 'initial'))}
end
-- Beyond what is held it grows by the rest: refused before anything is dropped, as growing less
-- would report fewer permits added than the caller released.
if n - used > MAX_VALUE - cap then
  serve(cap, quarantine)
  return {-3, cap}
end
local out = {1, 0, 0}
local left = n
for i = 7, #ARGV do
  if left == 0 then break end
  if redis.call('ZREM', LEASES, permit(ARGV[i], HOLDER)) == 1 then
    out[#out + 1] = ARGV[i]
    left = left - 1
  end
end
if left > 0 then
  local others = redis.call('ZREMRANGEBYRANK', LEASES, 0, left - 1)
  out[2] = others
  left = left - others
end
if left > 0 then
  -- Grown by the excess (unbounded; checked above to fit).
  redis.call('HINCRBY', META, 'capacity', int(left))
  cap = cap + left
  out[3] = left
end
serve(cap, quarantine)
if DONE then redis.call('SET', DONE, table.concat(out, ' '), 'PX', DONE_MS) end
return out
