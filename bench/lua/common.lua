-- Shared by every wrk scenario script (loaded with dofile into each of wrk's Lua states).
--
-- Reads the data file the seeding step wrote (BENCH_DATA), restricted to BENCH_USER_RANGE
-- ("lo-hi", 1-based, inclusive) when set; counts the status of every response (the per-thread
-- globals `codes` and `non2xx`); and at the end writes one JSON object to BENCH_OUT with the
-- request count, latency percentiles (microseconds), socket errors and status counts.
--
-- wrk's Lua has no per-connection hook (request() does not say which connection asks), so a
-- scenario pre-builds a list of requests that rotates over the users and wrk.request() walks
-- it: the 32 connections spread over all the users' tokens, request by request.

local M = {}

math.randomseed(tonumber(os.getenv("BENCH_SEED") or "1"))

-- The seeded data: {users = {{token, id, email, tasks = {ids}, projects = {ids}}},
-- words = {...}, password}.
function M.load()
    local path = assert(os.getenv("BENCH_DATA"), "BENCH_DATA is not set")
    local d = {users = {}, words = {}, password = nil}
    local cur = nil
    for line in io.lines(path) do
        local kind, rest = line:match("^(%a) (.*)$")
        if kind == "U" then
            local token, id, email = rest:match("^(%S+) (%S+) (%S+)$")
            cur = {token = token, id = id, email = email, tasks = {}, projects = {}}
            d.users[#d.users + 1] = cur
        elseif kind == "T" then
            cur.tasks[#cur.tasks + 1] = rest
        elseif kind == "J" then
            cur.projects[#cur.projects + 1] = rest
        elseif kind == "W" then
            d.words[#d.words + 1] = rest
        elseif kind == "P" then
            d.password = rest
        end
    end
    local lo, hi = (os.getenv("BENCH_USER_RANGE") or ""):match("^(%d+)-(%d+)$")
    if lo then
        local picked = {}
        for i = tonumber(lo), math.min(tonumber(hi), #d.users) do
            picked[#picked + 1] = d.users[i]
        end
        d.users = picked
    end
    assert(#d.users > 0, "no users in " .. path)
    return d
end

function M.pick(list)
    return list[math.random(#list)]
end

-- A request string; token and body are optional.
function M.req(method, path, token, body)
    local headers = {}
    if token then
        headers["Authorization"] = "Bearer " .. token
    end
    if body then
        headers["Content-Type"] = "application/json"
    end
    return wrk.format(method, path, headers, body)
end

-- JSON string literal (the seeded words and ids are plain ASCII; escape the few specials).
function M.jstr(s)
    return '"' .. s:gsub('[%c"\\]', function(c)
        return string.format("\\u%04x", c:byte())
    end) .. '"'
end

local statuses = {"todo", "in_progress", "done"}
local priorities = {"low", "medium", "high", "urgent"}
local labels = {"backend", "frontend", "ops", "docs", "bug", "feature", "urgent", "later"}

function M.create_body(words)
    local t = {}
    for i = 1, 3 + math.random(3) do
        t[i] = M.pick(words)
    end
    local title = table.concat(t, " ")
    local d = {}
    for i = 1, 8 + math.random(16) do
        d[i] = M.pick(words)
    end
    return string.format(
        '{"title":%s,"description":%s,"priority":"%s","labels":["%s"],"status":"%s"}',
        M.jstr(title), M.jstr(table.concat(d, " ") .. "."), M.pick(priorities), M.pick(labels),
        M.pick(statuses))
end

function M.patch_body()
    return string.format('{"status":"%s"}', M.pick(statuses))
end

-- Shuffles list in place.
function M.shuffle(list)
    for i = #list, 2, -1 do
        local j = math.random(i)
        list[i], list[j] = list[j], list[i]
    end
    return list
end

-- Makes wrk send reqs[1], reqs[2], ... round and round.
function M.cycle(reqs)
    assert(#reqs > 0, "no requests")
    local i, n = 0, #reqs
    request = function()
        i = i + 1
        if i > n then
            i = 1
        end
        return reqs[i]
    end
end

-- ---- status counting (thread state) and the result (main state) ----

codes = {}
non2xx = 0

function response(status, headers, body)
    codes[status] = (codes[status] or 0) + 1
    if status < 200 or status > 299 then
        non2xx = non2xx + 1
    end
end

local threads = {}

function setup(thread)
    threads[#threads + 1] = thread
end

function done(summary, latency, requests)
    local total_non2xx, all = 0, {}
    for _, t in ipairs(threads) do
        total_non2xx = total_non2xx + (t:get("non2xx") or 0)
        for k, v in pairs(t:get("codes") or {}) do
            all[k] = (all[k] or 0) + v
        end
    end
    local parts = {}
    for k, v in pairs(all) do
        parts[#parts + 1] = string.format('"%d":%d', k, v)
    end
    local e = summary.errors
    local out = string.format(
        '{"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"codes":{%s},' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
        '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d}}\n',
        summary.requests, summary.duration, summary.bytes, total_non2xx, table.concat(parts, ","),
        e.connect, e.read, e.write, e.timeout, e.status, latency:percentile(50),
        latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.mean,
        latency.max)
    local path = os.getenv("BENCH_OUT")
    if path and path ~= "" then
        local f = assert(io.open(path, "w"))
        f:write(out)
        f:close()
    else
        io.write(out)
    end
end

return M
