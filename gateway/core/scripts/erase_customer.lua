-- erase_customer: the last step of a customer's erasure in their shard: preferences, held events (and the
-- digest they wait for), rate-limit log and timeline go, once erase_records took every event off the timeline.
-- KEYS[1] customer timeline (zset)   KEYS[2] customer preferences   KEYS[3] customer's held list
-- KEYS[4] digest-due zset   KEYS[5] customer rate log
-- ARGV[1] customer_id
-- The held events' records were erased (and ended no_binding) with the timeline: ingest puts every held event
-- on it. An event accepted since the caller read the timeline is still on it: then nothing is deleted, and
-- the caller erases that event first and calls again.
-- Returns {preferences deleted (0|1), held events deleted}, or {-1, events still on the timeline}.
local timeline, prefs, held, digest_due, rate_log = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local left = redis.call('ZCARD', timeline)
if left > 0 then return {-1, left} end
local held_events = redis.call('LLEN', held)
local had_prefs = redis.call('DEL', prefs)
redis.call('DEL', held, rate_log, timeline)
redis.call('ZREM', digest_due, ARGV[1])
return {had_prefs, held_events}
