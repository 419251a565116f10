-- POST /api/v1/tasks with a varied title, description, priority, label and status.
local bench = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function init(args)
    local d = bench.load()
    local reqs = {}
    for i = 1, 5000 do
        local u = d.users[(i - 1) % #d.users + 1]
        reqs[i] = bench.req("POST", "/api/v1/tasks", u.token, bench.create_body(d.words))
    end
    bench.cycle(bench.shuffle(reqs))
end
