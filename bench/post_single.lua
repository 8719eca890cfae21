-- wrk script: POST one record (examples/single.json, byte for byte) to /predict.
-- The body file can be changed with the BENCH_BODY environment variable; run wrk from the
-- repository root or set it to an absolute path.
local path = os.getenv("BENCH_BODY") or "examples/single.json"
local handle = assert(io.open(path, "rb"), "cannot open " .. path)
local body = handle:read("*a")
handle:close()

wrk.method = "POST"
wrk.path = "/predict"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
