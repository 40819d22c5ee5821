-- A waiter leaves the queue (time-out, cancellation). A grant that raced with it is kept when
-- ARGV 5 is 1 (the caller still wants it), else given back. ARGV 4: waiter id.
-- Reply: {1, deadline, tokens...} | {0}
local w, keep = ARGV[4], ARGV[5] == '1'
local cap, quarantine = capacity(create)
purge()
-- Kept: first served if there is room for it (a script whose budget ran out may have left it
-- queued with permits free, see serve), as a poll at this moment would have served it.
if keep then
  serve(cap, quarantine)
  -- Nor is it held up by a budget those ahead of it spent in this script: room for its own
  -- grant, and no more (serve still goes in arrival order).
  local n = own_waiter(w)
  if n and budget < n then
    budget = n
    serve(cap, quarantine)
  end
end
if own_waiter(w) then remove_waiter(w) end
local got = settle_grant(w, keep)
serve(cap, quarantine)
if #got > 0 then return granted(got) end
return {0}
