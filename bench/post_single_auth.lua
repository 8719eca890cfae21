-- wrk script: POST one record (examples/single.json) to /predict with a bearer token taken from
-- the BENCH_TOKEN environment variable (bench/auth_bench.py sets it).
local path = os.getenv("BENCH_BODY") or "examples/single.json"
local handle = assert(io.open(path, "rb"), "cannot open " .. path)
local body = handle:read("*a")
handle:close()
local token = assert(os.getenv("BENCH_TOKEN"), "BENCH_TOKEN is not set")

wrk.method = "POST"
wrk.path = "/predict"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
