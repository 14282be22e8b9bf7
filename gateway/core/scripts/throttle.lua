-- throttle: take up to N send permits from an appid's current second (Redis TIME), at most a limit a second.
-- KEYS[1] the appid's send counter (hash: second, count)
-- ARGV[1] sends allowed per second   ARGV[2] permits wanted
-- Returns {permits granted (0..wanted), ms left in this second}.
local counter, per_second, wanted = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local usage = redis.call('HMGET', counter, 'second', 'count')
local used = 0
if usage[1] == t[1] then used = tonumber(usage[2]) end
local granted = math.max(0, math.min(wanted, per_second - used))
redis.call('HSET', counter, 'second', t[1], 'count', used + granted)
redis.call('EXPIRE', counter, 2)
return {granted, 1000 - math.floor(tonumber(t[2]) / 1000)}
