-- finish_event: record WeChat's final status (TEMPLATESENDJOBFINISH) on the records of a delivered entry, and
-- queue the status notice when the user blocked the account (core banking sends the SMS instead).
-- KEYS[1] notice stream   KEYS[2..] event records (one shard)
-- ARGV[1] finish status ("success", "failed:user block", "failed: system failed")   ARGV[2] finished unix ms
-- ARGV[3] the sources with a callback, as ",source,source,"
-- Only records that still exist are written (an expired record is not recreated without its TTL); a finish
-- status already recorded is not notified again (WeChat may post one finish event twice).
-- Returns the number of records updated.
local notices, finish_status, at_ms, callbacks = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local updated = 0
for i = 2, #KEYS do
  local r = redis.call('HMGET', KEYS[i], 'src', 'eid', 'customer_id', 'fallback', 'finish_status', 'status')
  if r[6] and r[5] ~= finish_status then
    redis.call('HSET', KEYS[i], 'finish_status', finish_status, 'finished_ms', at_ms)
    updated = updated + 1
    if finish_status == 'failed:user block' and r[1] and r[4] ~= 'none'
        and string.find(callbacks, ',' .. r[1] .. ',', 1, true) then
      redis.call('XADD', notices, '*', 'src', r[1], 'eid', r[2], 'cid', r[3], 'type', 'event.user_blocked',
        'status', r[6], 'reason', finish_status, 'at', at_ms, 'att', '0')
      redis.call('HSET', KEYS[i], 'notice', 'queued')
    end
  end
end
return updated
