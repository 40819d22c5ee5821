-- ARGV 4..: tokens the caller knows it holds. Extends those still live; never brings back one
-- whose lease already ended. A permit in held:H the caller does not know (its grant's reply was
-- lost, or is still on its way) is not extended: if the caller never learns of it, it expires.
-- Reply: {deadline, tokens still held...}
local cap, quarantine = capacity()
purge()
local out = {now + LEASE}
for i = 4, #ARGV do
  local tok = ARGV[i]
  if redis.call('SISMEMBER', HELD, tok) == 1 and redis.call('ZSCORE', LEASES, tok) then
    redis.call('ZADD', LEASES, 'XX', now + LEASE, tok)
    out[#out + 1] = tok
  end
end
serve(cap, quarantine)
return out
