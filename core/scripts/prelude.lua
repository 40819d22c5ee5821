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

-- Capacity and quarantine end. A server that finds the state gone knows it vanished (FLUSHALL,
-- a restart without persistence): it recreates it with `create` (each mode has its own layout)
-- and grants nothing for one lease, so that permits held under the old state end first.
local function capacity(create)
  local meta = redis.call('HMGET', META, 'capacity', 'quarantine', 'reclaimed')
  if meta[1] then
    reclaimed_at = tonumber(meta[3]) or 0
    return tonumber(meta[1]), tonumber(meta[2])
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
