-- finish_event: record WeChat's final status (TEMPLATESENDJOBFINISH) on the records of a delivered entry, and
-- queue the status notice when the user blocked the account (core banking sends the SMS instead).
-- KEYS[1] notice stream   KEYS[2] archive stream   KEYS[3..] event records (one shard)
-- ARGV[1] finish status ("success", "failed:user block", "failed: system failed")   ARGV[2] finished unix ms
-- ARGV[3] the sources with a callback, as ",source,source,"   ARGV[4] the event's MsgID
-- ARGV[5] the hash of its FromUserName (core/recipient.py)
-- ARGV[6] "1" when an archive is configured: a record given a finish status is handed to it (lib/archive.lua)
-- A record counts only if it names that msgid and was sent to that user (its `to_hash`, written by finish.lua):
-- a receipt for a real msgid but another user changes nothing. Only records that still exist are written (an
-- expired record is not recreated without its TTL); a finish status already recorded is not notified again
-- (WeChat may post one finish event twice).
-- Returns {records that matched, records updated}.
local notices, finish_status, at_ms, callbacks = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local msgid, to_hash = ARGV[4], ARGV[5]
local archive = ARGV[6] == '1' and KEYS[2]
local matched, updated = 0, 0
for i = 3, #KEYS do
  local r = redis.call('HMGET', KEYS[i], 'src', 'eid', 'customer_id', 'fallback', 'finish_status', 'status',
    'msgid', 'to_hash')
  if r[6] and to_hash ~= '' and r[7] == msgid and r[8] == to_hash then
    matched = matched + 1
    if r[5] ~= finish_status then
      redis.call('HSET', KEYS[i], 'finish_status', finish_status, 'finished_ms', at_ms)
      updated = updated + 1
      if finish_status == 'failed:user block' and r[1] and r[4] ~= 'none'
          and string.find(callbacks, ',' .. r[1] .. ',', 1, true) then
        redis.call('XADD', notices, '*', 'src', r[1], 'eid', r[2], 'cid', r[3], 'type', 'event.user_blocked',
          'status', r[6], 'reason', finish_status, 'at', at_ms, 'att', '0')
        redis.call('HSET', KEYS[i], 'notice', 'queued')
      end
      archive_record(archive, KEYS[i])
    end
  end
end
return {matched, updated}
