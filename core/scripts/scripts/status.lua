-- Reply: {initial, capacity, available, #holders, (token, holder, ttl)..., #waiters, (id, n, holder)...}
-- `available` is 0 while the semaphore is quarantined after its state vanished.
local cap, quarantine = capacity(create)
purge()
local free = math.max(serve(cap, quarantine), 0)
local out = {tonumber(redis.call('HGET', META, 'initial')), cap, free}
local leases = redis.call('ZRANGE', LEASES, 0, -1, 'WITHSCORES')
out[#out + 1] = #leases / 2
for i = 1, #leases, 2 do
  local tok, holder = string.match(leases[i], '^(%d+):(.*)$')
  out[#out + 1] = tok or leases[i]
  out[#out + 1] = holder or ''
  out[#out + 1] = math.max(tonumber(leases[i + 1]) - now, 0)
end
local queue = redis.call('ZRANGE', QUEUE, 0, -1)
out[#out + 1] = #queue
for _, id in ipairs(queue) do
  local n, _, _, holder = read_waiter(id)
  out[#out + 1] = id
  out[#out + 1] = n or 0
  out[#out + 1] = holder or ''
end
return out
