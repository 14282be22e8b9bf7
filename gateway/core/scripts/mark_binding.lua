-- mark_binding: set a binding's status only if it still names the openid WeChat answered about; the customer
-- may have been bound to another openid since the send, and that new binding must stay active.
-- KEYS[1] binding hash   ARGV[1] openid   ARGV[2] new status
-- Returns 1 if marked, 0 if the binding names another openid or is gone.
if redis.call('HGET', KEYS[1], 'openid') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'status', ARGV[2])
  return 1
end
return 0
