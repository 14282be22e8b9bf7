-- replay_dead: move one dead letter back onto the delivery stream with its attempts reset and its age
-- counted again from now (`rep`): a letter that aged out is replayed to be tried, not dead-lettered at once.
-- KEYS[1] dead-letter stream   KEYS[2] delivery stream   KEYS[3..] the entry's event records
-- ARGV[1] dead-letter entry id
-- Returns the new stream entry id, or false if no such dead letter.
local dead, stream, dead_id = KEYS[1], KEYS[2], ARGV[1]
local found = redis.call('XRANGE', dead, dead_id, dead_id)
if #found == 0 then return false end
local fields = found[1][2]
local entry
for i = 1, #fields, 2 do
  if fields[i] == 'entry' then entry = cjson.decode(fields[i + 1]) end
end
entry.att = '0'
entry.unc = nil  -- an operator's replay sends again, even past WeChat's dedup window after an unclear send
local now = redis.call('TIME')
local now_ms = tostring(now[1] * 1000 + math.floor(now[2] / 1000))
entry.rep = now_ms
local args = {}
for name, value in pairs(entry) do
  args[#args + 1] = name
  args[#args + 1] = value
end
local new_id = redis.call('XADD', stream, '*', unpack(args))
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HSET', KEYS[i], 'status', 'queued', 'attempts', 0, 'replayed_ms', now_ms)
  end
end
redis.call('XDEL', dead, dead_id)
return new_id
