-- move_retries: put due scheduled retries back on the delivery stream, atomically.
-- KEYS[1] retry zset (entry JSON -> due unix ms)   KEYS[2] delivery stream
-- ARGV[1] most entries to move
-- Returns the number moved.
local retry, stream, limit = KEYS[1], KEYS[2], tonumber(ARGV[1])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', retry, '-inf', now_ms, 'LIMIT', 0, limit)
for _, entry in ipairs(due) do
  local fields = {}
  for name, value in pairs(cjson.decode(entry)) do
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  redis.call('XADD', stream, '*', unpack(fields))
  redis.call('ZREM', retry, entry)
end
return #due
