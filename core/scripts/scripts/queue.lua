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
  redis.call('HSET', META, 'initial', INITIAL, 'capacity', INITIAL, 'token', int(now * 1000),
    'waiter', int(now * 1000), 'quarantine', quarantine)
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
-- these tokens: they go back at once rather than a lease later. The check runs at most once a
-- second (its time is kept in meta), not in every hand-off of a busy queue.
local SERVED_GRACE = 3000
local RECLAIM_EVERY = 1000
-- Served waiters looked at per script: a busy queue's backlog is worked off over a few
-- scripts instead of in one long one. (Most are live waiters that took their push.)
local RECLAIM_BATCH = 200

-- Returns false when more are due than one batch looked at.
local function reclaim_unwoken()
  local due = redis.call('ZRANGEBYSCORE', SERVED, '-inf', int(now), 'LIMIT', '0', int(RECLAIM_BATCH))
  if #due == 0 then return true end
  for _, w in ipairs(due) do
    local rec = redis.call('EXISTS', wake_key(w)) == 1 and redis.call('GET', grant_key(w))
    local holder, toks = string.match(rec or '', '^(%S+) (.*)$')
    -- Holders may be all digits. A record of tokens only (written before records kept the
    -- holder) names no lease here: removing it is all that happens, its permits end with their lease.
    if holder then
      for tok in string.gmatch(toks, '%S+') do redis.call('ZREM', LEASES, permit(tok, holder)) end
      redis.call('DEL', grant_key(w), wake_key(w))
    end
  end
  -- The lowest scores first, so the batch is the set's first ranks.
  redis.call('ZREMRANGEBYRANK', SERVED, '0', int(#due - 1))
  return #due < RECLAIM_BATCH
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
    local n, lease, alive, holder = read_waiter(head)
    if not n or alive <= now then
      remove_waiter(head) -- gave up or died
    elseif n <= free then
      local toks, ttl = table.concat(grant(holder, n, lease), ' '), int(lease)
      redis.call('SET', grant_key(head), holder .. ' ' .. toks, 'PX', ttl)
      redis.call('RPUSH', wake_key(head), int(now + lease) .. ' ' .. toks)
      redis.call('PEXPIRE', wake_key(head), ttl)
      redis.call('ZADD', SERVED, int(now + SERVED_GRACE), head)
      remove_waiter(head)
      free = free - n
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
