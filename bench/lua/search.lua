-- GET /api/v1/tasks?q=<word>: full-text search for a word of the seeded vocabulary.
local bench = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function init(args)
    local d = bench.load()
    local reqs = {}
    for i = 1, 5000 do
        local u = d.users[(i - 1) % #d.users + 1]
        reqs[i] = bench.req("GET", "/api/v1/tasks?q=" .. bench.pick(d.words), u.token)
    end
    bench.cycle(bench.shuffle(reqs))
end
