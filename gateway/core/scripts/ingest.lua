-- ingest: dedup + per-customer rate limit + queue + status record for one event, atomically.
-- KEYS[1] event record (hash)      KEYS[2] customer rate log (zset)   KEYS[3] delivery stream
-- KEYS[4] customer's held list     KEYS[5] digest-due zset            KEYS[6] request signature key
-- ARGV[1] source   ARGV[2] event_id   ARGV[3] customer_id   ARGV[4] canonical event JSON
-- ARGV[5] payload hash   ARGV[6] record ttl s   ARGV[7] rate count   ARGV[8] rate window ms
-- ARGV[9] policy ("digest" | "reject")   ARGV[10] signature ttl s ("0": no signature to check)
-- Returns {"queued", stream id} | {"digested", ""} | {"duplicate", first status}
--       | {"conflict", ""} | {"rate_limited", retry after ms} | {"replay", ""}
local record, rate_log, stream, held, digest_due, sig = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local source, event_id, customer_id, body, hash = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ttl_s, limit, window_ms, policy, sig_ttl_s =
  tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10])

if sig_ttl_s > 0 and not redis.call('SET', sig, '1', 'NX', 'EX', sig_ttl_s) then
  return {'replay', ''}
end

local seen = redis.call('HMGET', record, 'hash', 'status')
if seen[1] then
  if seen[1] == hash then return {'duplicate', seen[2]} end
  return {'conflict', ''}
end

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = source .. ':' .. event_id

redis.call('ZREMRANGEBYSCORE', rate_log, '-inf', now_ms - window_ms)
local used = redis.call('ZCARD', rate_log)
local status, result
if used < limit then
  redis.call('ZADD', rate_log, now_ms, member)
  redis.call('PEXPIRE', rate_log, window_ms)
  result = redis.call('XADD', stream, '*', 'kind', 'event', 'src', source, 'eid', event_id,
    'cid', customer_id, 'ev', body, 'acc', now_ms, 'att', '0')
  status = 'queued'
else
  local oldest = tonumber(redis.call('ZRANGE', rate_log, 0, 0, 'WITHSCORES')[2])
  local reopens_ms = oldest + window_ms
  if policy == 'reject' then
    if sig_ttl_s > 0 then redis.call('DEL', sig) end
    return {'rate_limited', tostring(reopens_ms - now_ms)}
  end
  redis.call('RPUSH', held, cjson.encode({src = source, eid = event_id, ev = body, acc = tostring(now_ms)}))
  redis.call('PEXPIRE', held, ttl_s * 1000)
  redis.call('ZADD', digest_due, 'NX', reopens_ms, customer_id)
  status, result = 'digested', ''
end

redis.call('HSET', record, 'hash', hash, 'status', status, 'customer_id', customer_id,
  'accepted_ms', now_ms, 'updated_ms', now_ms, 'attempts', 0)
redis.call('EXPIRE', record, ttl_s)
return {status, result}
