-- Shared head of every script (the Rust side concatenates it in front of each one).
-- KEYS: 1 meta, 2 leases, 3 owner, 4 queue, 5 waiters, 6 held (the calling holder's permits)
-- ARGV: 1 holder, 2 initial value, 3 lease in ms, then the script's own arguments.
-- Layout, all under one hash tag so a cluster keeps a semaphore in one slot:
--   meta     hash  initial, capacity, token (last fencing token), waiter (last waiter id), quarantine
--   leases   zset  token -> lease deadline (Redis server ms)
--   owner    hash  token -> holder
--   held:H   set   tokens of holder H (its refresher extends those it knows of)
--   queue    zset  waiter id -> waiter id (FIFO), waiters hash id -> "n lease alive_until holder"
--   grant:W  str   tokens handed to waiter W: the record a late or cancelled waiter settles
--   wake:W   list  pushed once when W is served: "deadline token..." so it needs no claim
local META, LEASES, OWNER, QUEUE, WAITERS, HELD = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local PREFIX = string.sub(META, 1, -5)
local HOLDER = ARGV[1]
local INITIAL = tonumber(ARGV[2])
local LEASE = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- Lua numbers are doubles and redis.call formats them with 14 digits: print integers exactly.
local function int(x) return string.format('%.0f', x) end
local function held_key(holder) return PREFIX .. 'held:' .. holder end
local function wake_key(w) return PREFIX .. 'wake:' .. w end
local function grant_key(w) return PREFIX .. 'grant:' .. w end

-- Writes a fresh semaphore. Tokens and waiter ids start from server time x 1000, above any
-- issued before the state was lost (as long as fewer than 1000 were issued per ms on average).
local function create(quarantine)
  redis.call('HSET', META, 'initial', INITIAL, 'capacity', INITIAL, 'token', int(now * 1000),
    'waiter', int(now * 1000), 'quarantine', quarantine)
end

-- Capacity and quarantine end. A holder that finds the state gone knows it vanished (FLUSHALL,
-- restart without persistence): it recreates it and nothing is granted for one lease, so that
-- permits held under the old state end first.
local function capacity()
  local meta = redis.call('HMGET', META, 'capacity', 'quarantine')
  if meta[1] then return tonumber(meta[1]), tonumber(meta[2]) end
  create(now + LEASE)
  return INITIAL, now + LEASE
end

local function drop_permit(tok)
  local owner = redis.call('HGET', OWNER, tok)
  redis.call('ZREM', LEASES, tok)
  redis.call('HDEL', OWNER, tok)
  if owner then redis.call('SREM', held_key(owner), tok) end
end

-- A lease ends at its deadline: from then on the permit is free again.
local function purge()
  for _, tok in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', now)) do drop_permit(tok) end
end

local function grant(holder, n, lease, claimed)
  local toks = {}
  for i = 1, n do
    local tok = int(redis.call('HINCRBY', META, 'token', 1))
    redis.call('ZADD', LEASES, now + lease, tok)
    redis.call('HSET', OWNER, tok, holder)
    if claimed then redis.call('SADD', held_key(holder), tok) end
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

local function write_waiter(id, n)
  redis.call('HSET', WAITERS, id, n .. ' ' .. LEASE .. ' ' .. int(now + LEASE) .. ' ' .. HOLDER)
end

local function remove_waiter(id)
  redis.call('ZREM', QUEUE, id)
  redis.call('HDEL', WAITERS, id)
end

-- The caller's own queue entry: n, or nil when it is gone (served, dropped, or never ours).
local function own_waiter(id)
  local n, _, _, holder = read_waiter(id)
  if holder == HOLDER then return n end
  return nil
end

-- Hands free permits to waiters in arrival order, each woken by a push that carries its
-- permits; returns the permits left and whether anyone is still queued. The head blocks those
-- behind it (strict FIFO); a waiter past its heartbeat is dropped. A served waiter that never
-- wakes (it died, or its caller went away) is not refreshed by anyone: its permits expire.
local function serve(cap, quarantine)
  local free = cap - redis.call('ZCARD', LEASES)
  if now < quarantine then return 0, redis.call('ZCARD', QUEUE) > 0 end
  while true do
    local head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
    if not head then return free, false end
    local n, lease, alive, holder = read_waiter(head)
    if not n or alive <= now then
      remove_waiter(head) -- gave up or died
    elseif n <= free then
      local toks = table.concat(grant(holder, n, lease, true), ' ')
      redis.call('SET', grant_key(head), toks, 'PX', lease)
      redis.call('RPUSH', wake_key(head), int(now + lease) .. ' ' .. toks)
      redis.call('PEXPIRE', wake_key(head), lease)
      remove_waiter(head)
      free = free - n
    else
      return free, true
    end
  end
end

-- Milliseconds until something may change without a release: a lease ends or quarantine lifts.
local function next_change(quarantine)
  local first = redis.call('ZRANGE', LEASES, 0, 0, 'WITHSCORES')
  local at = now + LEASE
  if first[2] then at = math.min(at, tonumber(first[2])) end
  if quarantine > now then at = math.min(at, quarantine) end
  return math.max(at - now, 1)
end

local function enqueue(n, quarantine)
  local id = int(redis.call('HINCRBY', META, 'waiter', 1))
  redis.call('ZADD', QUEUE, id, id)
  write_waiter(id, n)
  return {2, id, next_change(quarantine)}
end

-- Settles the permits `serve` handed to waiter w when its wake-up push was not taken: keeps
-- them (a fresh lease) or gives them back. A grant of which a part has already expired is given
-- back whole: permits are taken all at once or not at all.
local function settle_grant(w, keep)
  local toks = redis.call('GET', grant_key(w))
  local out, total = {}, 0
  if not toks then return out end
  local first = string.match(toks, '%S+')
  if redis.call('HGET', OWNER, first) ~= HOLDER and redis.call('ZSCORE', LEASES, first) then
    return out -- another holder's grant under a reused id: not ours to touch
  end
  redis.call('DEL', grant_key(w), wake_key(w))
  for tok in string.gmatch(toks, '%S+') do
    total = total + 1
    if redis.call('HGET', OWNER, tok) == HOLDER and redis.call('ZSCORE', LEASES, tok) then
      out[#out + 1] = tok
    end
  end
  if keep and #out == total then
    for _, tok in ipairs(out) do redis.call('ZADD', LEASES, now + LEASE, tok) end
    return out
  end
  for _, tok in ipairs(out) do drop_permit(tok) end
  return {}
end

local function granted(toks)
  local out = {1, now + LEASE}
  for _, tok in ipairs(toks) do out[#out + 1] = tok end
  return out
end
