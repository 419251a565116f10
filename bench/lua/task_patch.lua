-- PATCH /api/v1/tasks/{id} {"status": ...} on one of the user's own tasks (no If-Match).
local bench = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function init(args)
    local d = bench.load()
    local reqs = {}
    for i = 1, 20000 do
        local u = d.users[(i - 1) % #d.users + 1]
        reqs[i] = bench.req("PATCH", "/api/v1/tasks/" .. bench.pick(u.tasks), u.token,
                            bench.patch_body())
    end
    bench.cycle(bench.shuffle(reqs))
end
