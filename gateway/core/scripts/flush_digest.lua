-- flush_digest: when a customer's rate window reopens and their quiet hours are over, queue their held events
-- as one digest message.
-- KEYS[1] digest-due zset   KEYS[2] customer's held list   KEYS[3] customer rate log (lib/rate_log.lua)
-- KEYS[4] delivery stream   KEYS[5] customer preferences (quiet hours)
-- ARGV[1] customer_id   ARGV[2] rate count   ARGV[3] rate window ms   ARGV[4] most events in one digest
-- The digest counts as one message against the rate limit. Its id is derived from its first event, so
-- it is stable across retries and unique.
-- Returns the number of events put in the digest (0: not yet due, or nothing held).
local digest_due, held, rate_log, stream, prefs = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local customer_id, limit, window_ms, most = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- held events wait for the window to reopen (now, if it is open); none held: the customer is not due
local function reschedule(reopens_ms)
  if redis.call('LLEN', held) == 0 then
    redis.call('ZREM', digest_due, customer_id)
  else
    redis.call('ZADD', digest_due, math.max(reopens_ms, now_ms), customer_id)
  end
end

local quiet_until = quiet_until_ms(prefs, now_ms)
if quiet_until then
  redis.call('ZADD', digest_due, quiet_until, customer_id)
  return 0
end
local log = redis.call('GET', rate_log)
local reopens_ms = rate_reopens_ms(log, limit, window_ms, now_ms)
if reopens_ms > now_ms then
  reschedule(reopens_ms)
  return 0
end
local items = redis.call('LRANGE', held, 0, most - 1)
if #items == 0 then
  reschedule(now_ms)
  return 0
end
local first = cjson.decode(items[1])
local digest_id = 'dg-' .. string.sub(redis.sha1hex(first.src .. ':' .. first.eid), 1, 29)
log = rate_admitted(log, limit, now_ms)
redis.call('SET', rate_log, log, 'PX', window_ms)
redis.call('XADD', stream, '*', 'kind', 'digest', 'did', digest_id, 'cid', customer_id,
  'items', '[' .. table.concat(items, ',') .. ']', 'acc', now_ms, 'att', '0')
redis.call('LTRIM', held, #items, -1)
reschedule(rate_reopens_ms(log, limit, window_ms, now_ms))
return #items
