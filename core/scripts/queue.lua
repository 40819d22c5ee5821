-- The one-server protocol's helpers. KEYS: 1 meta, 2 leases, 3 queue, 4 waiters.
--   meta     hash  initial, capacity, token (last fencing token), waiter (last waiter id), quarantine,
--                  run, checked, guard (restart_check, prelude.lua), reclaimed (serve),
--                  refreshed (refresh.lua)
--   leases   zset  "token:holder" -> lease deadline (Redis server ms). One structure for the
--                  permit, its holder and its lease: a grant is one ZADD, an expiry is purged by
--                  one ZREMRANGEBYSCORE, and a holder proves a permit is its own by naming it.
--   queue    zset  waiter id -> waiter id (FIFO), waiters hash id -> "n lease alive_until holder"
--   grant:W  str   "holder token..." handed to waiter W: the record a late or cancelled waiter
--                  settles, or others reclaim when W never takes its push
--   wake:W   list  pushed once when W is served: "deadline token..." so it needs no claim
--   served   zset  waiter id -> when a push still there means W is dead (see reclaim_unwoken);
--                  no expiry: entries go with the first script that serves after they are due
local QUEUE, WAITERS = KEYS[3], KEYS[4]

local function wake_key(w) return PREFIX .. 'wake:' .. key_part(w) end
local function grant_key(w) return PREFIX .. 'grant:' .. key_part(w) end
local SERVED = PREFIX .. 'served'
local function permit(tok, holder) return tok .. ':' .. holder end

restart_counters = {'token', 'waiter'}

-- Writes a fresh semaphore. Tokens and waiter ids start from server time x 1000, above any
-- issued before the state was lost (as long as fewer than 1000 were issued per ms on average).
local function create(quarantine)
  redis.call('HSET', META, 'initial', int(INITIAL), 'capacity', int(INITIAL), 'token', int(now * 1000),
    'waiter', int(now * 1000), 'quarantine', int(quarantine))
  note_server()
end

-- A lease ends at its deadline: from then on the permit is free again.
local function purge()
  redis.call('ZREMRANGEBYSCORE', LEASES, '-inf', int(now))
end

local function grant(holder, n, lease)
  local toks = {}
  for i = 1, n do
    local tok = int(redis.call('HINCRBY', META, 'token', '1'))
    redis.call('ZADD', LEASES, int(now + lease), permit(tok, holder))
    toks[i] = tok
  end
  return toks
end

local function read_waiter(id)
  local rec = redis.call('HGET', WAITERS, id)
  if not rec then return nil end
  local n, lease, alive, holder = string.match(rec, '^(%d+) (%d+) (%d+) (%S+)$')
  return tonumber(n), tonumber(lease), tonumber(alive), holder
end

-- How long a waiter keeps its place without a heartbeat: its lease, but at most 10 s and at least
-- 1 s (the guest beats every third of it, see `WAITER_WINDOW_MS` in protocol.rs), so a waiter that
-- dies at the head holds up those behind it for seconds, not for a long lease, and one whose
-- short lease is less than a late heartbeat pop keeps its place. Not shorter: each beat is a
-- script, and a server stall longer than this drops waiters (they queue again, out of order).
local WAITER_WINDOW = math.max(math.min(LEASE, 10000), 1000)

local function write_waiter(id, n)
  redis.call('HSET', WAITERS, id, int(n) .. ' ' .. int(LEASE) .. ' ' .. int(now + WAITER_WINDOW) .. ' ' .. HOLDER)
end

local function remove_waiter(id)
  redis.call('ZREM', QUEUE, id)
  redis.call('HDEL', WAITERS, id)
end

-- A live waiter sits in BLPOP but for a heartbeat's round trip between pops, so it takes its
-- push at once; one that left it there this long died (or stalled: it then finds nothing and
-- queues again). BLPOP takes a push atomically, so a push still there means nobody has seen
-- these tokens (but see reclaim_unwoken on restarts): they go back at once rather than a lease
-- later. The check runs at most once a second (its time is kept in meta), not in every hand-off
-- of a busy queue.
local SERVED_GRACE = 3000
local RECLAIM_EVERY = 1000
-- Served waiters looked at per script: a busy queue's backlog is worked off over a few
-- scripts instead of in one long one. (Most are live waiters that took their push.)
local RECLAIM_BATCH = 200

-- Permits granted to waiters and waiters dropped in this script (`budget`), and permits taken
-- back by reclaim_unwoken (`reclaim_budget`), all its serve() calls together: at most a call's
-- worth each, so that no script runs long however many are queued or due (a capacity raised by
-- a million); the rest go to the next script, a waiter's heartbeat at the latest. Apart, so
-- that taking back never keeps a waiter from being served.
local budget, reclaim_budget = MAX_PER_CALL, MAX_PER_CALL

-- Returns false when more are due than this script looked at.
local function reclaim_unwoken()
  if reclaim_budget < 1 then return false end
  local due = redis.call('ZRANGEBYSCORE', SERVED, '-inf', int(now), 'LIMIT', '0', int(RECLAIM_BATCH))
  if #due == 0 then return true end
  local looked = 0
  for _, w in ipairs(due) do
    local pushed = redis.call('LINDEX', wake_key(w), '0')
    local rec = pushed and redis.call('GET', grant_key(w))
    local holder, toks = string.match(rec or '', '^(%S+) (.*)$')
    -- The lease the push announced. A restart that reloads older state can bring back a push
    -- its waiter had taken: that waiter holds the permits, and its first refresh since moved
    -- their leases on (before that, the restart's quarantine covers them). Only permits whose
    -- lease still ends when the push said are taken back.
    local deadline = tonumber(string.match(pushed or '', '^(%d+) '))
    -- A grant that does not fit in what is left of the budget waits for the next script (a
    -- whole budget fits any: no grant is of more than a call's worth).
    local _, count = string.gsub(toks or '', '%S+', '')
    if count > reclaim_budget then break end
    looked = looked + 1
    -- Holders may be all digits. A record of tokens only (written before records kept the
    -- holder) names no lease here: removing it is all that happens, its permits end with their lease.
    if holder then
      for tok in string.gmatch(toks, '%S+') do
        local member = permit(tok, holder)
        if tonumber(redis.call('ZSCORE', LEASES, member)) == deadline then redis.call('ZREM', LEASES, member) end
      end
      reclaim_budget = reclaim_budget - count
      redis.call('DEL', grant_key(w), wake_key(w))
    end
  end
  if looked == 0 then return false end
  -- The lowest scores first, so those looked at are the set's first ranks.
  redis.call('ZREMRANGEBYRANK', SERVED, '0', int(looked - 1))
  return looked == #due and #due < RECLAIM_BATCH
end

-- Hands free permits to waiters in arrival order, each woken by a push that carries its
-- permits; returns the permits left and whether the queue holds up a newcomer (anyone queued,
-- or no permit left to serve them with). The head blocks those behind it (strict FIFO); a
-- waiter past its heartbeat is dropped once a permit could go to the next, and permits served
-- to a waiter that never took them come back after SERVED_GRACE (and RECLAIM_EVERY at most).
local function serve(cap, quarantine)
  if now >= reclaimed_at + RECLAIM_EVERY and reclaim_unwoken() then
    reclaimed_at = now
    redis.call('HSET', META, 'reclaimed', int(now))
  end
  local free = cap - redis.call('ZCARD', LEASES)
  if now < quarantine then return 0, redis.call('ZCARD', QUEUE) > 0 end
  while true do
    -- Nobody can be served: the queue's head need not be read (the common end of a release).
    if free < 1 then return free, true end
    local head = redis.call('ZRANGE', QUEUE, '0', '0')[1]
    if not head then return free, false end
    -- This script's budget (see above) is spent: the next one serves the rest.
    if budget < 1 then return free, true end
    local n, lease, alive, holder = read_waiter(head)
    if not n or alive <= now then
      remove_waiter(head) -- gave up or died
      budget = budget - 1
    elseif n > budget then
      return free, true
    elseif n <= free then
      local toks, ttl = table.concat(grant(holder, n, lease), ' '), int(lease)
      redis.call('SET', grant_key(head), holder .. ' ' .. toks, 'PX', ttl)
      redis.call('RPUSH', wake_key(head), int(now + lease) .. ' ' .. toks)
      redis.call('PEXPIRE', wake_key(head), ttl)
      redis.call('ZADD', SERVED, int(now + SERVED_GRACE), head)
      remove_waiter(head)
      free = free - n
      budget = budget - n
    else
      return free, true
    end
  end
end

local function enqueue(n, quarantine)
  local id = int(redis.call('HINCRBY', META, 'waiter', '1'))
  redis.call('ZADD', QUEUE, id, id)
  write_waiter(id, n)
  return {2, id, next_change(quarantine)}
end

local function granted(toks)
  local out = {1, now + LEASE}
  for _, tok in ipairs(toks) do out[#out + 1] = tok end
  return out
end
