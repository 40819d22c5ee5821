-- The uncontended acquire, before any helper exists: the semaphore is there and not quarantined,
-- nobody is queued, and there is room even counting leases that ended but are not purged yet
-- (ZCARD is O(1) and takes no numbers to format; the fast release and every other script
-- purge them). Grants only what acquire.lua would; anything else falls through to it.
do
  local n = tonumber(ARGV[4])
  if not n or n < 1 or n > MAX_PER_CALL or n % 1 ~= 0 then error('pottery-semaphore: argument out of range') end
  local meta = redis.call('HMGET', META, 'capacity', 'quarantine', 'checked', 'run')
  local age = now - (tonumber(meta[3]) or 0)
  local room = meta[1] and now >= tonumber(meta[2]) and age >= 0 and redis.call('ZCARD', KEYS[3]) == 0
    and redis.call('ZCARD', LEASES) + n <= tonumber(meta[1])
  -- A restart check that is due (see restart_check in prelude.lua) is done here when it finds
  -- the server that meta last saw; anything else (a restart, no run id, INFO refused) is left
  -- to acquire.lua. Every RESTART_CHECK_MS, a steady stream of acquires would otherwise take
  -- the slow path once.
  if room and age >= RESTART_CHECK_MS then
    local ok, info = pcall(redis.call, 'INFO', 'server')
    room = meta[4] and ok and type(info) == 'string' and string.match(info, 'run_id:(%x+)') == meta[4]
    if room then redis.call('HSET', META, 'checked', string.format('%.0f', now)) end
  end
  if room then
    -- Tokens go back as integer replies (exact: HINCRBY's result is a Lua double already).
    local out = {1, now + LEASE}
    for i = 1, n do
      local tok = redis.call('HINCRBY', META, 'token', '1')
      redis.call('ZADD', LEASES, now + LEASE, string.format('%.0f', tok) .. ':' .. HOLDER)
      out[i + 2] = tok
    end
    return out
  end
end
