-- What a waiter needs after it queued (poll.lua, cancel.lua).

-- The caller's own queue entry: n, or nil when it is gone (served, dropped, or never ours).
local function own_waiter(id)
  local n, _, _, holder = read_waiter(id)
  if holder == HOLDER then return n end
  return nil
end

-- Settles the permits `serve` handed to waiter w when its wake-up push was not taken: keeps
-- them (a fresh lease) or gives them back. A grant of which a part has gone (its lease ended, or
-- another holder released it: permits are fungible) gives the rest back: permits are taken all
-- at once or not at all. A grant record of another holder (a reused id) or with none of the
-- caller's permits left (wholly ended) is left to its keys' own expiry.
local function settle_grant(w, keep)
  local rec = redis.call('GET', grant_key(w))
  local out, total = {}, 0
  if not rec then return out end
  local holder, toks = string.match(rec, '^(%S+) (.*)$')
  -- A record of another holder has none of this one's permits, which the check below sees; a
  -- record without a holder (written by scripts before they kept one) is all tokens.
  if holder ~= HOLDER then toks = rec end
  for tok in string.gmatch(toks, '%S+') do
    total = total + 1
    if redis.call('ZSCORE', LEASES, permit(tok, HOLDER)) then out[#out + 1] = tok end
  end
  if #out == 0 then return out end
  redis.call('DEL', grant_key(w), wake_key(w))
  redis.call('ZREM', SERVED, w)
  if keep and #out == total then
    for _, tok in ipairs(out) do redis.call('ZADD', LEASES, now + LEASE, permit(tok, HOLDER)) end
    return out
  end
  for _, tok in ipairs(out) do redis.call('ZREM', LEASES, permit(tok, HOLDER)) end
  return {}
end
