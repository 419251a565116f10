-- GET /api/v1/users/me, rotating over the users' tokens.
local bench = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function init(args)
    local d = bench.load()
    local reqs = {}
    for _, u in ipairs(d.users) do
        reqs[#reqs + 1] = bench.req("GET", "/api/v1/users/me", u.token)
    end
    bench.cycle(reqs)
end
