-- Fixes the fencing epoch of slots a majority gave the caller, and gives back the ones it does not
-- keep. Every master raises its epoch to the grant's, so a later grant of a slot, which needs a
-- majority that overlaps this one, gets a larger epoch. A slot counts here only if this very
-- attempt claimed it here (under `claim`, this master's own claim epoch): a copy of another
-- attempt of the same holder ends with that attempt's lease, and a majority counting it would
-- not last. (A confirmed copy is not counted again: its epoch may be another attempt's grant
-- epoch too. A confirmation run twice thus fails the second time, and the attempt gives up.)
-- A master the attempt claimed nothing on confirms nothing.
-- ARGV 4: epoch, 5: the attempt's claim epoch here ('' when it claimed nothing here), 6: k,
-- 7..6+k: slots to keep, then slots to give back. Reply: {slots confirmed here}
local epoch, claim, k = ARGV[4], ARGV[5], tonumber(ARGV[6])
mm_purge()
mm_see_epoch(epoch)
local confirmed, dropped = 0, 0
if claim ~= '' then
  for i = 7, 6 + k do
    if mm_owns(HOLDER, ARGV[i], 'c' .. claim) then
      redis.call('HSET', TOKENS, ARGV[i], epoch)
      redis.call('HDEL', CLAIMS, ARGV[i])
      confirmed = confirmed + 1
    end
  end
  -- Slots given back wake waiters here, whose claims they may have made fail.
  for i = 7 + k, #ARGV do
    if mm_owns(HOLDER, ARGV[i], 'c' .. claim) then
      mm_drop(ARGV[i])
      dropped = dropped + 1
    end
  end
end
mm_wake(dropped)
return confirmed
