-- replay.lua: wrk sends requests built and signed beforehand (loadtest/wrk.py), each at most once, and counts
-- the answers by HTTP status and by the "status" fields of their JSON bodies (queued, digested, ...).
--
-- wrk ... -s replay.lua URL -- FILE MODE THREADS
--   FILE     records "<length>\n<raw HTTP request of that many bytes>", one after another
--   MODE     "once": a thread that has sent all its records stops and says so (exhausted) rather than send
--            one again (a repeated event is a duplicate, not load); "wrap": start over (the hello server only)
--   THREADS  wrk's -t: thread i (from 0) takes records i, i + THREADS, ...
-- done() prints one line: "wrk-json " and a JSON object (requests, duration_us, exhausted, latency_us,
-- errors, statuses, outcomes).

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

local function load_records(path, index, count)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  local records, pos, n = {}, 1, 0
  while pos <= #data do
    local newline = assert(data:find("\n", pos, true), "a record without its length line")
    local length = assert(tonumber(data:sub(pos, newline - 1)), "a bad length line")
    if n % count == index then
      records[#records + 1] = data:sub(newline + 1, newline + length)
    end
    n = n + 1
    pos = newline + 1 + length
  end
  return records
end

-- sent once the records are spent, by each connection that asks before the thread stops: changes nothing
local idle_request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

function init(args)
  records = load_records(args[1], index, tonumber(args[3]) or 1)
  wrap = args[2] == "wrap"
  next_record, exhausted = 1, 0
  statuses, outcomes = {}, {}
end

function request()
  if next_record > #records then
    if not wrap or #records == 0 then
      exhausted = 1
      wrk.thread:stop()
      return idle_request
    end
    next_record = 1
  end
  local record = records[next_record]
  next_record = next_record + 1
  return record
end

function response(status, headers, body)
  if exhausted == 1 then
    return -- an idle request's answer, or one that came after the stop: the run is flagged, not counted
  end
  local code = tostring(status)
  statuses[code] = (statuses[code] or 0) + 1
  for outcome in body:gmatch('"status"%s*:%s*"([%a_]+)"') do
    outcomes[outcome] = (outcomes[outcome] or 0) + 1
  end
end

local function add_into(total, part)
  for key, n in pairs(part) do
    total[key] = (total[key] or 0) + n
  end
end

-- keys are digits or letters and underscores (see response()), so they need no JSON escaping
local function json_counts(counts)
  local parts = {}
  for key, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%s":%d', key, n)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local all_statuses, all_outcomes, exhausted_threads = {}, {}, 0
  for _, thread in ipairs(threads) do
    add_into(all_statuses, thread:get("statuses"))
    add_into(all_outcomes, thread:get("outcomes"))
    exhausted_threads = exhausted_threads + thread:get("exhausted")
  end
  local errors = summary.errors
  io.write(string.format(
    'wrk-json {"requests":%d,"duration_us":%d,"exhausted":%d,'
      .. '"latency_us":{"p50":%d,"p99":%d,"max":%d},'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
      .. '"statuses":%s,"outcomes":%s}\n',
    summary.requests, summary.duration, exhausted_threads,
    latency:percentile(50), latency:percentile(99), latency.max,
    errors.connect, errors.read, errors.write, errors.timeout,
    json_counts(all_statuses), json_counts(all_outcomes)))
end
