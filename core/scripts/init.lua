-- Creates the semaphore unless it exists; never overwrites another creator's value.
-- ARGV 4: guard a fresh server (1/0), 5: create when missing (1/0).
-- Reply: {initial, created 0/1} | {-1} missing and not to be created | {-2} a semaphore of the
--        several-master mode lives under this key
local expected = {hash = {META, OWNER, WAITERS}, zset = {LEASES, QUEUE}}
for kind, keys in pairs(expected) do
  for _, key in ipairs(keys) do
    local t = redis.call('TYPE', key)['ok']
    if t ~= 'none' and t ~= kind then
      return redis.error_reply('WRONGTYPE key ' .. key .. ' holds a ' .. t .. ', not part of a semaphore')
    end
  end
end
local initial, mode = unpack(redis.call('HMGET', META, 'initial', 'mode'))
if mode == 'slots' then return {-2} end
if initial then return {tonumber(initial), 0} end
if ARGV[5] ~= '1' then return {-1} end
-- A new semaphore, or one whose state a restart without persistence wiped: the two look the
-- same. LASTSAVE is the server's start (or last save) time, in whole seconds: rounded up, if it
-- is less than a lease ago, permits granted before a restart may still be held, so grant
-- nothing until they would have ended.
local started = (tonumber(redis.call('LASTSAVE')) + 1) * 1000
local quarantine = 0
if ARGV[4] == '1' and now < started + LEASE then quarantine = started + LEASE end
create(quarantine)
return {INITIAL, 1}
