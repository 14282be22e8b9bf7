-- finish: record the delivery outcome of each of a list of stream entries and acknowledge it, each in one
-- atomic step (the list in one script call: one round trip and one TIME for them all); queue the status
-- notice core banking asked for (its SMS fallback) in the same step, so a final state is never un-notified.
-- ARGV[1] group   ARGV[2] record ttl s   ARGV[3] the sources with a callback, as ",source,source,"
-- ARGV[4] "1" when an archive is configured: a record reaching a final state is handed to it (lib/archive.lua)
-- then, per entry, its KEYS: +1 delivery stream  +2 retry zset  +3 dead-letter stream  +4 notice stream
--   +5 archive stream  +6.. its event records; and its ARGV: +1 how many records  +2 stream entry id
--   +3 status   +4 attempts   +5 last error ("" none)   +6 msgid ("" none)   +7 retry due unix ms (status
--   "retrying")   +8 entry JSON (for the retry zset and the dead-letter stream)   +9 the recipient's hash
--   (core/recipient.py; "" none), kept beside the msgid for finish_event.lua
-- A record already in a final state keeps it (a reclaimed entry that was delivered is not overwritten).
-- Returns, per entry, the number of its records updated.
local group, ttl_s, callbacks, archiving = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
local final = {delivered = true, failed = true, dead_lettered = true, no_binding = true, suppressed = true}
local fallback = {failed = true, dead_lettered = true, no_binding = true}

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- the notice for a record reaching `status`, if its source has a callback and asked for this one
local function notify(notices, record, status, last_error)
  if callbacks == ',,' then return end  -- no source has a callback: no read on the delivery hot path
  local r = redis.call('HMGET', record, 'src', 'eid', 'customer_id', 'fallback')
  if not r[1] or not string.find(callbacks, ',' .. r[1] .. ',', 1, true) or r[4] == 'none' then return end
  if not (fallback[status] or (r[4] == 'sms' and final[status])) then return end
  -- an erased record (erase_records.lua) names no customer
  redis.call('XADD', notices, '*', 'src', r[1], 'eid', r[2], 'cid', r[3] or '', 'type', 'event.' .. status,
    'status', status, 'reason', last_error, 'at', now_ms, 'att', '0')
  redis.call('HSET', record, 'notice', 'queued')
end

-- One entry: its keys are KEYS[k + 1 ..], its arguments ARGV[a + 1 ..]. Returns the records updated.
local function finish_one(k, a)
  local stream, retry, dead, notices = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local archive = archiving and KEYS[k + 5]
  local records, entry_id, status, attempts, last_error, msgid, due_ms, entry, to_hash =
    tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7],
    ARGV[a + 8], ARGV[a + 9]
  local updated = 0
  for i = k + 6, k + 5 + records do
    local current = redis.call('HGET', KEYS[i], 'status')
    if not (current and final[current]) then
      redis.call('HSET', KEYS[i], 'status', status, 'attempts', attempts, 'updated_ms', now_ms)
      if last_error ~= '' then redis.call('HSET', KEYS[i], 'last_error', last_error) end
      if msgid ~= '' then redis.call('HSET', KEYS[i], 'msgid', msgid, 'to_hash', to_hash) end
      if status == 'delivered' then redis.call('HSET', KEYS[i], 'delivered_ms', now_ms) end
      if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ttl_s) end
      if final[status] and current then
        notify(notices, KEYS[i], status, last_error)
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
end

local answers, k, a = {}, 0, 4
while a < #ARGV do
  answers[#answers + 1] = finish_one(k, a)
  k, a = k + 5 + tonumber(ARGV[a + 1]), a + 9
end
return answers
