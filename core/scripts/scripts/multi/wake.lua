-- A wake-up handed on: a waiter that took one here and could not use it (it asks for more
-- slots than are free) pushes it back for the next waiter, who may ask for fewer.
-- ARGV 4: '<how many times it has now been handed on>:<which acquire>'. Reply: 1.
redis.call('RPUSH', MWAKE, ARGV[4])
redis.call('LTRIM', MWAKE, -16, -1)
redis.call('PEXPIRE', MWAKE, LEASE)
return 1
