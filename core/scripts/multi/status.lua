-- Everything the caller needs to judge the semaphore across masters; changes nothing.
-- ARGV 4: 'slots' for the live slots, and the holders of only those of ARGV 5.. (what counting
-- free ones, or a release of the caller's own, needs: the reply stays small with tens of
-- thousands held), else every live slot with its holder.
-- Reply: {initial, capacity, quarantined 0/1, now, #slots, (slot, holder, epoch or 0, ttl ms)...}
--        | with 'slots': {initial, capacity, quarantined 0/1, now, #slots, slot...,
--                         #named live, (slot, holder, epoch or 0, ttl ms)...}
-- A master that lost the semaphore counts as quarantined: it would recreate it so.
local meta = redis.call('HMGET', META, 'initial', 'capacity', 'quarantine')
local slots_only = ARGV[4] == 'slots'
if not meta[1] then return slots_only and {INITIAL, INITIAL, 1, now, 0, 0} or {INITIAL, INITIAL, 1, now, 0} end
local out = {tonumber(meta[1]), tonumber(meta[2]), 0, now, 0}
if now < tonumber(meta[3]) then out[3] = 1 end

local function add_holder(slot, ttl)
  out[#out + 1] = slot
  out[#out + 1] = redis.call('HGET', OWNER, slot) or ''
  -- A claim of a client before claims had their own hash left 'c' and its epoch here.
  local tok = redis.call('HGET', TOKENS, slot)
  out[#out + 1] = (tok and tonumber(tok)) and tok or 0
  out[#out + 1] = ttl
end

if slots_only then
  local live = redis.call('ZRANGEBYSCORE', LEASES, '(' .. now, '+inf')
  out[5] = #live
  for i = 1, #live do out[5 + i] = live[i] end
  local count_at = #out + 1
  out[count_at] = 0
  for i = 5, #ARGV do
    local deadline = tonumber(redis.call('ZSCORE', LEASES, ARGV[i]))
    if deadline and deadline > now then
      add_holder(ARGV[i], deadline - now)
      out[count_at] = out[count_at] + 1
    end
  end
  return out
end
local live = redis.call('ZRANGEBYSCORE', LEASES, '(' .. now, '+inf', 'WITHSCORES')
out[5] = #live / 2
for i = 1, #live, 2 do add_holder(live[i], tonumber(live[i + 1]) - now) end
return out
