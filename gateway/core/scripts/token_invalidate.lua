-- token_invalidate: forget the shared access token, but only if it is the one that failed.
-- KEYS[1] token hash   ARGV[1] the token WeChat rejected
-- Returns 1 if it was removed, 0 if another process already replaced it.
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
