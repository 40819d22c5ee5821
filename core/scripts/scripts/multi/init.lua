-- Creates the semaphore on this master unless it exists; never overwrites another creator's value.
-- ARGV 4: guard a fresh server (1/0), or 2: quarantine in any case (the guest saw the semaphore on
-- other masters: this copy was lost), 5: create when missing (1/0).
-- Reply: {initial, created 0/1, capacity, never claimed here 0/1} | {-1} missing, not to be
--        created | {-2} a semaphore of the one-server protocol lives under this key
local bad = wrong_type({hash = {META, OWNER, TOKENS}, zset = {LEASES}, set = {HELD}})
if bad then return bad end
local meta = redis.call('HMGET', META, 'initial', 'mode', 'capacity', 'epoch', 'born')
if meta[1] then
  if meta[2] ~= 'slots' then return {-2} end
  return {tonumber(meta[1]), 0, tonumber(meta[3]), meta[4] == meta[5] and 1 or 0}
end
if ARGV[5] ~= '1' then return {-1} end
if ARGV[4] == '0' then creator_guards = '0' end
-- As init.lua: a server that started less than a lease ago may have forgotten held slots.
mm_create(fresh_quarantine())
return {INITIAL, 1, INITIAL, 1}
