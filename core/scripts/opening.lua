-- Shared by the two init scripts (after the preludes, before their bodies).

-- An error reply when a key of `expected` ({type = {keys}}) holds another Redis type, else nil.
local function wrong_type(expected)
  for kind, keys in pairs(expected) do
    for _, key in ipairs(keys) do
      local t = redis.call('TYPE', key)['ok']
      if t ~= 'none' and t ~= kind then
        return redis.error_reply('WRONGTYPE key ' .. key .. ' holds a ' .. t .. ', not part of a semaphore')
      end
    end
  end
  return nil
end

-- The quarantine end of a semaphore created now. A new semaphore and one whose state a restart
-- without persistence wiped look the same. LASTSAVE is the server's start (or last save) time,
-- in whole seconds: rounded up, if it is less than a lease ago, permits granted before a restart
-- may still be held, so (when guarding, ARGV 4) grant nothing until they would have ended.
local function fresh_quarantine()
  local started = (tonumber(redis.call('LASTSAVE')) + 1) * 1000
  if ARGV[4] == '1' and now < started + LEASE then return started + LEASE end
  return 0
end
