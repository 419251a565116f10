-- POST /api/v1/auth/login with each user's email and password in turn (one Argon2id
-- verification per request). Every login opens a session; past auth.max_sessions the user's
-- least recently used session is revoked, so run.sh gives it users whose tokens no later
-- scenario needs (BENCH_USER_RANGE).
local bench = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function init(args)
    local d = bench.load()
    assert(d.password, "no password in the data file")
    local reqs = {}
    for _, u in ipairs(d.users) do
        local body = string.format('{"email":%s,"password":%s}', bench.jstr(u.email),
                                   bench.jstr(d.password))
        reqs[#reqs + 1] = bench.req("POST", "/api/v1/auth/login", nil, body)
    end
    bench.cycle(reqs)
end
