-- Operators change the number of slots here, and an unbounded release grows it. ARGV 4: 'set' or
-- 'add' (the initial value follows, as on one server) or 'grow' (a release: the capacity only),
-- 5: value or delta, 6: maximum. Slots at or above the new number are not taken away; they are
-- not granted again.
-- Reply: {capacity} | {-1, capacity} the result would be out of range
local cap = capacity(mm_create)
local new = tonumber(ARGV[5])
if ARGV[4] ~= 'set' then new = cap + new end
if not (new and new >= 0 and new <= math.min(tonumber(ARGV[6]), MAX_SLOTS) and new % 1 == 0) then return {-1, cap} end
if ARGV[4] == 'grow' then
  redis.call('HSET', META, 'capacity', int(new))
else
  redis.call('HSET', META, 'initial', int(new), 'capacity', int(new))
end
mm_wake(math.max(new - cap, 0))
return {new}
