-- GET /api/v1/tasks?limit=20 (the first page of what the user owns or is assigned), by the
-- users who belong to no project: a personal list, to compare with project_list.
local bench = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function init(args)
    local d = bench.load()
    local reqs = {}
    for _, u in ipairs(d.users) do
        if #u.projects == 0 then
            reqs[#reqs + 1] = bench.req("GET", "/api/v1/tasks?limit=20", u.token)
        end
    end
    if #reqs == 0 then -- nobody without projects: everyone
        for _, u in ipairs(d.users) do
            reqs[#reqs + 1] = bench.req("GET", "/api/v1/tasks?limit=20", u.token)
        end
    end
    bench.cycle(reqs)
end
