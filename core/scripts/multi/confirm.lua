-- Fixes the fencing epoch of slots a majority gave the caller, and gives back the ones it does not
-- keep. Every master raises its epoch to the grant's, so a later grant of a slot, which needs a
-- majority that overlaps this one, gets a larger epoch.
-- ARGV 4: epoch, 5: k, 6..5+k: slots to keep, then slots to give back.
-- Reply: {slots confirmed here}
local epoch, k = ARGV[4], tonumber(ARGV[5])
mm_purge()
mm_see_epoch(epoch)
local confirmed = 0
for i = 6, 5 + k do
  if mm_owns(HOLDER, ARGV[i], epoch) then
    redis.call('HSET', TOKENS, ARGV[i], epoch)
    confirmed = confirmed + 1
  end
end
-- Slots given back wake waiters here, whose claims they may have made fail.
local dropped = 0
for i = 6 + k, #ARGV do
  if mm_owns(HOLDER, ARGV[i], epoch) then
    mm_drop(ARGV[i])
    dropped = dropped + 1
  end
end
mm_wake(dropped)
return confirmed
