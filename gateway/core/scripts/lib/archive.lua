-- archive (library prepended to the scripts that write a final state): hand an event record's state to the
-- PostgreSQL archive in the same atomic step that wrote it (workers/archive.py reads the stream through the
-- `archiver` group). The entry is a snapshot of the record, less its payload hash and recipient hash; the
-- record's `arch_v` grows by one at each snapshot, so the archive keeps the latest state whatever order two
-- archivers write in. `stream` false: no archive is configured, nothing is written.
local function archive_record(stream, record)
  if not stream then return end
  redis.call('HINCRBY', record, 'arch_v', 1)
  local fields = redis.call('HGETALL', record)
  local kept = {}
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name ~= 'hash' and name ~= 'to_hash' then
      kept[#kept + 1] = name
      kept[#kept + 1] = fields[i + 1]
    end
  end
  redis.call('XADD', stream, '*', unpack(kept))
end
