-- notice_finish: record the outcome of a status notice POST on its event record and acknowledge the notice
-- entry in one atomic step; a retry goes to the notice retry zset and a failure to the notice dead letters.
-- KEYS[1] notice stream   KEYS[2] notice retry zset   KEYS[3] notice dead-letter stream   KEYS[4] event record
-- KEYS[5] archive stream
-- ARGV[1] group   ARGV[2] notice entry id   ARGV[3] outcome: "sent" | "retry" | "failed" | "dead_lettered"
-- ARGV[4] reason ("" for sent)   ARGV[5] attempts so far   ARGV[6] retry due unix ms (outcome "retry")
-- ARGV[7] entry JSON with its attempts (for the retry zset and the dead-letter stream)
-- ARGV[8] "1" when an archive is configured: a notice's final outcome on the record is handed to it
-- (lib/archive.lua); a retry is not
-- Only the call whose XACK acknowledged the entry writes the outcome: a second call for the same entry (a
-- reclaimed notice finished twice) changes nothing. The record is written only while it exists (an expired
-- record is not recreated without its TTL).
-- Returns 1 if the outcome was recorded, 0 if the entry was already acknowledged.
local stream, retry, dead, record = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, entry_id, outcome, reason, attempts, due_ms, entry =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local archive = ARGV[8] == '1' and KEYS[5]

if redis.call('XACK', stream, group, entry_id) == 0 then return 0 end

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local fields = {'notice_attempts', attempts}
if outcome == 'sent' then
  fields[#fields + 1] = 'notice'
  fields[#fields + 1] = 'sent'
  fields[#fields + 1] = 'notified_ms'
  fields[#fields + 1] = now_ms
elseif outcome == 'retry' then
  redis.call('ZADD', retry, tonumber(due_ms), entry)
  fields[#fields + 1] = 'notice'
  fields[#fields + 1] = 'retrying'
else
  redis.call('XADD', dead, '*', 'entry', entry, 'reason', reason, 'at', now_ms)
  fields[#fields + 1] = 'notice'
  fields[#fields + 1] = outcome
end
if reason ~= '' then
  fields[#fields + 1] = 'notice_error'
  fields[#fields + 1] = reason
end
if redis.call('EXISTS', record) == 1 then
  redis.call('HSET', record, unpack(fields))
  if outcome ~= 'retry' then archive_record(archive, record) end
end
return 1
