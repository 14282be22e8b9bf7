-- rate log (library prepended to the scripts that admit messages under the per-customer limit): the times of
-- a customer's last admissions, at most `limit` of them, oldest first, in one string (keys.rate_log) of
-- fixed-width entries: 13 digits of unix ms and a comma each ("1764990000000,1764990000250,"). It is read
-- with one GET and written with one SET PX window: after a window with no admission every time in it is
-- stale, so the key may go. A message is admitted at now_ms when fewer than `limit` admissions lie in
-- (now_ms - window_ms, now_ms], that is when the limit-th latest one is at most now_ms - window_ms: never
-- more than `limit` in any window, and the window reopens at that admission + window_ms.
local RATE_ENTRY_LEN = 14

-- The unix ms when the window reopens for one more message (<= now_ms: open now).
local function rate_reopens_ms(log, limit, window_ms, now_ms)
  local kept = log and #log / RATE_ENTRY_LEN or 0
  if kept < limit then return now_ms end
  local at = (kept - limit) * RATE_ENTRY_LEN
  return tonumber(string.sub(log, at + 1, at + RATE_ENTRY_LEN - 1)) + window_ms
end

-- The log after an admission at now_ms: its latest limit - 1 entries and now_ms.
local function rate_admitted(log, limit, now_ms)
  local entry = string.format('%013d,', now_ms)
  if not log then return entry end
  local drop = #log - (limit - 1) * RATE_ENTRY_LEN
  if drop > 0 then log = string.sub(log, drop + 1) end
  return log .. entry
end
