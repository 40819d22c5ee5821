-- Everything the caller needs to judge the semaphore across masters; changes nothing.
-- ARGV 4: 'slots' for the live slots, and of those of ARGV 5.. only whether the caller holds
-- them (what counting free ones, or a release of the caller's own, needs), all as integers: the
-- reply stays small with tens of thousands held; 'named' for those of ARGV 5.. alone (no list
-- of the live slots). Else every live slot with its holder.
-- Reply: {initial, capacity, quarantined 0/1, now, #slots, (slot, holder, epoch or 0, ttl ms)...}
--        | with 'slots': {initial, capacity, quarantined 0/1, now, #slots, slot...,
--                         #named live, (slot, the caller's 1/0, epoch or 0, ttl ms)...}
--        | with 'named': the same with #slots 0 and no slots
-- A master that lost the semaphore counts as quarantined: it would recreate it so.
local meta = redis.call('HMGET', META, 'initial', 'capacity', 'quarantine')
local compact = ARGV[4] == 'slots' or ARGV[4] == 'named'
if not meta[1] then return compact and {INITIAL, INITIAL, 1, now, 0, 0} or {INITIAL, INITIAL, 1, now, 0} end
local out = {tonumber(meta[1]), tonumber(meta[2]), 0, now, 0}
if now < tonumber(meta[3]) then out[3] = 1 end

if compact then
  if ARGV[4] == 'slots' then
    local live = redis.call('ZRANGEBYSCORE', LEASES, '(' .. now, '+inf')
    out[5] = #live
    for i = 1, #live do out[5 + i] = tonumber(live[i]) end
  end
  local count_at = #out + 1
  out[count_at] = 0
  for i = 5, #ARGV do
    -- Only slots' own names are members: anything else is not live, and not answered.
    local deadline = tonumber(redis.call('ZSCORE', LEASES, ARGV[i]))
    if deadline and deadline > now then
      local tok = tonumber(redis.call('HGET', TOKENS, ARGV[i]) or '')
      out[#out + 1] = tonumber(ARGV[i])
      out[#out + 1] = redis.call('HGET', OWNER, ARGV[i]) == HOLDER and 1 or 0
      out[#out + 1] = tok or 0
      out[#out + 1] = deadline - now
      out[count_at] = out[count_at] + 1
    end
  end
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
