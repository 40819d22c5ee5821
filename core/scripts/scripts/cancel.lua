-- A waiter leaves the queue (time-out, cancellation). A grant that raced with it is kept when
-- ARGV 5 is 1 (the caller still wants it), else given back. ARGV 4: waiter id.
-- Reply: {1, deadline, tokens...} | {0}
local w = ARGV[4]
if own_waiter(w) then remove_waiter(w) end
local cap, quarantine = capacity(create)
purge()
local got = settle_grant(w, ARGV[5] == '1')
serve(cap, quarantine)
if #got > 0 then return granted(got) end
return {0}
