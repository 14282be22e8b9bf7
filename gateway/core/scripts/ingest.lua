-- ingest: dedup + preferences + per-customer rate limit + queue + status record for each of a list of events
-- of one shard, one after the other in one script (one round trip, one script call and one TIME for them all;
-- each event is what it would be if sent alone, in this order).
-- KEYS, per event, KEYS_PER_EVENT (ARGV[1]) of them:
--   +1 event record (hash)      +2 customer rate log (string, lib/rate_log.lua)
--   +3 delivery stream          +4 customer's held list     +5 digest-due zset
--   +6 customer preferences     +7 critical stream          +8 customer timeline (zset)
--   +9 archive stream, given only while an archive is configured: a suppressed event is final at once and
--      is handed to it here (lib/archive.lua)
-- ARGV[1] keys per event (8 or 9)   ARGV[2] record ttl s   ARGV[3] rate count   ARGV[4] rate window ms
-- ARGV[5] policy ("digest" | "reject"); then, per event, how many of its arguments follow, and those:
--   +1 source   +2 event_id   +3 customer_id   +4 canonical event JSON   +5 payload hash
--   +6 "1" if critical   +7 event type   +8 amount in cents (digits, no leading zeros)
--   +9.. field, value pairs of the masked summary kept on the record (for the customer timeline)
-- Critical events bypass preferences, quiet hours, digests and the rate limit, onto the critical stream.
-- The timeline and the held list must outlive what was just added by the record ttl. An expiry is a write
-- (propagated, and in the AOF), so it is pushed out to ttl + ttl/16 only when less than ttl is left: once in
-- ttl/16 for a busy customer, not on each event. The timeline drops its entries older than ttl then too:
-- it never holds an entry older than 2 ttl + ttl/16 (readers skip an entry whose record is gone).
-- Returns, per event, two items: "queued", stream id | "digested", "" | "suppressed", reason
--       | "duplicate", first status | "conflict", "" | "rate_limited", retry after ms
local keys_per_event, ttl_s, limit, window_ms, policy =
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local ttl_text, window_text, ttl_ms = ARGV[2], ARGV[4], ttl_s * 1000

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- numbers given to redis.call are formatted by printf; what goes out many times is given as text
local now_text = t[1] .. string.sub(string.rep('0', 6 - #t[2]) .. t[2], 1, 3)

-- whether the key's expiry had to be pushed out (a read on most calls, a write once in ttl/16)
local function kept_alive(key)
  if redis.call('PTTL', key) >= ttl_ms then return false end
  redis.call('PEXPIRE', key, ttl_ms + math.floor(ttl_ms / 16))
  return true
end

-- decimal strings compared exactly (Lua numbers lose cents past 2^53)
local function below(amount, least)
  if #amount ~= #least then return #amount < #least end
  return amount < least
end

-- One event: its keys are KEYS[k + 1 ..], its arguments ARGV[a + 1 .. last]. Returns status, detail.
local function ingest_one(k, a, last)
  local record, rate_log, stream, held, digest_due, prefs, critical_stream, timeline =
    KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6], KEYS[k + 7], KEYS[k + 8]
  local source, event_id, customer_id, body, hash = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local critical, event_type, cents = ARGV[a + 6] == '1', ARGV[a + 7], ARGV[a + 8]

  local seen = redis.call('HMGET', record, 'hash', 'status')
  if seen[1] then
    if seen[1] == hash then return 'duplicate', seen[2] end
    return 'conflict', ''
  end

  -- a customer with events held is on digest-due already (only scripts change either, and keep it so)
  local function hold(due_ms)
    local item = cjson.encode({src = source, eid = event_id, ev = body, acc = now_text})
    local count = redis.call('RPUSH', held, item)
    kept_alive(held)
    if count == 1 then redis.call('ZADD', digest_due, 'NX', due_ms, customer_id) end
  end

  local function queue(on_stream)
    return redis.call('XADD', on_stream, '*', 'kind', 'event', 'src', source, 'eid', event_id,
      'cid', customer_id, 'ev', body, 'acc', now_text, 'att', '0', 'pri', critical and 'critical' or 'normal')
  end

  local status, result, held_for = 'queued', '', nil
  local suppressed, quiet_until = nil, nil
  if not critical then
    -- one read of every preference that decides
    local p = redis.call('HMGET', prefs, 'muted', 'min:' .. event_type, 'quiet', 'tz')
    if p[1] and string.find(p[1], ',' .. event_type .. ',', 1, true) then
      suppressed = 'muted_type'
    elseif p[2] and below(cents, p[2]) then
      suppressed = 'below_min_amount'
    else
      quiet_until = quiet_end_ms(p[3], p[4], now_ms)
    end
  end
  if critical then
    result = queue(critical_stream)
  elseif suppressed then
    status, result = 'suppressed', suppressed
  elseif quiet_until then
    hold(quiet_until)
    status, held_for = 'digested', 'quiet_hours'
  else
    local log = redis.call('GET', rate_log)
    local reopens_ms = rate_reopens_ms(log, limit, window_ms, now_ms)
    if reopens_ms <= now_ms then
      redis.call('SET', rate_log, rate_admitted(log, limit, now_ms), 'PX', window_text)
      result = queue(stream)
    else
      if policy == 'reject' then return 'rate_limited', tostring(reopens_ms - now_ms) end
      hold(reopens_ms)
      status, held_for = 'digested', 'rate_limit'
    end
  end

  -- one HSET for the whole record: the status fields, the reasons, and the masked summary
  local fields = {'hash', hash, 'status', status, 'customer_id', customer_id, 'src', source, 'eid', event_id,
    'accepted_ms', now_text, 'updated_ms', now_text, 'attempts', '0'}
  if held_for then fields[#fields + 1] = 'held'; fields[#fields + 1] = held_for end
  if status == 'suppressed' then fields[#fields + 1] = 'last_error'; fields[#fields + 1] = suppressed end
  for i = a + 9, last do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', record, unpack(fields))
  redis.call('EXPIRE', record, ttl_text)
  if status == 'suppressed' and keys_per_event == 9 then archive_record(KEYS[k + 9], record) end
  redis.call('ZADD', timeline, now_text, source .. ':' .. event_id)
  if kept_alive(timeline) then redis.call('ZREMRANGEBYSCORE', timeline, '-inf', now_ms - ttl_ms) end
  return status, result
end

local answers, k, a = {}, 0, 5
while a < #ARGV do
  local last = a + 1 + tonumber(ARGV[a + 1])
  local status, detail = ingest_one(k, a + 1, last)
  answers[#answers + 1] = status
  answers[#answers + 1] = detail
  k, a = k + keys_per_event, last
end
return answers
