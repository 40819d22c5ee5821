-- Reply: {now, token, deadline, token, deadline...} for the caller's live permits.
local cap, quarantine = capacity()
purge()
serve(cap, quarantine)
local out = {now}
for _, tok in ipairs(redis.call('SMEMBERS', HELD)) do
  local deadline = redis.call('ZSCORE', LEASES, tok)
  if deadline then
    out[#out + 1] = tok
    out[#out + 1] = tonumber(deadline)
  end
end
return out
