-- quiet hours (library prepended to the scripts that hold events): the customer's preferences hash keeps
-- 'quiet' = "start_min,end_min" (local minutes of the day) and 'tz' = "from_utc_ms:offset_min,..." (the time
-- zone's UTC offsets, computed by the gateway when the preferences were saved).
local function utc_offset_min(offsets, now_ms)
  local offset = 0
  for from_ms, minutes in string.gmatch(offsets, '(%-?%d+):(%-?%d+)') do
    if tonumber(from_ms) > now_ms then break end
    offset = tonumber(minutes)
  end
  return offset
end

-- The unix ms when quiet hours `quiet` ("start_min,end_min", or false: none) end, in the zone of `tz` (or
-- false: UTC), or nil when now_ms is outside them. For a script that read both fields with others.
local function quiet_end_ms(quiet, tz, now_ms)
  if not quiet then return nil end
  local start_text, end_text = string.match(quiet, '(%d+),(%d+)')
  local start_min, end_min = tonumber(start_text), tonumber(end_text)
  local now_min = math.floor(now_ms / 60000)
  local local_min = (now_min + utc_offset_min(tz or '', now_ms)) % 1440
  local inside
  if start_min < end_min then
    inside = local_min >= start_min and local_min < end_min
  else
    inside = local_min >= start_min or local_min < end_min
  end
  if not inside then return nil end
  return (now_min + (end_min - local_min) % 1440) * 60000
end

-- The unix ms when the customer's quiet hours end, or nil when they are not in quiet hours now.
local function quiet_until_ms(prefs, now_ms)
  local quiet = redis.call('HMGET', prefs, 'quiet', 'tz')
  return quiet_end_ms(quiet[1], quiet[2], now_ms)
end

