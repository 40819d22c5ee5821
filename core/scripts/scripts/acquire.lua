-- ARGV 4: n, 5: wait (1 = join the queue when not granted at once), 6: bounded (1/0)
-- Reply: {1, deadline, tokens...} granted | {0} not available | {2, waiter id, wait ms} queued
--        | {-1, capacity} a blocking request above the capacity of a bounded semaphore, refused
--        as a mistake: only another handle could serve it, by adding permits (an unbounded
--        one grows by its own releases, so that request waits)
local n = tonumber(ARGV[4])
local cap, quarantine = capacity(create)
if n > cap and ARGV[5] == '1' and ARGV[6] == '1' then return {-1, cap} end
purge()
local free, held_up = serve(cap, quarantine)
if now >= quarantine and free >= n and not held_up then
  return granted(grant(HOLDER, n, LEASE))
end
if ARGV[5] ~= '1' then return {0} end
return enqueue(n, quarantine)
