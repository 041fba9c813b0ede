-- Pooled coroutines for plugin runs that may wait (gateway/lua/task.c is the
-- C half). A job runs inside a coroutine of the pool; a waiting function
-- (gw_io.lua) has C start its operation and yields WAIT up to drive(), which
-- parks the coroutine under a key that C keeps in its task. resume(key) runs
-- it on; abandon(key) drops it (never resumed: the GC takes it).
--
-- Invariants: a job never raises (it catches its plugins' errors), so a
-- coroutine that ends its job goes back to the pool; `current` is the
-- coroutine being driven, so a wait from a plugin's own coroutine is refused.
local lio = require("moongate.lio")

local M = {}

local create, resume, yield, running = coroutine.create, coroutine.resume, coroutine.yield,
    coroutine.running

local DONE, WAIT = {}, {}
local POOL_MAX = 256

local pool, npool = {}, 0
local suspended = {}
local next_key = 0
local current = nil

local function main(job, a, b, c)
    while true do
        local r = job(a, b, c)
        job, a, b, c = yield(DONE, r)
    end
end

local function park(co)
    repeat
        next_key = next_key + 1
        if next_key >= 2 ^ 30 then next_key = 1 end
    until suspended[next_key] == nil
    suspended[next_key] = co
    return next_key
end

-- Runs co on with the arguments; returns the job's result (boolean: a plugin
-- failed) or the key of the parked coroutine (number: it waits).
local function drive(co, ...)
    local prev = current
    current = co
    local ok, tag, r = resume(co, ...)
    current = prev
    if ok and tag == DONE then
        if npool < POOL_MAX then
            npool = npool + 1
            pool[npool] = co
        end
        return r
    end
    if ok and tag == WAIT then
        return park(co)
    end
    lio.fail(ok and "coroutine.yield() outside a coroutine of the plugin's own"
        or ("runner coroutine: " .. tostring(tag)))
    return true
end

-- Starts job(a, b, c) in a pooled coroutine.
function M.run(job, a, b, c)
    local co
    if npool > 0 then
        co = pool[npool]
        pool[npool] = nil
        npool = npool - 1
    else
        co = create(main)
    end
    return drive(co, job, a, b, c)
end

function M.resume(key)
    local co = suspended[key]
    if co == nil then return true end
    suspended[key] = nil
    return drive(co)
end

function M.abandon(key)
    suspended[key] = nil
end

-- Waits for the operation C just started for the running task; returns its
-- results.
function M.wait()
    yield(WAIT)
    return lio.take()
end

-- Whether a waiting function may be called here (else its error message).
function M.check(what)
    local co = running()
    if co ~= nil and co == current and lio.can_wait() then return end
    if co ~= nil and current ~= nil and co ~= current then
        error(what .. ": cannot wait inside a coroutine the plugin created", 3)
    end
    error(what .. ": cannot wait here (only in access, log and timer callbacks, and in a"
        .. " plugin the runner knows waits: see docs/plugins.md, Plugins that wait)", 3)
end

function M.stats()
    local n = 0
    for _ in pairs(suspended) do n = n + 1 end
    return npool, n
end

return M
