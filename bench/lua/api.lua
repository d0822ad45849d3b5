-- (d) one fixed API request:  wrk … -s api.lua URL -- METHOD TOKEN BODY CAP
-- METHOD GET|POST, TOKEN "-" for none, BODY "-" for none. Used both for
-- POST /api/v1/uploads/multipart and for GET /healthz, so both carry the
-- same Lua overhead on the wrk side.
dofile(os.getenv("BENCH_LUA") .. "/stats.lua")

function init(args)
  wrk.method = args[1]
  if args[2] ~= "-" then wrk.headers["Authorization"] = "Bearer " .. args[2] end
  if args[3] ~= "-" then
    wrk.body = args[3]
    wrk.headers["Content-Type"] = "application/json"
  end
  bench_init(args[4])
end

function response(status, headers, body)
  bench_response(status)
end
