-- Extends the caller's live permits; never brings back one whose lease already ended.
-- Reply: {deadline, tokens still held...}
local cap, quarantine = capacity()
purge()
local out = {now + LEASE}
for _, tok in ipairs(redis.call('SMEMBERS', HELD)) do
  if redis.call('ZSCORE', LEASES, tok) then
    redis.call('ZADD', LEASES, 'XX', now + LEASE, tok)
    out[#out + 1] = tok
  else
    redis.call('SREM', HELD, tok)
  end
end
serve(cap, quarantine)
return out
