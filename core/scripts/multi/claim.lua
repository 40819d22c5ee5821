-- Claims the n lowest free slots here, all or none. Masters that agree on the state pick the
-- same slots; the caller keeps the slots a majority gave it and gives the rest back.
-- ARGV 4: n, 5..: slots to take first where free here (those free on a majority, after a split
-- vote: lowest free slots differ between masters that lost different slots, and would split
-- again). Reply: {1, epoch, deadline, slots...} | {0, ms until a slot may free up, free slots
-- here, quarantined 0/1} | {-1, capacity} n exceeds the capacity
local n = tonumber(ARGV[4])
if not (n and n >= 1 and n <= MAX_PER_CALL and n % 1 == 0) then error('pottery-semaphore: argument out of range') end
local cap, quarantine = capacity(mm_create)
if n > cap then return {-1, cap} end
mm_purge()
if now < quarantine then return {0, next_change(quarantine), 0, 1} end
local room = math.max(cap - redis.call('ZCARD', LEASES), 0)
if room < n then return {0, next_change(quarantine), room, 0} end
local slots, picked = {}, {}
for i = 5, #ARGV do
  local s = tonumber(ARGV[i])
  if #slots < n and s < cap and not picked[s] and not redis.call('ZSCORE', LEASES, s) then
    slots[#slots + 1], picked[s] = s, true
  end
end
local slot = 0
while #slots < n and slot < cap do
  if not picked[slot] and not redis.call('ZSCORE', LEASES, slot) then slots[#slots + 1] = slot end
  slot = slot + 1
end
if #slots < n then return {0, next_change(quarantine), room, 0} end
key_part(HOLDER) -- it names the holder's held set, written below and in mm_drop
local epoch = redis.call('HINCRBY', META, 'epoch', '1')
if epoch < EPOCH_FLOOR then
  epoch = EPOCH_FLOOR
  redis.call('HSET', META, 'epoch', int(epoch))
end
epoch = int(epoch)
local out = {1, epoch, now + LEASE}
for _, s in ipairs(slots) do
  redis.call('ZADD', LEASES, now + LEASE, s)
  redis.call('HSET', OWNER, s, HOLDER)
  redis.call('HSET', CLAIMS, s, epoch)
  redis.call('SADD', HELD, s)
  out[#out + 1] = s
end
return out
