-- Everything the caller needs to judge the semaphore across masters; changes nothing.
-- ARGV 4: 'slots' for the live slots alone (what counting free ones needs: no holders, so the
-- reply stays small with tens of thousands held), else with their holders.
-- Reply: {initial, capacity, quarantined 0/1, now, #slots, (slot, holder, epoch or 0, ttl ms)...}
--        | with 'slots': {initial, capacity, quarantined 0/1, now, #slots, slot...}
-- A master that lost the semaphore counts as quarantined: it would recreate it so.
local meta = redis.call('HMGET', META, 'initial', 'capacity', 'quarantine')
if not meta[1] then return {INITIAL, INITIAL, 1, now, 0} end
local out = {tonumber(meta[1]), tonumber(meta[2]), 0, now, 0}
if now < tonumber(meta[3]) then out[3] = 1 end
if ARGV[4] == 'slots' then
  local live = redis.call('ZRANGEBYSCORE', LEASES, '(' .. now, '+inf')
  out[5] = #live
  for i = 1, #live do out[5 + i] = live[i] end
  return out
end
local live = redis.call('ZRANGEBYSCORE', LEASES, '(' .. now, '+inf', 'WITHSCORES')
out[5] = #live / 2
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = redis.call('HGET', OWNER, live[i]) or ''
  -- A claim of a client before claims had their own hash left 'c' and its epoch here.
  local tok = redis.call('HGET', TOKENS, live[i])
  out[#out + 1] = (tok and tonumber(tok)) and tok or 0
  out[#out + 1] = tonumber(live[i + 1]) - now
end
return out
