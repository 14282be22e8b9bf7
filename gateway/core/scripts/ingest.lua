-- ingest: dedup + preferences + per-customer rate limit + queue + status record for one event, atomically.
-- KEYS[1] event record (hash)      KEYS[2] customer rate log (zset)   KEYS[3] delivery stream
-- KEYS[4] customer's held list     KEYS[5] digest-due zset            KEYS[6] customer preferences
-- KEYS[7] critical stream          KEYS[8] customer timeline (zset)
-- KEYS[9] archive stream, given only while an archive is configured: a suppressed event is final at once and
-- is handed to it here (lib/archive.lua)
-- ARGV[1] source   ARGV[2] event_id   ARGV[3] customer_id   ARGV[4] canonical event JSON
-- ARGV[5] payload hash   ARGV[6] record ttl s   ARGV[7] rate count   ARGV[8] rate window ms
-- ARGV[9] policy ("digest" | "reject")   ARGV[10] "1" if critical   ARGV[11] event type
-- ARGV[12] amount in cents (digits, no leading zeros)
-- ARGV[13..] field, value pairs of the masked summary kept on the record (for the customer timeline)
-- Critical events bypass preferences, quiet hours, digests and the rate limit, onto the critical stream.
-- Returns {"queued", stream id} | {"digested", ""} | {"suppressed", reason} | {"duplicate", first status}
--       | {"conflict", ""} | {"rate_limited", retry after ms}
local record, rate_log, stream, held, digest_due, prefs, critical_stream, timeline =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local source, event_id, customer_id, body, hash = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ttl_s, limit, window_ms, policy = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local critical, event_type, cents = ARGV[10] == '1', ARGV[11], ARGV[12]

local seen = redis.call('HMGET', record, 'hash', 'status')
if seen[1] then
  if seen[1] == hash then return {'duplicate', seen[2]} end
  return {'conflict', ''}
end

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = source .. ':' .. event_id

-- decimal strings compared exactly (Lua numbers lose cents past 2^53)
local function below(amount, least)
  if #amount ~= #least then return #amount < #least end
  return amount < least
end

local function suppressed_by_preferences()
  local p = redis.call('HMGET', prefs, 'muted', 'min:' .. event_type)
  if p[1] and string.find(p[1], ',' .. event_type .. ',', 1, true) then return 'muted_type' end
  if p[2] and below(cents, p[2]) then return 'below_min_amount' end
  return nil
end

local function hold(due_ms)
  redis.call('RPUSH', held, cjson.encode({src = source, eid = event_id, ev = body, acc = tostring(now_ms)}))
  redis.call('PEXPIRE', held, ttl_s * 1000)
  redis.call('ZADD', digest_due, 'NX', due_ms, customer_id)
end

local function queue(on_stream)
  return redis.call('XADD', on_stream, '*', 'kind', 'event', 'src', source, 'eid', event_id,
    'cid', customer_id, 'ev', body, 'acc', now_ms, 'att', '0', 'pri', critical and 'critical' or 'normal')
end

local status, result, held_for = 'queued', '', nil
local suppressed = not critical and suppressed_by_preferences()
local quiet_until = not critical and not suppressed and quiet_until_ms(prefs, now_ms)
if critical then
  result = queue(critical_stream)
elseif suppressed then
  status, result = 'suppressed', suppressed
elseif quiet_until then
  hold(quiet_until)
  status, held_for = 'digested', 'quiet_hours'
else
  redis.call('ZREMRANGEBYSCORE', rate_log, '-inf', now_ms - window_ms)
  if redis.call('ZCARD', rate_log) < limit then
    redis.call('ZADD', rate_log, now_ms, member)
    redis.call('PEXPIRE', rate_log, window_ms)
    result = queue(stream)
  else
    local oldest = tonumber(redis.call('ZRANGE', rate_log, 0, 0, 'WITHSCORES')[2])
    local reopens_ms = oldest + window_ms
    if policy == 'reject' then return {'rate_limited', tostring(reopens_ms - now_ms)} end
    hold(reopens_ms)
    status, held_for = 'digested', 'rate_limit'
  end
end

-- one HSET for the whole record: the status fields, the reasons, and the masked summary of ARGV[13..]
local fields = {'hash', hash, 'status', status, 'customer_id', customer_id, 'src', source, 'eid', event_id,
  'accepted_ms', now_ms, 'updated_ms', now_ms, 'attempts', 0}
if held_for then fields[#fields + 1] = 'held'; fields[#fields + 1] = held_for end
if status == 'suppressed' then fields[#fields + 1] = 'last_error'; fields[#fields + 1] = suppressed end
for i = 13, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', record, unpack(fields))
redis.call('EXPIRE', record, ttl_s)
if status == 'suppressed' then archive_record(KEYS[9], record) end
redis.call('ZADD', timeline, now_ms, member)
redis.call('ZREMRANGEBYSCORE', timeline, '-inf', now_ms - ttl_s * 1000)
redis.call('EXPIRE', timeline, ttl_s)
return {status, result}
