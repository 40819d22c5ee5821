-- Extends the caller's slots (slot, epoch pairs) that are still live here under that epoch; an
-- ended lease stays ended. Only a confirmed copy is extended: an unconfirmed one may be a newer
-- claim of the same holder (another task of its handle) on a slot whose earlier grant, the one
-- named, has ended meanwhile, and extending it would bring that grant back under its old
-- epoch. A copy whose confirmation never arrived here ends with its lease; the majority that
-- confirmed the grant keeps it.
-- ARGV 4..: slot, epoch pairs. Reply: {deadline, (slot, epoch) pairs extended...}: the epoch too,
-- since one handle may name two grants of one slot (an ended one it has not yet learnt of, and
-- a newer one), and only the one still live here may count as extended.
mm_purge()
local out = {now + LEASE}
for i = 4, #ARGV, 2 do
  local slot, epoch = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', OWNER, slot) == HOLDER and redis.call('HGET', TOKENS, slot) == epoch then
    redis.call('ZADD', LEASES, 'XX', now + LEASE, slot)
    mm_see_epoch(epoch)
    out[#out + 1] = slot
    out[#out + 1] = epoch
  end
end
return out
