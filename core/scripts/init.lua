-- Creates the semaphore unless it exists; never overwrites another creator's value.
-- Reply: {initial, created 0/1}
local expected = {hash = {META, OWNER, WAITERS}, zset = {LEASES, QUEUE}}
for kind, keys in pairs(expected) do
  for _, key in ipairs(keys) do
    local t = redis.call('TYPE', key)['ok']
    if t ~= 'none' and t ~= kind then
      return redis.error_reply('WRONGTYPE key ' .. key .. ' holds a ' .. t .. ', not part of a semaphore')
    end
  end
end
local initial = redis.call('HGET', META, 'initial')
if initial then return {tonumber(initial), 0} end
redis.call('HSET', META, 'initial', INITIAL, 'capacity', INITIAL, 'token', int(now * 1000),
  'waiter', 0, 'quarantine', 0)
return {INITIAL, 1}
