-- finish_event: record WeChat's final status (TEMPLATESENDJOBFINISH) on the records of a delivered entry.
-- KEYS[1..] event records (one shard)
-- ARGV[1] finish status ("success", "failed:user block", "failed: system failed")   ARGV[2] finished unix ms
-- Only records that still exist are written (an expired record is not recreated without its TTL).
-- Returns the number of records updated.
local updated = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HSET', KEYS[i], 'finish_status', ARGV[1], 'finished_ms', ARGV[2])
    updated = updated + 1
  end
end
return updated
