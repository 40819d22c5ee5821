-- Drops slots, each named with its fencing epoch and holder, when still held so here.
-- ARGV 4: wake waiters (1/0), then (slot, epoch, holder) triples. Reply: {(slot, epoch) pairs
-- dropped...}, each as named (as for refresh.lua, the slot alone could stand for two grants).
mm_purge()
local out = {}
for i = 5, #ARGV, 3 do
  if mm_owns(ARGV[i + 2], ARGV[i], ARGV[i + 1]) then
    mm_drop(ARGV[i])
    out[#out + 1] = ARGV[i]
    out[#out + 1] = ARGV[i + 1]
  end
end
if ARGV[4] == '1' then mm_wake(#out / 2) end
return out
