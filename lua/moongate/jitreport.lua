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

-- /status (admin): each worker publishes its report as JSON to the C board
-- (gateway/lua/jitboard.c), bounded: at most MAX_PLUGINS plugins, MAX_REASONS
-- reasons each, short strings, MG_JITBOARD_MAX bytes in all. Published on an
-- abort: at once for a plugin's first LOGGED_MAX aborts, a new reason, a
-- blacklisting and every power of two; otherwise at most once a second (so a
-- count may lag until the next abort).
local native = require("moongate.native")
local worker = nil         -- nil: do not publish (-t, tests)
local published_at = -1
local MAX_PLUGINS, MAX_REASONS, MAX_STARTS, MAX_TEXT, MAX_JSON = 32, 8, 16, 160, 4096
local starts = {}          -- trace number -> {func, pc} of its start (while recording)
local nstarts = 0
local band = bit.band
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

-- Blacklisted: LuaJIT turned the trace's start bytecode into its
-- interpreter-only form (ILOOP, IFORL, IITERL, IFUNCF, IFUNCV) after repeated
-- aborts there; it will not try to compile it again.
local function blacklisted(s)
    local ins = jutil.funcbc(s[1], s[2])
    if not ins or not vmdef.bcnames then return false end
    local op = band(ins, 0xff)
    local name = vmdef.bcnames:sub(op * 6 + 1, op * 6 + 6)
    return name:sub(1, 1) == "I"
end

local function cut(s)
    s = tostring(s)
    return #s > MAX_TEXT and s:sub(1, MAX_TEXT) .. "..." or s
end

local function to_json()
    local json = native.json
    local out, n = {}, 0
    for name, r in pairs(report) do
        n = n + 1
        if n > MAX_PLUGINS then break end
        local reasons, k = {}, 0
        for why, c in pairs(r.reasons) do
            k = k + 1
            if k > MAX_REASONS then break end
            reasons[cut(why)] = c
        end
        local bl = 0
        for _, st in pairs(r.starts) do
            if blacklisted(st) then bl = bl + 1 end
        end
        out[cut(name)] = { aborts = r.aborts, blacklisted = bl, reasons = reasons, last = cut(r.last) }
    end
    local s = json.encode(out)
    if s == "[]" then s = "{}" end -- an empty table encodes as an array
    if s and #s > MAX_JSON then
        for _, v in pairs(out) do v.reasons = nil end
        s = json.encode(out)
    end
    return s
end

local function publish(force)
    if worker == nil then return end
    local now = os.time()
    if not force and now == published_at then return end
    published_at = now
    local s = to_json()
    if s and #s <= MAX_JSON then native.jit_publish(worker, s) end
end

local function on_trace(what, tr, func, pc, code, info)
    if what == "start" then
        if nstarts > 256 then starts, nstarts = {}, 0 end
        starts[tr] = { func, pc }
        nstarts = nstarts + 1
        return
    end
    if what ~= "abort" then return end
    local fi = jutil.funcinfo(func, pc)
    local name = fi and by_source[fi.source]
    if not name then return end
    local r = report[name]
    if r == nil then
        r = { aborts = 0, reasons = {}, starts = {}, nstarts = 0 }
        report[name] = r
    end
    local st = starts[tr]
    local now_blacklisted = false
    if st then
        local key = tostring(st[1]) .. ":" .. st[2]
        if r.starts[key] == nil and r.nstarts < MAX_STARTS then
            r.starts[key] = st
            r.nstarts = r.nstarts + 1
        end
        -- LuaJIT blacklists before it reports the abort: this abort may be the last
        now_blacklisted = r.starts[key] ~= nil and blacklisted(st)
    end
    local why = reason(code, info)
    r.aborts = r.aborts + 1
    local new_reason = r.reasons[why] == nil
    r.reasons[why] = (r.reasons[why] or 0) + 1
    r.last = (fi.loc or "?") .. ": " .. why
    if r.aborts <= LOGGED_MAX and log then
        log("plugin " .. name .. ": JIT trace aborted at " .. r.last
            .. (r.aborts == LOGGED_MAX and " (further aborts are only counted: gw.jit_report())" or ""))
    end
    -- what an operator should see at once; the rest at most once a second
    publish(r.aborts <= LOGGED_MAX or new_reason or now_blacklisted or band(r.aborts, r.aborts - 1) == 0)
end

-- worker: the worker's number, for /status (nil: not published).
function M.start(logger, worker_id)
    log = logger
    worker = worker_id
    if worker ~= nil then native.jit_publish(worker, "{}") end -- a new VM: forget the old one's
    jit.attach(on_trace, "trace")
end

-- A copy, so that callers cannot change the counters.
function M.snapshot()
    local out = {}
    for name, r in pairs(report) do
        local reasons = {}
        for k, v in pairs(r.reasons) do reasons[k] = v end
        local bl = 0
        for _, st in pairs(r.starts) do
            if blacklisted(st) then bl = bl + 1 end
        end
        out[name] = { aborts = r.aborts, blacklisted = bl, reasons = reasons, last = r.last }
    end
    return out
end

return M
