-- Extends the caller's slots (slot, epoch pairs) that are still live here; an ended lease stays
-- ended. A slot whose confirmation never arrived here is confirmed now.
-- ARGV 4..: slot, epoch pairs. Reply: {deadline, slots extended...}
mm_purge()
local out = {now + LEASE}
for i = 4, #ARGV, 2 do
  local slot, epoch = ARGV[i], ARGV[i + 1]
  if mm_owns(HOLDER, slot, epoch) then
    redis.call('ZADD', LEASES, 'XX', now + LEASE, slot)
    redis.call('HSET', TOKENS, slot, epoch)
    mm_see_epoch(epoch)
    out[#out + 1] = slot
  end
end
return out
