-- save_preferences: replace a customer's preferences and have their held events looked at again, in one
-- atomic step (the digest script re-checks the new quiet hours and the rate limit, and reschedules).
-- KEYS[1] the customer's preferences (hash)   KEYS[2] the shard's digest-due zset
-- ARGV[1] customer_id   ARGV[2] now ms (the new due time of held events)   ARGV[3..] field, value pairs
-- Returns the number of fields written.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ARGV[1])
return (#ARGV - 2) / 2
