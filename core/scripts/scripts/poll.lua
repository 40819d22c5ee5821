-- A queued waiter's check after a wake-up or a heartbeat: claims its grant if served, else keeps
-- its place (or queues again at the tail: dropped for missing its heartbeat, or its grant was
-- not whole any more).
-- ARGV 4: waiter id, 5: n, 6: bounded (1/0). Reply as acquire.lua.
local w, n = ARGV[4], tonumber(ARGV[5])
if not n or n < 1 or n > MAX_PER_CALL or n % 1 ~= 0 then error('pottery-semaphore: argument out of range') end
local cap, quarantine = capacity(create)
purge()
serve(cap, quarantine)
local got = settle_grant(w, true)
if #got > 0 then return granted(got) end
if n > cap and ARGV[6] == '1' then
  -- It can never be served now (the capacity went below n): it leaves. If it held up the queue,
  -- or settle_grant gave back what was left of a grant no longer whole, those behind it are
  -- served at once rather than at their next heartbeat.
  if own_waiter(w) then remove_waiter(w) end
  serve(cap, quarantine)
  return {-1, cap}
end
if not own_waiter(w) then
  -- Served before and the grant not whole, or dropped: at the tail again. What settle_grant gave
  -- back goes to the queue now, this waiter included, rather than at the next release.
  local queued = enqueue(n, quarantine)
  serve(cap, quarantine)
  return queued
end
write_waiter(w, n)
return {2, w, next_change(quarantine)}
