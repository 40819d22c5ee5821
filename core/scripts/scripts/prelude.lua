-- Helpers every script of both modes shares, after head.lua and any fast path. Each `local
-- function` costs a closure per call, so mode-specific helpers come in their own files.
local PREFIX = string.sub(META, 1, -5)
local INITIAL = tonumber(ARGV[2])

-- Lua numbers are doubles. Integers go to redis.call as '%d' strings: exact, and cheaper than a
-- number argument, which Redis 7.0 formats with '%.17g' (about 1 µs each, measured on the
-- queue's paths; `..` on a number formats with '%.14g', as costly and not exact beyond that).
-- Above 1e9 in two parts, as '%d' takes a C long, 32 bits on some builds. For x < 2^53 the
-- quotient is exact: x / 1e9 is at least 1e-9 from the next integer, more than half its ulp.
local function int(x)
  if x < 1e9 then return string.format('%d', x) end
  return string.format('%d%09d', math.floor(x / 1e9), x % 1e9)
end

-- A part of a key name that comes from the arguments (a waiter id, a holder). Braces could make
-- the name one of another semaphore's keys (one whose name extends this one's), and the host
-- checks only the keys it is given, so anything but these characters stops the script.
local function key_part(s)
  if not string.find(s, '^[%w_-]+$') then error('pottery-semaphore: bad key part ' .. s) end
  return s
end

-- When the one-server queue last looked for permits served to dead waiters (see queue.lua's
-- serve), read along with the capacity at no extra cost.
local reclaimed_at = 0

-- Meta fields of counters that must move above all they issued once a restart may have
-- brought older state back (see restart_check): the one-server mode's (queue.lua). The
-- several-master mode's fencing epochs have their floor at server time instead (claim.lua).
local restart_counters = {}

-- Whether a semaphore created now quarantines after restarts (see restart_check): the opening
-- scripts clear it for a creator that turned the fresh-server guard off. (Recreated by any other
-- script, it quarantines: the safe side.)
local creator_guards = '1'

-- INFO's server section, or nil where this client may not run INFO (an ACL without
-- @dangerous): the restart check is then skipped. Asked once per script: a creation needs it
-- for its quarantine and again for the run id it records.
local info_asked, info_text = false, nil
local function server_info()
  if not info_asked then
    local ok, info = pcall(redis.call, 'INFO', 'server')
    info_asked, info_text = true, ok and type(info) == 'string' and info or nil
  end
  return info_text
end

-- The server's run id (a new one at every start), or nil when INFO is not available.
local function run_id(info)
  return info and string.match(info, 'run_id:(%x+)')
end

-- The latest the server can have started (ms, server time), so that a quarantine ending a lease
-- after it is never short. INFO's uptime subtracts two clocks read in whole seconds, the
-- server's start (rounded down) from its cached time, and so reads up to a second more or less
-- than the real uptime; the cached time itself (server_time_usec, Redis 6.2+) pins the start
-- within one second. Without it, now's second, never earlier than the cached one, is used.
local function started_ms(info)
  local uptime = tonumber(string.match(info, 'uptime_in_seconds:(%d+)'))
  local cached = tonumber(string.match(info, 'server_time_usec:(%d+)') or '')
  local second = cached and math.floor(cached / 1000000) or math.floor(now / 1000)
  return (second - uptime + 1) * 1000
end

-- A restart that reloads older state (an RDB snapshot, an AOF that missed its last writes)
-- brings the semaphore back without the permits granted since, which their holders still use,
-- and with counters that issued fencing tokens and waiter ids since. So at most every
-- RESTART_CHECK_MS (a restart takes longer), a script that may grant compares the server's run id
-- with the one meta last saw: after a restart, the counters move above any value issued before,
-- and, unless the semaphore's creator declared its persistence complete (guard off), nothing is
-- granted until a lease after the server started. With several masters this keeps a master from
-- lending its vote to a second holder of a slot it forgot. Returns the quarantine end.
local function restart_check(quarantine)
  local info = server_info()
  local run = run_id(info)
  if not run then
    redis.call('HSET', META, 'checked', int(now))
    return quarantine
  end
  local seen = redis.call('HMGET', META, 'run', 'guard', unpack(restart_counters))
  -- No run id yet: created by scripts that did not keep one, or where INFO was refused.
  if seen[1] and seen[1] ~= run then
    local floor = now * 1000
    for i, field in ipairs(restart_counters) do
      redis.call('HSET', META, field, int(math.max(tonumber(seen[i + 2]) or 0, floor)))
    end
    local started = started_ms(info)
    if seen[2] ~= '0' and now < started + LEASE and quarantine < started + LEASE then
      quarantine = started + LEASE
      redis.call('HSET', META, 'quarantine', int(quarantine))
    end
  end
  redis.call('HSET', META, 'run', run, 'checked', int(now))
  return quarantine
end

-- What a semaphore created now records for restart_check: when the server was checked, its run
-- id (where INFO is allowed) and whether the creator guards against restarts.
local function note_server()
  redis.call('HSET', META, 'checked', int(now), 'guard', creator_guards)
  local run = run_id(server_info())
  if run then redis.call('HSET', META, 'run', run) end
end

-- Capacity and quarantine end. A server that finds the state gone knows it vanished (FLUSHALL,
-- a restart without persistence): it recreates it with `create` (each mode has its own layout)
-- and grants nothing for one lease, so that permits held under the old state end first. State
-- that came back older is caught by restart_check. A check time ahead of the clock (a clock
-- stepped back) makes the check due too.
local function capacity(create)
  local meta = redis.call('HMGET', META, 'capacity', 'quarantine', 'reclaimed', 'checked')
  if meta[1] then
    reclaimed_at = tonumber(meta[3]) or 0
    local quarantine = tonumber(meta[2])
    local age = now - (tonumber(meta[4]) or 0)
    if age < 0 or age >= RESTART_CHECK_MS then quarantine = restart_check(quarantine) end
    return tonumber(meta[1]), quarantine
  end
  create(now + LEASE)
  return INITIAL, now + LEASE
end

-- Milliseconds until something may change without a release: a lease ends or quarantine lifts.
local function next_change(quarantine)
  local first = redis.call('ZRANGE', LEASES, '0', '0', 'WITHSCORES')
  local at = now + LEASE
  if first[2] then at = math.min(at, tonumber(first[2])) end
  if quarantine > now then at = math.min(at, quarantine) end
  return math.max(at - now, 1)
end
