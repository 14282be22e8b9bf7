-- finish: record a delivery outcome and acknowledge the stream entry in one atomic step; queue the status
-- notice core banking asked for (its SMS fallback) in the same step, so a final state is never un-notified.
-- KEYS[1] delivery stream   KEYS[2] retry zset   KEYS[3] dead-letter stream   KEYS[4] notice stream
-- KEYS[5] archive stream   KEYS[6..] event records
-- ARGV[1] group   ARGV[2] stream entry id   ARGV[3] status   ARGV[4] attempts   ARGV[5] last error ("" none)
-- ARGV[6] msgid ("" none)   ARGV[7] retry due unix ms (status "retrying")   ARGV[8] entry JSON (for the
-- retry zset and the dead-letter stream)   ARGV[9] record ttl s
-- ARGV[10] the sources with a callback, as ",source,source,"
-- ARGV[11] the recipient's hash (core/recipient.py; "" none), kept beside the msgid for finish_event.lua
-- ARGV[12] "1" when an archive is configured: a record reaching a final state is handed to it (lib/archive.lua)
-- A record already in a final state keeps it (a reclaimed entry that was delivered is not overwritten).
-- Returns the number of records updated.
local stream, retry, dead, notices = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, entry_id, status, attempts, last_error, msgid, due_ms, entry, ttl_s, callbacks =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10]
local to_hash = ARGV[11] or ''
local archive = ARGV[12] == '1' and KEYS[5]
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
  -- an erased record (erase_records.lua) names no customer
  redis.call('XADD', notices, '*', 'src', r[1], 'eid', r[2], 'cid', r[3] or '', 'type', 'event.' .. status,
    'status', status, 'reason', last_error, 'at', now_ms, 'att', '0')
  redis.call('HSET', record, 'notice', 'queued')
end

local updated = 0
for i = 6, #KEYS do
  local current = redis.call('HGET', KEYS[i], 'status')
  if not (current and final[current]) then
    redis.call('HSET', KEYS[i], 'status', status, 'attempts', attempts, 'updated_ms', now_ms)
    if last_error ~= '' then redis.call('HSET', KEYS[i], 'last_error', last_error) end
    if msgid ~= '' then redis.call('HSET', KEYS[i], 'msgid', msgid, 'to_hash', to_hash) end
    if status == 'delivered' then redis.call('HSET', KEYS[i], 'delivered_ms', now_ms) end
    if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ttl_s) end
    if final[status] and current then
      notify(KEYS[i])
      archive_record(archive, KEYS[i])
    end
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
