-- Creates the semaphore unless it exists; never overwrites another creator's value.
-- ARGV 4: guard a fresh server (1/0; 2: the state existed, see opening.lua), 5: create when
-- missing (1/0).
-- Reply: {initial, created 0/1} | {-1} missing and not to be created | {-2} a semaphore of the
--        several-master mode lives under this key
local bad = wrong_type({hash = {META, WAITERS}, zset = {LEASES, QUEUE}})
if bad then return bad end
local initial, mode = unpack(redis.call('HMGET', META, 'initial', 'mode'))
if mode == 'slots' then return {-2} end
if initial then return {tonumber(initial), 0} end
if ARGV[5] ~= '1' then return {-1} end
if ARGV[4] == '0' then creator_guards = '0' end
create(fresh_quarantine())
return {INITIAL, 1}
