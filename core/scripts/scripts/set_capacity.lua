-- Operators change the number of permits. ARGV 4: 'set' or 'add', 5: value or delta, 6: request
-- id (done.lua), 7: maximum.
-- The initial value follows, so bounded releases are judged against the new number. Lowering it
-- below the permits in use takes nothing away: no new grant until enough are released.
-- Reply: {initial, capacity, available} | {-1, capacity} the result would be out of range
local cap, quarantine = capacity(create)
local arg = tonumber(ARGV[5])
local new = arg
if ARGV[4] == 'add' then new = cap + arg end
if new < 0 or new > math.min(tonumber(ARGV[7]), MAX_VALUE) then return {-1, cap} end
redis.call('HSET', META, 'initial', new, 'capacity', new)
purge()
local free = math.max(serve(new, quarantine), 0)
if DONE then redis.call('SET', DONE, new .. ' ' .. new .. ' ' .. free, 'PX', DONE_MS) end
return {new, new, free}
