-- The Lua half of `moongate test SPEC.lua` (gateway/lua/spec.c): describe/it,
-- assert helpers and request{}, which yields the request to the core; the core
-- runs it through the route's real phases and resumes with the result:
--   {status, body, headers = {name = {values}}, responded (a plugin answered),
--    error (a plugin raised), upstream = {path, query, headers, body} (what
--    would be proxied; nil when a plugin responded)}
local M = {}

local results = { passed = 0, failed = 0 }
local prefix = {}

local function fmt(v)
    if type(v) == "string" then return string.format("%q", v) end
    return tostring(v)
end

local function new_assert()
    local a = {}
    setmetatable(a, { __call = function(_, v, msg, ...)
        if not v then error(msg or "assertion failed", 2) end
        return v, msg, ...
    end })
    function a.equal(want, got, msg)
        if want ~= got then
            error((msg and msg .. ": " or "") .. "expected " .. fmt(want) .. ", got " .. fmt(got), 2)
        end
    end
    function a.truthy(v, msg) if not v then error(msg or "expected a true value", 2) end end
    function a.falsy(v, msg) if v then error(msg or ("expected a false value, got " .. fmt(v)), 2) end end
    function a.matches(pattern, s, msg)
        if type(s) ~= "string" or not s:find(pattern) then
            error((msg and msg .. ": " or "") .. fmt(s) .. " does not match " .. fmt(pattern), 2)
        end
    end
    function a.errors(fn, pattern)
        local ok, err = pcall(fn)
        if ok then error("expected an error", 2) end
        if pattern and not tostring(err):find(pattern) then
            error("error " .. fmt(tostring(err)) .. " does not match " .. fmt(pattern), 2)
        end
    end
    return a
end

-- The environment a spec runs in: the sandbox's plus the harness.
function M.env(base, out)
    local env = setmetatable({}, { __index = base })
    env.assert = new_assert()
    env.describe = function(name, fn)
        prefix[#prefix + 1] = name
        fn()
        prefix[#prefix] = nil
    end
    env.it = function(name, fn)
        local full = table.concat(prefix, " ") .. (#prefix > 0 and " " or "") .. name
        local ok, err = xpcall(fn, function(e) return debug.traceback(tostring(e), 2) end)
        if ok then
            results.passed = results.passed + 1
            out("ok     " .. full)
        else
            results.failed = results.failed + 1
            out("FAILED " .. full .. "\n       " .. tostring(err):gsub("\n", "\n       "))
        end
    end
    env.request = function(req)
        if type(req) ~= "table" then error("request{} expects a table", 2) end
        return coroutine.yield(req)
    end
    return env
end

function M.results()
    return results.passed, results.failed
end

return M
