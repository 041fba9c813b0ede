-- JIT visibility for plugin authors (issue 18): trace aborts counted per
-- plugin file, from jit.attach in the runner's VM. gw.jit_report() returns
-- {NAME = {aborts = N, reasons = {["loop unroll limit reached"] = n, ...},
-- last = "file:line: reason"}}; the first aborts of each plugin are also
-- logged at debug level. A function or loop that keeps aborting gets
-- blacklisted by LuaJIT and then runs interpreted (often 10x slower): the
-- report says where and why.
local jutil = require("jit.util")

-- jit.vmdef (the abort messages) lives beside LuaJIT's other jit.* Lua files,
-- outside the runtime's module path: look where the installed version keeps it.
local function load_vmdef()
    local ok, v = pcall(require, "jit.vmdef")
    if ok then return v end
    local ver = jit.version:match("^LuaJIT (.*)$") or ""
    for _, dir in ipairs({ "/usr/share/luajit-" .. ver, "/usr/local/share/luajit-" .. ver }) do
        local f = loadfile(dir .. "/jit/vmdef.lua")
        if f then
            ok, v = pcall(f)
            if ok and type(v) == "table" then return v end
        end
    end
    return { traceerr = {} }
end
local vmdef = load_vmdef()

-- For bridge and plugin work: MOONGATE_JIT_DUMP=FILE writes LuaJIT's jit.v
-- trace log (which traces compiled, which aborted and why) of every worker VM
-- to FILE; MOONGATE_JIT_DUMP_MODE=tbisrmX (jit.dump's letters) writes the full
-- dump instead. Off by default; the modules come from LuaJIT's share dir.
local function jit_module(name)
    local ver = jit.version:match("^LuaJIT (.*)$") or ""
    for _, dir in ipairs({ "/usr/share/luajit-" .. ver, "/usr/local/share/luajit-" .. ver }) do
        if loadfile(dir .. "/jit/" .. name .. ".lua") then
            -- kept: jit.dump requires its helpers when it is switched on
            package.path = package.path .. ";" .. dir .. "/?.lua"
            local ok, m = pcall(require, "jit." .. name)
            if ok then return m end
        end
    end
    return nil
end

local M = {}
local by_source = {}   -- "@/path/NAME.lua" -> NAME
local report = {}
local log                  -- function(msg), debug level
local LOGGED_MAX = 5

function M.dump_from_env()
    local file = os.getenv("MOONGATE_JIT_DUMP")
    if not file or file == "" then return end
    local mode = os.getenv("MOONGATE_JIT_DUMP_MODE")
    local m = jit_module(mode and mode ~= "" and "dump" or "v")
    if m then
        if mode and mode ~= "" then m.on(mode, file) else m.on(file) end
    end
end

function M.register(source, name)
    by_source[source] = name
end

local function reason(code, info)
    local fmt = vmdef.traceerr[code] or ("error " .. tostring(code))
    if type(info) == "number" and fmt:find("%%d") then
        return fmt:format(info)
    elseif info ~= nil and fmt:find("%%s") then
        local s = type(info) == "function" and "a function" or tostring(info)
        return (fmt:gsub("%%s", s, 1))
    end
    return fmt
end

local function on_trace(what, _, func, pc, code, info)
    if what ~= "abort" then return end
    local fi = jutil.funcinfo(func, pc)
    local name = fi and by_source[fi.source]
    if not name then return end
    local r = report[name]
    if r == nil then
        r = { aborts = 0, reasons = {} }
        report[name] = r
    end
    local why = reason(code, info)
    r.aborts = r.aborts + 1
    r.reasons[why] = (r.reasons[why] or 0) + 1
    r.last = (fi.loc or "?") .. ": " .. why
    if r.aborts <= LOGGED_MAX and log then
        log("plugin " .. name .. ": JIT trace aborted at " .. r.last
            .. (r.aborts == LOGGED_MAX and " (further aborts are only counted: gw.jit_report())" or ""))
    end
end

function M.start(logger)
    log = logger
    jit.attach(on_trace, "trace")
end

-- A copy, so that callers cannot change the counters.
function M.snapshot()
    local out = {}
    for name, r in pairs(report) do
        local reasons = {}
        for k, v in pairs(r.reasons) do reasons[k] = v end
        out[name] = { aborts = r.aborts, reasons = reasons, last = r.last }
    end
    return out
end

return M
