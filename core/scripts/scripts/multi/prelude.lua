-- Several-master mode (Redlock, one lock per permit). Every master holds the same layout for a
-- semaphore; a permit is a numbered slot, and holding it means owning it on a majority of the
-- masters. KEYS: 3 owner, 4 held:H, 5 tokens. Per master:
--   meta     hash  initial, capacity, epoch (last fencing epoch seen here), born (the epoch it
--                  was created with: still equal, this copy never saw a claim), quarantine, mode,
--                  run, checked, guard (restart_check, prelude.lua)
--   leases   zset  slot -> lease deadline (this master's server time, ms)
--   owner    hash  slot -> holder
--   held:H   set   slots holder H owns here
--   tokens   hash  slot -> fencing epoch its holder confirmed (absent until confirmed)
--   claims   hash  slot -> epoch of the claim that took it here, until confirmed: claim epochs
--                  are unique per master (not across masters), so the attempt that claimed the
--                  slot here is told from another attempt of the same holder (another task of
--                  its handle, a stale release)
--   mwake    list  a push per released permit, popped by waiters to retry (there is no queue):
--                  1 for a release's own, '<times handed on>:<acquire>' for one handed on (wake.lua)
local OWNER, HELD, TOKENS = KEYS[3], KEYS[4], KEYS[5]
-- A slot per permit, and claims go through them: no more than MAX_SLOTS (see head.lua).
if INITIAL > MAX_SLOTS then error('pottery-semaphore: argument out of range') end
local MWAKE = PREFIX .. 'mwake'
local CLAIMS = PREFIX .. 'claims'

-- A holder read back from OWNER is checked like one from the arguments.
local function held_key(holder) return PREFIX .. 'held:' .. key_part(holder) end

-- Fencing epochs never fall below server time x 16 (claim.lua raises them to it), so a master
-- that lost its state starts above the epochs it issued before, unless grants there averaged
-- more than 16 per ms since its clock last caught up. (x 16 keeps `epoch << 16 | slot` within
-- 63 bits, a signed 64-bit integer as the Kotlin SDK has it, until the year 2248.)
local EPOCH_FLOOR = now * 16

local function mm_create(quarantine)
  redis.call('HSET', META, 'initial', INITIAL, 'capacity', INITIAL, 'epoch', int(EPOCH_FLOOR), 'born', int(EPOCH_FLOOR),
    'quarantine', quarantine, 'mode', 'slots')
  note_server()
end

local function mm_drop(slot)
  local owner = redis.call('HGET', OWNER, slot)
  redis.call('ZREM', LEASES, slot)
  redis.call('HDEL', OWNER, slot)
  redis.call('HDEL', TOKENS, slot)
  redis.call('HDEL', CLAIMS, slot)
  if owner then redis.call('SREM', held_key(owner), slot) end
end

local function mm_purge()
  for _, slot in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', now)) do mm_drop(slot) end
end

-- True when `holder` owns `slot` here as `id` names it: a fencing epoch for a confirmed copy, or
-- 'c' and the claim epoch here for one not confirmed yet. The two never stand for each other:
-- one master's claim epoch may equal another attempt's grant epoch.
local function mm_owns(holder, slot, id)
  if redis.call('HGET', OWNER, slot) ~= holder then return false end
  local tok = redis.call('HGET', TOKENS, slot)
  if tok then return tok == id end
  return 'c' .. (redis.call('HGET', CLAIMS, slot) or '') == id
end

-- Raises the fencing epoch to at least `epoch` (an existing semaphore only).
local function mm_see_epoch(epoch)
  local seen = redis.call('HGET', META, 'epoch')
  if seen and tonumber(seen) < tonumber(epoch) then redis.call('HSET', META, 'epoch', epoch) end
end

-- Wakes up to `count` waiters blocked on this master; stale pushes only cause a retry.
local function mm_wake(count)
  if count < 1 then return end
  for _ = 1, math.min(count, 16) do redis.call('RPUSH', MWAKE, '1') end
  redis.call('LTRIM', MWAKE, -16, -1)
  redis.call('PEXPIRE', MWAKE, LEASE)
end
