-- A queued waiter's check after a wake-up or a heartbeat: claims its grant if served, else keeps
-- its place (or queues again at the tail when it was dropped for missing its heartbeat).
-- ARGV 4: waiter id, 5: n, 6: bounded (1/0). Reply as acquire.lua.
local w, n = ARGV[4], tonumber(ARGV[5])
local cap, quarantine = capacity(create)
purge()
serve(cap, quarantine)
local got = settle_grant(w, true)
if #got > 0 then return granted(got) end
if n > cap and ARGV[6] == '1' then
  if own_waiter(w) then remove_waiter(w) end
  return {-1, cap}
end
if not own_waiter(w) then
  return enqueue(n, quarantine)
end
write_waiter(w, n)
return {2, w, next_change(quarantine)}
