-- ARGV 4..: tokens the caller knows it holds. Extends those still live; never brings back one
-- whose lease already ended (purged first, and ZADD XX only updates). A permit of the caller's it
-- does not know (its grant's reply was lost, or is still on its way) is not extended: if the
-- caller never learns of it, it expires.
-- Reply: {deadline, tokens still held...}
local cap, quarantine = capacity(create)
purge()
local out = {now + LEASE}
for i = 4, #ARGV do
  local member = permit(ARGV[i], HOLDER)
  if redis.call('ZSCORE', LEASES, member) then
    redis.call('ZADD', LEASES, 'XX', now + LEASE, member)
    out[#out + 1] = ARGV[i]
  end
end
-- A write replicas always receive, for WAIT to cover: a ZADD that leaves a score as it was (this
-- refresh run again within the millisecond, after its reply was lost) is not replicated.
if #out > 1 then redis.call('HSET', META, 'refreshed', int(now)) end
serve(cap, quarantine)
return out
