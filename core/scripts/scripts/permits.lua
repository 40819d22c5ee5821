-- Reply: {now, token, deadline, token, deadline...} for the caller's live permits.
-- Scans every lease: this answers a status question, not the hot path.
local cap, quarantine = capacity(create)
purge()
serve(cap, quarantine)
local out = {now}
local leases = redis.call('ZRANGE', LEASES, 0, -1, 'WITHSCORES')
for i = 1, #leases, 2 do
  local tok, holder = string.match(leases[i], '^(%d+):(.*)$')
  if holder == HOLDER then
    out[#out + 1] = tok
    out[#out + 1] = tonumber(leases[i + 1])
  end
end
return out
