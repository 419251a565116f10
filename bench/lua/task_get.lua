-- GET /api/v1/tasks/{id}: each request a random user and one of that user's own tasks.
local bench = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function init(args)
    local d = bench.load()
    local reqs = {}
    for i = 1, 20000 do
        local u = d.users[(i - 1) % #d.users + 1]
        reqs[i] = bench.req("GET", "/api/v1/tasks/" .. bench.pick(u.tasks), u.token)
    end
    bench.cycle(bench.shuffle(reqs))
end
