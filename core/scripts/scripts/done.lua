-- ARGV 6: '' or the id of a call the transport may send a second time after its reply was lost
-- (a cluster client does so by itself). Its first run records its answer under the id; a second
-- run finds that record and gives the same answer without acting again: a release run twice
-- would give back another holder's permit, an addition would add twice. Answers are recorded as
-- fields separated by spaces; the first three go back as numbers, the rest as strings. A replay
-- writes too (the record's expiry): a WAIT that follows on the new connection then covers the
-- first run's writes, which a connection that wrote nothing would not.
local DONE = ARGV[6] ~= '' and string.sub(META, 1, -5) .. 'done:' .. ARGV[6] .. ':' .. HOLDER
-- Longer than any client keeps sending a call again (redis-rs: within its response time-out).
local DONE_MS = '60000'
if DONE then
  if not string.find(ARGV[6] .. ':' .. HOLDER, '^%d+:[%w_-]+$') then error('pottery-semaphore: bad request id') end
  local done = redis.call('GET', DONE)
  if done then redis.call('PEXPIRE', DONE, DONE_MS) end
  if done == '1' then return 1 end
  if done then
    local out = {}
    for field in string.gmatch(done, '%S+') do out[#out + 1] = field end
    for i = 1, 3 do out[i] = tonumber(out[i]) end
    return out
  end
end
