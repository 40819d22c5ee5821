-- Reply: {initial, capacity, available}; available is 0 while quarantined.
local cap, quarantine = capacity(create)
purge()
local free = math.max(serve(cap, quarantine), 0)
return {tonumber(redis.call('HGET', META, 'initial')), cap, free}
