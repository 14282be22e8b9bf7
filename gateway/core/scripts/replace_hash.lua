-- replace_hash: replace a hash by the given fields in one atomic step (what DEL + HSET did in a MULTI: on a
-- Redis Cluster, redis-py's asyncio client queues each command of a MULTI through a thread it waits for,
-- which blocks the event loop). A binding, a customer's preferences.
-- KEYS[1] the hash   ARGV field, value, field, value, ... (at least one pair)
-- Returns the number of fields written.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV))
return #ARGV / 2
