-- wrk script for bench/run.py: POSTs batches of 100 Campaign-like events, generated here so the
-- load generator (C + LuaJIT) does not compete for the receiver's Python time.
-- Arguments: run_id, "Basic ...", mode (fresh|replay), first_batch, batches (replay range or
-- fresh limit, 0 = none), delay_ms, threads, base_ms (the `created` of event 0: recent, so
-- events land in the current month's partition as real traffic does).
-- Batch b holds events b*100+1 .. b*100+100; even events carry an `id`, odd ones none.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  run, auth, mode = args[1], args[2], args[3]
  first_batch = tonumber(args[4]) or 0
  batches = tonumber(args[5]) or 0
  delay_ms = tonumber(args[6]) or 0
  nthreads = tonumber(args[7]) or 1
  base_ms = tonumber(args[8]) or 1617108575391
  n, ok, bad, duplicates_only = 0, 0, 0, 0
  types = {"sent", "open", "sent", "click", "sent", "open", "bounce", "unsubscribe"}
  headers = {["Authorization"] = auth, ["Content-Type"] = "application/json"}
end

local function event(k)
  local id = ""
  if k % 2 == 0 then id = string.format('"id":"%s-e%d",', run, k) end
  return string.format(
    '{%s"type":"%s","recipientId":"user%d@example.com","userListId":10180860004,' ..
    '"clientId":10180860001,"created":%d,"subscriptionId":10227900201,"mailId":"%s-%d",' ..
    '"mailingId":10230355206,"mediaTypesToAddresses":{"EMAIL":"user%d@example.com"},' ..
    '"device":"desktop","operatingSystem":"Windows 10","browser":"Firefox 64.1",' ..
    '"remoteAddress":"0.0.0.0"}',
    id, types[(k % #types) + 1], k % 100000, base_ms + k, run, k, k % 100000)
end

local function batch(b)
  local parts = {}
  for i = 1, 100 do parts[i] = event(b * 100 + i) end
  return "[" .. table.concat(parts, ",") .. "]"
end

function request()
  local b
  if mode == "replay" then
    b = first_batch + (tid + n * nthreads) % batches
  else
    b = first_batch + tid + n * nthreads
  end
  n = n + 1
  return wrk.format("POST", "/webhook", headers, batch(b))
end

function delay()
  return delay_ms
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
    if string.find(body, '"stored":0', 1, true) then duplicates_only = duplicates_only + 1 end
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local started, oks, bads, dups = 0, 0, 0, 0
  local per_thread = {}
  for _, t in ipairs(threads) do
    started = started + t:get("n")
    oks = oks + t:get("ok")
    bads = bads + t:get("bad")
    dups = dups + t:get("duplicates_only")
    table.insert(per_thread, tostring(t:get("n")))
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"started":%d,"ok":%d,"bad":%d,"duplicates_only":%d,"duration_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"per_thread":[%s]}\n',
    started, oks, bads, dups, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout,
    table.concat(per_thread, ",")))
end
