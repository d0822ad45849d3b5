-- Shared by every wrk script of the benchmark (loaded with dofile):
--  * counts, per thread, responses and non-2xx answers (bench_response, for
--    scripts that define wrk's `response` callback) or just requests sent
--    (bench_request, for scripts that must not: with a `response` callback wrk
--    copies every body into a Lua string, which for 1 MiB bodies makes wrk
--    itself the bottleneck; non-2xx then falls back to wrk's own count of
--    status >= 400),
--  * stops a thread after a cap of requests/responses, so every load loop is
--    bounded in count as well as in time (-d),
--  * prints one machine-readable line in done():
--      BENCH {"rps":…,"p50_ms":…,"p95_ms":…,"p99_ms":…,"non2xx":…,…}
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *ts);
]]
local function now()
  local ts = ffi.new("bench_timespec")
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC: comparable across threads
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

-- main state: remember the threads so done() can read their counters
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

-- thread state
responses, non2xx, cap, capped, t_start, t_stop, by_status = 0, 0, 0, 0, 0, 0, 0

function bench_init(cap_arg)
  cap = tonumber(cap_arg) or 0
  t_start = now()
end

local function count()
  responses = responses + 1
  if cap > 0 and responses >= cap and capped == 0 then
    capped, t_stop = 1, now()
    wrk.thread:stop()
  end
end

function bench_response(status)
  by_status = 1
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  count()
end

function bench_request()
  count()
end

function done(summary, latency, requests)
  local total, bad, any_capped, lua_status = 0, 0, false, false
  local first, last = math.huge, 0
  local secs = summary.duration / 1e6
  for _, t in ipairs(threads) do
    total = total + t:get("responses")
    bad = bad + t:get("non2xx")
    lua_status = lua_status or t:get("by_status") == 1
    local s = t:get("t_start")
    first = math.min(first, s)
    if t:get("capped") == 1 then
      any_capped = true
      last = math.max(last, t:get("t_stop"))
    else
      last = math.max(last, s + secs)
    end
  end
  -- wrk divides by the whole -d even when threads stopped early at the cap;
  -- then use the time until the last thread stopped instead.
  local rps = summary.requests / secs
  if any_capped then rps = total / (last - first) end
  local e = summary.errors
  if not lua_status then bad = e.status end
  io.write(string.format(
    'BENCH {"requests":%d,"responses":%d,"seconds":%.3f,"rps":%.1f,"mb_per_s":%.1f,' ..
    '"p50_ms":%.3f,"p95_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,' ..
    '"non2xx":%d,"non2xx_counted":"%s","socket_errors":%d,"timeouts":%d,"capped":%s}\n',
    summary.requests, total, any_capped and (last - first) or secs, rps,
    summary.bytes / 1e6 / secs,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    bad, lua_status and "lua response(): status not 2xx" or "wrk: status >= 400", e.connect + e.read + e.write + e.timeout, e.timeout,
    tostring(any_capped)))
end
