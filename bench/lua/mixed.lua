-- 60 % task_get, 20 % task_list, 10 % task_create, 5 % task_patch, 5 % search, shuffled.
local bench = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function init(args)
    local d = bench.load()
    local reqs = {}
    local function add(n, make)
        for _ = 1, n do
            local u = d.users[#reqs % #d.users + 1]
            reqs[#reqs + 1] = make(u)
        end
    end
    add(12000, function(u)
        return bench.req("GET", "/api/v1/tasks/" .. bench.pick(u.tasks), u.token)
    end)
    add(4000, function(u)
        return bench.req("GET", "/api/v1/tasks?limit=20", u.token)
    end)
    add(2000, function(u)
        return bench.req("POST", "/api/v1/tasks", u.token, bench.create_body(d.words))
    end)
    add(1000, function(u)
        return bench.req("PATCH", "/api/v1/tasks/" .. bench.pick(u.tasks), u.token,
                         bench.patch_body())
    end)
    add(1000, function(u)
        return bench.req("GET", "/api/v1/tasks?q=" .. bench.pick(d.words), u.token)
    end)
    bench.cycle(bench.shuffle(reqs))
end
