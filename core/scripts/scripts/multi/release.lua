-- Drops slots, each named with its holder and its fencing epoch (or, for a claim given back
-- unconfirmed, 'c' and the claim's epoch here: see mm_owns), when still held so here.
-- ARGV 4: wake waiters (1/0), then (slot, epoch or claim, holder) triples. Reply: {(slot, epoch)
-- pairs dropped...}, each epoch as named, a claim's without its 'c' (as for refresh.lua, the slot
-- alone could stand for two grants).
mm_purge()
local out = {}
for i = 5, #ARGV, 3 do
  if mm_owns(ARGV[i + 2], ARGV[i], ARGV[i + 1]) then
    mm_drop(ARGV[i])
    out[#out + 1] = ARGV[i]
    out[#out + 1] = (string.gsub(ARGV[i + 1], '^c', ''))
  end
end
if ARGV[4] == '1' then mm_wake(#out / 2) end
return out
