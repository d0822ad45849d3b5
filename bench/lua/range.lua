-- (c) random byte ranges of one file:  wrk … -s range.lua URL -- FILE_SIZE CHUNK CAP
-- Every request asks `Range: bytes=a-(a+CHUNK-1)` at a uniformly random a;
-- No `response` callback (it would copy each body into Lua): errors are
-- wrk's count of status >= 400; run.sh checks by hand beforehand that both
-- servers answer a range with a 206 of the right length.
dofile(os.getenv("BENCH_LUA") .. "/stats.lua")

local size, chunk
function init(args)
  size, chunk = tonumber(args[1]), tonumber(args[2])
  bench_init(args[3])
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

function request()
  bench_request()
  local a = math.random(0, size - chunk)
  return wrk.format(nil, nil, { ["Range"] = string.format("bytes=%d-%d", a, a + chunk - 1) })
end
