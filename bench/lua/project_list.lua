-- A member of several projects lists and searches: the first page of everything they may see
-- (personal tasks and every project's), one project's page (?project_id=), and searches for a
-- seeded word across everything and within one project, in equal parts.
local bench = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function init(args)
    local d = bench.load()
    local members = {}
    for _, u in ipairs(d.users) do
        if #u.projects > 0 then
            members[#members + 1] = u
        end
    end
    assert(#members > 0, "no user belongs to a project (seed with --projects > 0)")
    local reqs = {}
    for i = 1, 4000 do
        local u = members[(i - 1) % #members + 1]
        local p = bench.pick(u.projects)
        local kind = i % 4
        local path
        if kind == 0 then
            path = "/api/v1/tasks?limit=20"
        elseif kind == 1 then
            path = "/api/v1/tasks?limit=20&project_id=" .. p
        elseif kind == 2 then
            path = "/api/v1/tasks?q=" .. bench.pick(d.words)
        else
            path = "/api/v1/tasks?project_id=" .. p .. "&q=" .. bench.pick(d.words)
        end
        reqs[i] = bench.req("GET", path, u.token)
    end
    bench.cycle(bench.shuffle(reqs))
end
