-- GET /api/v1/tasks?limit=20 (the first page of what the user owns or is assigned).
local bench = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function init(args)
    local d = bench.load()
    local reqs = {}
    for _, u in ipairs(d.users) do
        reqs[#reqs + 1] = bench.req("GET", "/api/v1/tasks?limit=20", u.token)
    end
    bench.cycle(reqs)
end
