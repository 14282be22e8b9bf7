-- finish: record a delivery outcome and acknowledge the stream entry in one atomic step; queue the status
-- notice core banking asked for (its SMS fallback) in the same step, so a final state is never un-notified.
-- KEYS[1] delivery stream   KEYS[2] retry zset   KEYS[3] dead-letter stream   KEYS[4] notice stream
-- KEYS[5..] event records
-- ARGV[1] group   ARGV[2] stream entry id   ARGV[3] status   ARGV[4] attempts   ARGV[5] last error ("" none)
-- ARGV[6] msgid ("" none)   ARGV[7] retry due unix ms (status "retrying")   ARGV[8] entry JSON (for the
-- retry zset and the dead-letter stream)   ARGV[9] record ttl s
-- ARGV[10] the sources with a callback, as ",source,source,"
-- A record already in a final state keeps it (a reclaimed entry that was delivered is not overwritten).
-- Returns the number of records updated.
local stream, retry, dead, notices = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, entry_id, status, attempts, last_error, msgid, due_ms, entry, ttl_s, callbacks =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10]
local final = {delivered = true, failed = true, dead_lettered = true, no_binding = true, suppressed = true}
local fallback = {failed = true, dead_lettered = true, no_binding = true}

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- the notice for a record reaching `status`, if its source has a callback and asked for this one
local function notify(record)
  if callbacks == ',,' then return end  -- no source has a callback: no read on the delivery hot path
  local r = redis.call('HMGET', record, 'src', 'eid', 'customer_id', 'fallback')
  if not r[1] or not string.find(callbacks, ',' .. r[1] .. ',', 1, true) or r[4] == 'none' then return end
  if not (fallback[status] or (r[4] == 'sms' and final[status])) then return end
  redis.call('XADD', notices, '*', 'src', r[1], 'eid', r[2], 'cid', r[3], 'type', 'event.' .. status,
    'status', status, 'reason', last_error, 'at', now_ms, 'att', '0')
  redis.call('HSET', record, 'notice', 'queued')
end

local updated = 0
for i = 5, #KEYS do
  local current = redis.call('HGET', KEYS[i], 'status')
  if not (current and final[current]) then
    redis.call('HSET', KEYS[i], 'status', status, 'attempts', attempts, 'updated_ms', now_ms)
    if last_error ~= '' then redis.call('HSET', KEYS[i], 'last_error', last_error) end
    if msgid ~= '' then redis.call('HSET', KEYS[i], 'msgid', msgid) end
    if status == 'delivered' then redis.call('HSET', KEYS[i], 'delivered_ms', now_ms) end
    if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ttl_s) end
    if final[status] and current then notify(KEYS[i]) end
    updated = updated + 1
  end
end

if updated > 0 and status == 'retrying' then
  redis.call('ZADD', retry, tonumber(due_ms), entry)
elseif updated > 0 and status == 'dead_lettered' then
  redis.call('XADD', dead, '*', 'entry', entry, 'reason', last_error, 'at', now_ms)
end
redis.call('XACK', stream, group, entry_id)
return updated
