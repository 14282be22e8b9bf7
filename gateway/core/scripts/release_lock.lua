-- release_lock: delete a lock only if this holder still owns it.
-- KEYS[1] lock key   ARGV[1] the holder's random value
-- Returns 1 if released, 0 if it had expired or been taken by another holder.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
