-- The uncontended acquire, before any helper exists: the semaphore is there and not quarantined,
-- nobody is queued, and there is room even counting leases that ended but are not purged yet
-- (ZCARD is O(1) and takes no numbers to format; the fast release and every other script
-- purge them). Grants only what acquire.lua would; anything else falls through to it.
do
  local n = tonumber(ARGV[4])
  local meta = redis.call('HMGET', META, 'capacity', 'quarantine', 'checked')
  -- Not when a restart check is due (see restart_check in prelude.lua).
  local age = now - (tonumber(meta[3]) or 0)
  if meta[1] and now >= tonumber(meta[2]) and age >= 0 and age < RESTART_CHECK_MS and redis.call('ZCARD', KEYS[3]) == 0
    and redis.call('ZCARD', LEASES) + n <= tonumber(meta[1]) then
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
