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
-- without persistence wiped look the same: if the server started less than a lease ago,
-- permits granted before the restart may still be held, so (when guarding, ARGV 4) grant
-- nothing until they would have ended. The start comes from INFO (started_ms), taken as late
-- as it can be. (LASTSAVE, the start or the last RDB save, would quarantine new
-- semaphores for up to a lease after every snapshot of a server that saves often.)
local function fresh_quarantine()
  -- Known to have existed: lost here, held elsewhere (several masters) or still held (a handle
  -- that opened it before opens another instance).
  if ARGV[4] == '2' then return now + LEASE end
  if ARGV[4] ~= '1' then return 0 end
  -- Refused INFO is an error here (the guard cannot be kept without it): asked again, unprotected.
  local started = started_ms(server_info() or redis.call('INFO', 'server'))
  if now < started + LEASE then return started + LEASE end
  return 0
end
