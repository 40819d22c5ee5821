-- The uncontended release, before any helper exists: nobody is queued and the caller names n
-- permits that are all its own and live. Ended leases are purged first (the fast acquire
-- counts around them, so this keeps the set small). Anything else falls through to release.lua
-- with nothing changed but that purge. At most 64 at once: unpack() has a stack limit.
-- Reply: 1, meaning the first n named permits were released, all of them the caller's own
-- (recorded under the request's id, see done.lua).
do
  local n = tonumber(ARGV[4])
  if not n or n < 1 or n > MAX_PER_CALL or n % 1 ~= 0 then error('pottery-semaphore: argument out of range') end
  if n >= 1 and n <= 64 and #ARGV >= 6 + n and redis.call('ZCARD', KEYS[3]) == 0 then
    redis.call('ZREMRANGEBYSCORE', LEASES, '-inf', now)
    if n == 1 then
      -- Removed means it was the caller's and live (ended ones are gone); else nothing changed.
      if redis.call('ZREM', LEASES, ARGV[7] .. ':' .. HOLDER) == 1 then
        if DONE then redis.call('SET', DONE, '1', 'PX', DONE_MS) end
        return 1
      end
    else
      local members = {}
      for i = 1, n do members[i] = ARGV[6 + i] .. ':' .. HOLDER end
      local scores = redis.call('ZMSCORE', LEASES, unpack(members))
      local all = true
      for i = 1, n do all = all and scores[i] ~= false end
      if all then
        redis.call('ZREM', LEASES, unpack(members))
        if DONE then redis.call('SET', DONE, '1', 'PX', DONE_MS) end
        return 1
      end
    end
  end
end
