-- ARGV 4..: tokens. Releases those the caller still holds. Reply: {tokens released...}
local cap, quarantine = capacity(create)
purge()
local out = {}
for i = 4, #ARGV do
  if redis.call('ZREM', LEASES, permit(ARGV[i], HOLDER)) == 1 then out[#out + 1] = ARGV[i] end
end
serve(cap, quarantine)
return out
