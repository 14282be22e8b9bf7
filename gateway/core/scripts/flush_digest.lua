-- flush_digest: when a customer's rate window reopens and their quiet hours are over, queue their held events
-- as one digest message.
-- KEYS[1] digest-due zset   KEYS[2] customer's held list   KEYS[3] customer rate log   KEYS[4] delivery stream
-- KEYS[5] customer preferences (quiet hours)
-- ARGV[1] customer_id   ARGV[2] rate count   ARGV[3] rate window ms   ARGV[4] most events in one digest
-- The digest counts as one message against the rate limit. Its id is derived from its first event, so
-- it is stable across retries and unique.
-- Returns the number of events put in the digest (0: not yet due, or nothing held).
local digest_due, held, rate_log, stream, prefs = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local customer_id, limit, window_ms, most = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function reschedule()
  if redis.call('LLEN', held) == 0 then
    redis.call('ZREM', digest_due, customer_id)
  elseif redis.call('ZCARD', rate_log) < limit then
    redis.call('ZADD', digest_due, now_ms, customer_id)
  else
    local oldest = tonumber(redis.call('ZRANGE', rate_log, 0, 0, 'WITHSCORES')[2])
    redis.call('ZADD', digest_due, oldest + window_ms, customer_id)
  end
end

local quiet_until = quiet_until_ms(prefs, now_ms)
if quiet_until then
  redis.call('ZADD', digest_due, quiet_until, customer_id)
  return 0
end
redis.call('ZREMRANGEBYSCORE', rate_log, '-inf', now_ms - window_ms)
if redis.call('ZCARD', rate_log) >= limit then
  reschedule()
  return 0
end
local items = redis.call('LRANGE', held, 0, most - 1)
if #items == 0 then
  reschedule()
  return 0
end
local first = cjson.decode(items[1])
local digest_id = 'dg-' .. string.sub(redis.sha1hex(first.src .. ':' .. first.eid), 1, 29)
redis.call('ZADD', rate_log, now_ms, digest_id)
redis.call('PEXPIRE', rate_log, window_ms)
redis.call('XADD', stream, '*', 'kind', 'digest', 'did', digest_id, 'cid', customer_id,
  'items', '[' .. table.concat(items, ',') .. ']', 'acc', now_ms, 'att', '0')
redis.call('LTRIM', held, #items, -1)
reschedule()
return #items
