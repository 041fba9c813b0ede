-- The plugin runner: the Lua half of gateway/lua/vm.c.
--
-- C calls five functions of this module, each inside a protected call:
--   boot(...)                          once per VM
--   load(id, name, chunk) -> caps      per plugin file (chunk already guarded)
--   entry(route, kind, id, conf, positions) -> mask   per route entry: checks
--                                      P.schema, runs init(conf)
--   runner(route, phase) -> fn()   a chain's pre-bound entry (made once; the
--                                      slot is in vm->cur_slot)
--   balancer(route) -> fn([id[, n, targets]])   the same for the route's
--                                      balancer; its pick goes to vm->pick
--   run(route, phase, slot) -> failed       a route's chain for one phase
--   run_waiting(route, phase, slot) -> failed | key   the same in a coroutine
--   resume(key, phase), abandon(key), timer(id), init_worker()   (task.c)
--   balance(route, slot, id, n, targets)   the route's balancer (vm->pick)
-- A slot names the request's pooled ctx object (C binds it and resets its
-- flags: moongate/ctx.lua); `id` names the targets array, given when it is
-- not the one the entry saw last; `n` and `targets` (the C array, as a light
-- userdata) come only until the array `id` has been wrapped. A balancer's
-- result that is not a number means no target (vm->pick 0).
--
-- Invariants: chains hold the plugin functions and conf tables captured at
-- load, in config order; the per-request ctx object comes from the pool by
-- slot; C times the first plugin of a chain, the runner reports the next ones
-- (plugin_enter), so a one-plugin chain makes no extra FFI call.
local ffi = require("ffi")
local ctxm = require("moongate.ctx")
local gwm = require("moongate.gw")
local sandbox = require("moongate.sandbox")
local coro = require("moongate.coro")
local gw_io = require("moongate.gw_io")
local lio = require("moongate.lio")
local ext = require("moongate.ext")
local gwext = require("moongate.gwext")
local schema = require("moongate.schema")
local jitreport = require("moongate.jitreport")

local M = {}
local type = type -- an upvalue: the JIT folds it (a global is a lookup and a guard per use)

-- enum mg_lua_phase
local INIT, ACCESS, BALANCE, RESPONSE, LOG = 0, 1, 2, 3, 4
local PHASE_OF = { init = INIT, access = ACCESS, balance = BALANCE, response = RESPONSE, log = LOG }
local bfchains = {}                     -- [route] = chain of P.body_filter
local CHAIN_FUNCS = { { ACCESS, "access" }, { RESPONSE, "response" }, { LOG, "log" } }

local gw, stop
local modules = {}                      -- plugin id -> the table its file returned
local chains = { [ACCESS] = {}, [RESPONSE] = {}, [LOG] = {} } -- [phase][route]
local balancers = {}                    -- [route] = {fn, conf, id}
local objs = {}                         -- slot -> pooled ctx object
local tcache = {}                       -- targets array id -> wrapped view
local may_wait = {}                     -- plugin id -> its code names a waiting function
local init_workers = {}                 -- {fn, conf, id} per route entry with init_worker

local new_ctx, responded, responded_slot = ctxm.new_ctx, ctxm.responded, ctxm.responded_slot
local enter = ctxm.plugin_enter
local bor, lshift = bit.bor, bit.lshift

local PICK -- &vm->pick: where a balance call leaves its result for C
local SLOT -- &vm->cur_slot: the slot of a pre-bound entry's call

function M.boot(vm_lud, api_lud, stop_lud, worker_id, checking, seed, flags_lud, phase_lud, pick_lud,
                slot_lud)
    ctxm.boot(api_lud, vm_lud, flags_lud, phase_lud)
    PICK = ffi.cast("double *", pick_lud)
    SLOT = ffi.cast("const int32_t *", slot_lud) -- an int: a table index with no conversion
    ext.boot(vm_lud)
    stop = ffi.cast("const uint8_t *", stop_lud)
    gw = gwm.new(worker_id, checking)
    math.randomseed(seed)
    sandbox.protect_string_metatable()
    if not checking then
        jitreport.start(function(msg) pcall(ctxm.log, 0, msg) end, worker_id)
        jitreport.dump_from_env()
    end
end

-- What the guard check calls once the watchdog set the stop byte; level 3
-- blames the plugin line whose loop or call was stopped (level 2 is the
-- check function the guard prologue defines).
local function guard_abort()
    error(ctxm.guard_message(), 3)
end

local function plugin_print(...)
    gw.log("info", ...)
end

-- require("NAME") of a helper module from plugin_path (DESIGN.md 10.4): loaded
-- once per VM, while plugins load, in a sandbox of its own (guarded like a
-- plugin file); later requires of the same name get the same value.
local native = require("moongate.native")
local helpers = {}
local LOADING = {}

local function helper_loader(name)
    local v = helpers[name]
    if v == LOADING then error("require(\"" .. name .. "\"): circular require", 3) end
    if v ~= nil then return v end
    if not gwext.loading then
        error("require(\"" .. name .. "\"): helper modules load with the plugins"
            .. " (require them at the top of the plugin file)", 3)
    end
    local chunk, path = native.load_module(name)
    if chunk == nil then
        error("require(\"" .. name .. "\"): " .. tostring(path)
            .. " (plugins may also require string, table, math, bit, coroutine, os, gw,"
            .. " table.new, table.clear)", 3)
    end
    local env = sandbox.env(gw, plugin_print)
    rawset(env, "__mg_w", stop)
    rawset(env, "__mg_a", guard_abort)
    setfenv(chunk, env)
    jitreport.register("@" .. path, name)
    helpers[name] = LOADING
    local ok, res = pcall(chunk, name)
    if not ok then
        helpers[name] = nil
        error(res, 0)
    end
    if res == nil then res = true end
    helpers[name] = res
    return res
end
sandbox.helper_loader = helper_loader

-- moongate test SPEC.lua: the environment specs run in (gateway/lua/spec.c).
function M.spec_env()
    return sandbox.env(gw, plugin_print)
end

function M.load(id, name, chunk)
    local env = sandbox.env(gw, plugin_print)
    rawset(env, "__mg_w", stop)
    rawset(env, "__mg_a", guard_abort)
    setfenv(chunk, env)
    -- A plugin whose code names a waiting function runs its access and log
    -- phases in a coroutine; the others keep the direct call (P.waits overrides).
    local bc = string.dump(chunk, true) -- stripped: constants only, not the file path
    may_wait[id] = bc:find("sleep", 1, true) ~= nil or bc:find("http", 1, true) ~= nil
        or bc:find("redis", 1, true) ~= nil
    jitreport.register(require("jit.util").funcinfo(chunk).source, name)
    gwext.loading = true
    local okc, P = pcall(chunk, name)
    gwext.loading = false
    if not okc then error(P, 0) end
    if type(P) ~= "table" then
        error("the file must return a table of functions, got " .. type(P), 0)
    end
    local caps = 0
    for k, v in pairs(P) do
        local phase = PHASE_OF[k]
        if k == "init_worker" then
            if type(v) ~= "function" then
                error("'init_worker' must be a function, got " .. type(v), 0)
            end
        elseif k == "waits" then
            if type(v) ~= "boolean" and type(v) ~= "function" then
                error("'waits' must be a boolean or a function(conf), got " .. type(v), 0)
            end
        elseif phase ~= nil then
            if type(v) ~= "function" then
                error("'" .. k .. "' must be a function, got " .. type(v), 0)
            end
            caps = bor(caps, lshift(1, phase))
        elseif k == "body_filter" then
            if type(v) ~= "function" then error("'body_filter' must be a function, got " .. type(v), 0) end
        elseif k == "body" then
            if type(v) ~= "table" or M.size(v.max) == nil then
                error("'body' must be a table like {max = \"64k\"}", 0)
            end
        elseif k == "priority" then
            if type(v) ~= "number" then error("'priority' must be a number, got " .. type(v), 0) end
        elseif k == "schema" then
            if type(v) ~= "table" or type(v.fields) ~= "table" then
                error("'schema' must be a table like {fields = {name = {type = ...}}}", 0)
            end
        elseif type(v) == "function" and not (type(k) == "string" and k:sub(1, 1) == "_") then
            error("unknown function '" .. tostring(k) .. "' (a plugin table holds init, access,"
                .. " balance, response and log; keep helpers local or start their name with _)", 0)
        end
    end
    modules[id] = P
    return caps
end

function M.entry(route, kind, id, conf, positions)
    local P = modules[id]
    if kind == BALANCE then
        if P.balance == nil then
            error("has no balance function, so it cannot be a balancer", 0)
        end
    elseif P.access == nil and P.response == nil and P.log == nil and P.body_filter == nil then
        if P.balance ~= nil then
            error("is a balancer (it has only balance): name it in the route's balancer", 0)
        end
        error("has no access, response or log function", 0)
    end
    conf = conf or {}
    if P.schema ~= nil then schema.check(P.schema, conf, positions) end
    if P.init ~= nil then
        gwext.loading = true
        local ok, err = pcall(P.init, conf)
        gwext.loading = false
        if not ok then error(err, 0) end
    end
    local waits = P.waits
    if type(waits) == "function" then waits = waits(conf) and true or false end
    if waits == nil then waits = may_wait[id] end
    if P.init_worker ~= nil and kind ~= BALANCE then
        init_workers[#init_workers + 1] = { P.init_worker, conf, id }
    end
    if kind == BALANCE then
        balancers[route] = { fn = P.balance, conf = conf, id = id }
        return lshift(1, BALANCE), 0, false
    end
    local mask = 0
    for _, pf in ipairs(CHAIN_FUNCS) do
        local phase, fname = pf[1], pf[2]
        local fn = P[fname]
        if fn ~= nil then
            local ch = chains[phase][route]
            if ch == nil then
                ch = { n = 0, fns = {}, confs = {}, ids = {} }
                chains[phase][route] = ch
            end
            -- P.priority: higher runs first; equal priorities keep config order.
            local prio = tonumber(P.priority) or 0
            local n = ch.n + 1
            ch.prios = ch.prios or {}
            local at = n
            while at > 1 and ch.prios[at - 1] < prio do
                ch.fns[at], ch.confs[at], ch.ids[at], ch.prios[at] =
                    ch.fns[at - 1], ch.confs[at - 1], ch.ids[at - 1], ch.prios[at - 1]
                at = at - 1
            end
            ch.n, ch.fns[at], ch.confs[at], ch.ids[at], ch.prios[at] = n, fn, conf, id, prio
            -- C times the plugin added first; when another now leads, say so.
            ch.reordered = ch.reordered or at == 1 and n > 1
            mask = bor(mask, lshift(1, phase))
            if waits and (phase == ACCESS or phase == LOG) then
                mask = bor(mask, lshift(1, phase + 8)) -- C runs this chain via run_waiting
            end
        end
    end
    if P.body_filter ~= nil then
        local ch = bfchains[route]
        if ch == nil then
            ch = { n = 0, fns = {}, confs = {}, ids = {}, prios = {} }
            bfchains[route] = ch
        end
        local prio, n = tonumber(P.priority) or 0, ch.n + 1
        local at = n
        while at > 1 and ch.prios[at - 1] < prio do
            ch.fns[at], ch.confs[at], ch.ids[at], ch.prios[at] =
                ch.fns[at - 1], ch.confs[at - 1], ch.ids[at - 1], ch.prios[at - 1]
            at = at - 1
        end
        ch.n, ch.fns[at], ch.confs[at], ch.ids[at], ch.prios[at] = n, P.body_filter, conf, id, prio
    end
    return mask, P.body and P.access and M.size(P.body.max) or 0, P.body_filter ~= nil
end

-- "64k", "1m", 4096 -> bytes; nil when not a size.
function M.size(v)
    if type(v) == "number" then return v >= 1 and math.floor(v) or nil end
    if type(v) ~= "string" then return nil end
    local n, unit = v:lower():match("^(%d+)([km]?)$")
    if not n then return nil end
    n = tonumber(n) * (unit == "k" and 1024 or unit == "m" and 1048576 or 1)
    return n >= 1 and n or nil
end

-- The ctx object of a slot, made on the slot's first use (`objs[slot] or
-- made(slot)`: nothing to reset per request, C did it in the slot's flags).
local function made(slot)
    local o = new_ctx(slot)
    objs[slot] = o
    return o
end
local function bind(slot)
    return objs[slot] or made(slot)
end

-- ctx:respond() ends the phase by raising this; it is not an error.
local RESPOND_SENTINEL = require("moongate.native").respond_sentinel

local function traceback(e)
    if e == RESPOND_SENTINEL then return e end
    return debug.traceback(type(e) == "string" and e or "(error object is a " .. type(e) .. " value)", 2)
end

-- Log phase: each plugin in its own protected call, so one failing logger
-- does not silence the others; a runaway stops the rest.
local function run_log(ch, o)
    local failed = false
    local fns, confs, ids = ch.fns, ch.confs, ch.ids
    for k = 1, ch.n do
        if k > 1 or ch.reordered then enter(ids[k]) end
        local ok, err = xpcall(fns[k], traceback, o, confs[k])
        if not ok then
            failed = true
            ctxm.plugin_error(ids[k], err)
            if stop[0] ~= 0 then break end
        end
    end
    return failed
end

-- Access chain of a coroutine run: errors are caught by its job.
local function access_chain(ch, o)
    local fns, confs, ids = ch.fns, ch.confs, ch.ids
    fns[1](o, confs[1])
    if responded(o) then return end
    for k = 2, ch.n do
        enter(ids[k])
        fns[k](o, confs[k])
        if responded(o) then return end
    end
end

-- The job of a chain that may wait (inside a pooled coroutine): true when a
-- plugin failed (already logged).
local function chain_job(ch, o, phase)
    if phase == LOG then
        return run_log(ch, o)
    end
    local ok, err = xpcall(access_chain, traceback, ch, o)
    if ok or (err == RESPOND_SENTINEL and responded(o)) then return false end
    lio.fail(err)
    return true
end

function M.run(route, phase, slot)
    local ch = chains[phase][route]
    local o = bind(slot)
    if phase == LOG then
        return run_log(ch, o)
    end
    local fns, confs, ids = ch.fns, ch.confs, ch.ids
    if ch.reordered then enter(ids[1]) end
    fns[1](o, confs[1])
    if phase == ACCESS and responded(o) then return false end
    for k = 2, ch.n do
        enter(ids[k])
        fns[k](o, confs[k])
        if phase == ACCESS and responded(o) then return false end
    end
    return false
end

-- The pre-bound entry of one route's chain for one phase (C keeps it in the
-- registry, made once per VM after every entry is known, and calls it with
-- the slot alone): no chain lookup per call, and a chain of one plugin calls
-- it directly. Same behaviour as run(route, phase, slot).
-- C calls these without arguments (the slot is at SLOT[0]; `sp`, a local
-- never assigned again, is a constant in the trace) and reads no result
-- (the log chain's: whether some plugin failed); a chain of one plugin is a
-- tail call of it.
function M.runner(route, phase)
    local ch = chains[phase][route]
    if ch == nil then return nil end
    local sp = SLOT
    if phase == LOG then
        return function()
            local slot = sp[0]
            return run_log(ch, objs[slot] or made(slot))
        end
    end
    local fns, confs, ids, n = ch.fns, ch.confs, ch.ids, ch.n
    if n == 1 then
        local f, c, id = fns[1], confs[1], ids[1]
        if ch.reordered then
            return function()
                local slot = sp[0]
                enter(id)
                return f(objs[slot] or made(slot), c)
            end
        end
        return function()
            local slot = sp[0]
            return f(objs[slot] or made(slot), c)
        end
    end
    local reordered = ch.reordered
    local check = phase == ACCESS
    return function()
        local slot = sp[0]
        local o = objs[slot] or made(slot)
        if reordered then enter(ids[1]) end
        fns[1](o, confs[1])
        if check and responded_slot(slot) then return end
        for k = 2, n do
            enter(ids[k])
            fns[k](o, confs[k])
            if check and responded_slot(slot) then return end
        end
    end
end

local function targets_view(id, n, targets)
    local ts = tcache[id]
    if ts == nil then
        ts = ctxm.wrap_targets(targets, n, id)
        tcache[id] = ts
    end
    return ts
end

-- A balancer's result, for C in vm->pick (a number; 0: no target): C then
-- reads no result from the stack.
local function pick(o, i, refused)
    if type(i) == "number" then
        PICK[0] = i
    else
        PICK[0] = 0
        if i == nil and refused ~= nil then ext.refuse(o, refused) end
    end
end

-- The same with the pick pointer as an argument (a constant in the trace
-- when the caller holds it in a local never assigned again).
local function pick_to(pp, o, i, refused)
    if type(i) == "number" then
        pp[0] = i
    else
        pp[0] = 0
        if i == nil and refused ~= nil then ext.refuse(o, refused) end
    end
end

-- The pre-bound entry of a route's balancer: its function and conf are
-- upvalues, and so is the targets view it was given last (C names the
-- array only when it changes), so a call looks nothing up.
function M.balancer(route)
    local b = balancers[route]
    if b == nil then return nil end
    local fn, conf = b.fn, b.conf
    local sp, pp = SLOT, PICK
    local ts
    return function(id, n, targets)
        local slot = sp[0]
        local o = objs[slot] or made(slot)
        if id ~= nil then ts = targets_view(id, n, targets) end
        pick_to(pp, o, fn(o, conf, ts))
    end
end

function M.balance(route, slot, id, n, targets)
    local b = balancers[route]
    local o = bind(slot)
    pick(o, b.fn(o, b.conf, targets_view(id, n, targets)))
end

-- One piece of the response body through the route's filters, in priority
-- order; each gets the previous one's output. nil keeps the piece as it is.
function M.body_filter(route, slot, chunk, eof)
    local ch = bfchains[route]
    local o = bind(slot)
    local fns, confs, ids = ch.fns, ch.confs, ch.ids
    for k = 1, ch.n do
        enter(ids[k])
        local r = fns[k](o, confs[k], chunk, eof)
        if r ~= nil then
            if type(r) ~= "string" then
                error("body_filter must return a string or nil, got " .. type(r), 0)
            end
            chunk = r
        end
    end
    return chunk
end

-- run() for a chain that may wait (C knows which from entry's mask): in a
-- pooled coroutine; returns failed, or the key of the parked coroutine.
function M.run_waiting(route, phase, slot)
    local ch = chains[phase][route]
    local o = bind(slot)
    return coro.run(chain_job, ch, o, phase)
end

-- The waiting side (gateway/lua/task.c): a suspended run goes on, is dropped,
-- a timer fires, the workers start.
function M.resume(key, phase)
    return coro.resume(key)
end

function M.abandon(key)
    coro.abandon(key)
end

local function timer_job(t)
    local ok, err = xpcall(t.fn, traceback, unpack(t, 1, t.n))
    if ok then return false end
    lio.fail(err)
    return true
end

function M.timer(id)
    local t = gw_io.timer_entry(id)
    if not t then return false end
    return coro.run(timer_job, t)
end

function M.init_worker()
    for _, e in ipairs(init_workers) do
        enter(e[3])
        local ok, err = xpcall(e[1], traceback, e[2])
        if not ok then lio.fail("init_worker: " .. tostring(err)) end
    end
    enter(-1)
end

return M
