-- finish: record a delivery outcome and acknowledge the stream entry in one atomic step.
-- KEYS[1] delivery stream   KEYS[2] retry zset   KEYS[3] dead-letter stream   KEYS[4..] event records
-- ARGV[1] group   ARGV[2] stream entry id   ARGV[3] status   ARGV[4] attempts   ARGV[5] last error ("" none)
-- ARGV[6] msgid ("" none)   ARGV[7] retry due unix ms (status "retrying")   ARGV[8] entry JSON (for the
-- retry zset and the dead-letter stream)   ARGV[9] record ttl s
-- A record already in a final state keeps it (a reclaimed entry that was delivered is not overwritten).
-- Returns the number of records updated.
local stream, retry, dead = KEYS[1], KEYS[2], KEYS[3]
local group, entry_id, status, attempts, last_error, msgid, due_ms, entry, ttl_s =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
local final = {delivered = true, failed = true, dead_lettered = true, no_binding = true, suppressed = true}

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local updated = 0
for i = 4, #KEYS do
  local current = redis.call('HGET', KEYS[i], 'status')
  if not (current and final[current]) then
    redis.call('HSET', KEYS[i], 'status', status, 'attempts', attempts, 'updated_ms', now_ms)
    if last_error ~= '' then redis.call('HSET', KEYS[i], 'last_error', last_error) end
    if msgid ~= '' then redis.call('HSET', KEYS[i], 'msgid', msgid) end
    if status == 'delivered' then redis.call('HSET', KEYS[i], 'delivered_ms', now_ms) end
    if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ttl_s) end
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
