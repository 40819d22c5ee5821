-- First lines of every script, of both modes (the Rust side concatenates it in front).
-- KEYS: 1 meta, 2 leases, then each mode's own. ARGV: 1 holder, 2 initial value, 3 lease in ms,
-- then the script's own arguments. All keys share one hash tag, so a cluster keeps a semaphore
-- in one slot. Nothing here defines a function: an uncontended acquire or release returns from
-- its fast path right after this head, before any helper closure is built (see prelude.lua).
local META, LEASES = KEYS[1], KEYS[2]
local HOLDER = ARGV[1]
local LEASE = tonumber(ARGV[3])
-- The host runs only these scripts, but with whatever numbers its guest sends: bounds a modified
-- guest cannot pass, so that no script runs long (Redis runs one script at a time, and every
-- other client waits). As core/src/validate.rs and multi.rs have them (a unit test compares).
local MAX_VALUE, MAX_PER_CALL, MAX_SLOTS = 1000000000, 10000, 65536
local INITIAL_ARG = tonumber(ARGV[2])
if not LEASE or LEASE < 100 or LEASE > 86400000 or not INITIAL_ARG or INITIAL_ARG < 0 or INITIAL_ARG > MAX_VALUE
    or #ARGV > 8 + 3 * MAX_PER_CALL then
  error('pottery-semaphore: argument out of range')
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- How often (ms) a semaphore in use asks whether the server restarted (see restart_check in
-- prelude.lua); here so that the one-server fast acquire can tell when a check is due.
local RESTART_CHECK_MS = 10
