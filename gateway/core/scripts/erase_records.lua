-- erase_records: erase the personal fields of some of a customer's event records (the right to deletion) and
-- take those events off the customer's timeline. An event still in flight (queued, retrying, digested) ends
-- `no_binding` here, with the fallback notice its source asked for: the worker then finds its records final
-- and only acknowledges its entry, so nothing is sent even if the customer is bound again meanwhile.
-- KEYS[1] customer timeline (zset)   KEYS[2] notice stream   KEYS[3] archive stream
-- KEYS[4..] event records (the customer's shard)
-- ARGV[1] the sources with a callback, as ",source,source,"   ARGV[2] "1" when an archive is configured: an
-- event ended no_binding here is handed to it, already without its personal fields (lib/archive.lua)
-- ARGV[3..] the timeline member ("source:event_id") of each record, in KEYS order
-- Kept on a record: what dedup, the lifecycle and reconcile read (payload hash, status, attempts, times,
-- source and event id, the fallback choice, notice and WeChat finish states); every other field goes
-- (customer id, type, amount, currency, account tail, occurred_at, msgid, ...). A render error's detail may
-- quote the event, so it is cut to "render". The record keeps its TTL and is marked `erased_ms`; a record
-- already marked is left as it is (the erasure is idempotent). The notice names no customer.
-- Returns {records erased, timeline entries removed}.
local timeline, notices, callbacks = KEYS[1], KEYS[2], ARGV[1]
local archive = ARGV[2] == '1' and KEYS[3]
local keep = {hash = true, status = true, src = true, eid = true, accepted_ms = true, updated_ms = true,
  delivered_ms = true, attempts = true, last_error = true, held = true, fallback = true, replayed_ms = true,
  finish_status = true, finished_ms = true, notice = true, notified_ms = true, notice_error = true,
  notice_attempts = true, arch_v = true}
local in_flight = {queued = true, retrying = true, digested = true}

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- as finish.lua's notify for the status no_binding: every source with a callback hears of it unless the
-- event said fallback "none"
local function notify(record)
  local r = redis.call('HMGET', record, 'src', 'eid', 'fallback')
  if callbacks == ',,' or not r[1] or r[3] == 'none' then return end
  if not string.find(callbacks, ',' .. r[1] .. ',', 1, true) then return end
  redis.call('XADD', notices, '*', 'src', r[1], 'eid', r[2], 'cid', '', 'type', 'event.no_binding',
    'status', 'no_binding', 'reason', 'erased', 'at', now_ms, 'att', '0')
  redis.call('HSET', record, 'notice', 'queued')
end

local erased, removed = 0, 0
for i = 4, #KEYS do
  local record = KEYS[i]
  local state = redis.call('HMGET', record, 'status', 'erased_ms', 'last_error')
  if state[1] and not state[2] then
    if in_flight[state[1]] then
      redis.call('HSET', record, 'status', 'no_binding', 'last_error', 'erased', 'updated_ms', now_ms)
      notify(record)
    elseif state[3] and string.sub(state[3], 1, 6) == 'render' then
      redis.call('HSET', record, 'last_error', 'render')
    end
    local drop = {}
    for _, name in ipairs(redis.call('HKEYS', record)) do
      if not keep[name] then drop[#drop + 1] = name end
    end
    if #drop > 0 then redis.call('HDEL', record, unpack(drop)) end
    redis.call('HSET', record, 'erased_ms', now_ms)
    if in_flight[state[1]] then archive_record(archive, record) end
    erased = erased + 1
  end
  removed = removed + redis.call('ZREM', timeline, ARGV[i - 1])
end
return {erased, removed}
