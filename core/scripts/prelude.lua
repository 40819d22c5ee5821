-- Shared head of every script, of both modes (the Rust side concatenates it in front).
-- KEYS: 1 meta, 2 leases, then each mode's own. ARGV: 1 holder, 2 initial value, 3 lease in ms,
-- then the script's own arguments. All keys share one hash tag, so a cluster keeps a semaphore
-- in one slot. Only what every script needs lives here: each `local function` costs a closure
-- per call, so mode-specific helpers come in their own files.
local META, LEASES = KEYS[1], KEYS[2]
local PREFIX = string.sub(META, 1, -5)
local HOLDER = ARGV[1]
local INITIAL = tonumber(ARGV[2])
local LEASE = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- Lua numbers are doubles and redis.call formats them with 14 digits: print integers exactly.
local function int(x) return string.format('%.0f', x) end

-- Capacity and quarantine end. A server that finds the state gone knows it vanished (FLUSHALL,
-- a restart without persistence): it recreates it with `create` (each mode has its own layout)
-- and grants nothing for one lease, so that permits held under the old state end first.
local function capacity(create)
  local meta = redis.call('HMGET', META, 'capacity', 'quarantine')
  if meta[1] then return tonumber(meta[1]), tonumber(meta[2]) end
  create(now + LEASE)
  return INITIAL, now + LEASE
end

-- Milliseconds until something may change without a release: a lease ends or quarantine lifts.
local function next_change(quarantine)
  local first = redis.call('ZRANGE', LEASES, 0, 0, 'WITHSCORES')
  local at = now + LEASE
  if first[2] then at = math.min(at, tonumber(first[2])) end
  if quarantine > now then at = math.min(at, quarantine) end
  return math.max(at - now, 1)
end
