-- wrk script of bench/load.py: method and body from the environment, an optional request limit,
-- and one machine-readable line at the end (latencies in microseconds).
--
-- With BENCH_LIMIT=N a thread stops after N responses. wrk itself always runs for its -d duration, so
-- each thread notes its own start and stop times (CLOCK_MONOTONIC through LuaJIT's ffi) and done()
-- reports the elapsed time of the limited run as "limited_us".
wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY") or ""
if body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local function now_us()
  local ts = ffi.new("bench_timespec")
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

local limit = tonumber(os.getenv("BENCH_LIMIT") or "0") or 0
if limit > 0 then
  local count = 0
  init = function(args)
    t_start = now_us()
  end
  response = function(status, headers, body)
    count = count + 1
    if count == limit then
      t_stop = now_us()
      wrk.thread:stop()
    end
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  local limited = 0
  if limit > 0 then
    local first, last = nil, 0
    for _, t in ipairs(threads) do
      local s, f = t:get("t_start"), t:get("t_stop")
      if s == nil or f == nil then
        last = nil
        break
      end
      if first == nil or s < first then first = s end
      if f > last then last = f end
    end
    if first ~= nil and last ~= nil then limited = last - first end
  end
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"limited_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, limited, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
