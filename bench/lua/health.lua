-- GET /health, no token (also the script of the nginx ceiling, which answers every path).
local bench = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function init(args)
    bench.cycle({bench.req("GET", "/health")})
end
