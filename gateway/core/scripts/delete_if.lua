-- delete_if: delete a key only if it still holds this value: a lock by its holder, an event id's claim by
-- the payload hash that made it.
-- KEYS[1] key   ARGV[1] the value it must hold
-- Returns 1 if deleted, 0 if it had expired or holds another value.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
