-- The Lua twin of gateway/lua/ctx.c: the one ffi.cdef of the C side's FFI
-- functions, the `ctx` object handed to plugins and the `targets` view handed
-- to balancers.
--
-- Invariants:
--  * C functions never raise; this file validates arguments and turns their
--    return codes into Lua errors that name the method and the caller's line.
--  * ctx objects are pooled per VM, one per slot (C hands out slots per
--    request); C zeroes a slot's flags (mg_lua.slot_flags) when it binds the
--    slot to a new request, and ctx.vars and the cached request fields are
--    cleared on their first use after that, so ctx.vars is shared by the
--    plugins of one request and empty for the next one, without allocating
--    or storing anything per request.
--  * targets views wrap the proxy's C array in place, once per array: each
--    target is a cdata (struct mg_lua_tview) whose reads of
--    available/active/ewma/failures are plain loads from C memory.
local ffi = require("ffi")
local type = type -- an upvalue: the JIT folds it (a global is a lookup and a guard per use)
local RESPOND_SENTINEL = require("moongate.native").respond_sentinel

local M = {}

ffi.cdef [[
typedef struct mg_lua mg_lua;
struct mg_lua_str { const char *p; size_t len; };
struct mg_lua_target {
    const char *address;
    uint32_t weight;
    uint8_t available;
    const void *stats;
};
struct mg_ffi_api {
    uint32_t size;
    uint32_t str_size;
    uint32_t target_size;
    uint32_t target_weight, target_available, target_stats;
    uint32_t stats_active;
    uint32_t stats_ewma_ns;
    uint32_t stats_failures;
    uint32_t stats_ewma_at_ms;
    uint32_t ewma_tau_ms;
    const void *zero_stats;
    int (*mg_ffi_ctx_str)(mg_lua *vm, uint32_t slot, int field, struct mg_lua_str *out);
    int (*mg_ffi_ctx_num)(mg_lua *vm, uint32_t slot, int field, double *out);
    int (*mg_ffi_req_header_get)(mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                                 struct mg_lua_str *out);
    int (*mg_ffi_req_header_set)(mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                                 const char *value, size_t vlen);
    int (*mg_ffi_resp_header_get)(mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                                  struct mg_lua_str *out);
    int (*mg_ffi_resp_header_set)(mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                                  const char *value, size_t vlen);
    int (*mg_ffi_respond)(mg_lua *vm, uint32_t slot, int status, const char *body, size_t blen);
    int (*mg_ffi_respond_header_add)(mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                                     const char *value, size_t vlen);
    int (*mg_ffi_plugin_enter)(mg_lua *vm, int plugin);
    int (*mg_ffi_plugin_error)(mg_lua *vm, int plugin, const char *msg, size_t len);
    int (*mg_ffi_log)(mg_lua *vm, int level, const char *msg, size_t len);
    int (*mg_ffi_guard_message)(mg_lua *vm, char *buf, size_t cap);
    double (*mg_ffi_now)(void);
    double (*mg_ffi_clock_ms)(void);
    uint32_t (*mg_ffi_hash)(const char *p, size_t len, uint32_t seed);
    const uint64_t *(*mg_ffi_call_start_ns)(mg_lua *vm);
    double (*mg_ffi_target_ewma)(const void *stats, uint64_t now_ns);
    int (*mg_ffi_header_check)(const char *name, size_t nlen, const char *value, size_t vlen);
    int (*mg_ffi_header_put)(mg_lua *vm, uint32_t slot, int resp, int append, const char *name,
                             size_t nlen, const char *value, size_t vlen);
};
]]

-- enum mg_ffi_rc
local OK, NOT_FOUND = 0, 1
local BAD_CONTEXT, BAD_PHASE, BAD_NAME, BAD_VALUE, FORBIDDEN, TOO_LARGE = -1, -2, -3, -4, -5, -6
-- enum mg_ffi_field
local F_METHOD, F_PATH, F_QUERY, F_CLIENT_IP, F_ROUTE, F_REQUEST_ID = 0, 1, 2, 3, 4, 5
local F_UPSTREAM_ADDRESS, F_STATUS, F_LATENCY = 6, 7, 8
local F_TLS_PROTOCOL, F_TLS_CIPHER, F_TLS_SNI, F_TLS_CLIENT_SUBJECT = 9, 10, 11, 12
local F_PROTOCOL = 13

local PHASE_NAMES = { [0] = "init", "access", "balance", "response", "log" }

local C, VM                      -- the api table and this VM's handle, set by boot()
local T0                         -- the call's start, ns (mg_ffi_call_start_ns)
local SF                         -- &vm->slot_flags: [0][slot] (the array moves as slots grow)
local PH                         -- &vm->phase: the phase of the call in progress
local sbuf = ffi.new("struct mg_lua_str[1]")
local nbuf = ffi.new("double[1]")
local band, bor = bit.band, bit.bor

-- Bits of a slot's flags (MG_LUA_SLOT_* in gateway/lua/state-t.h): what was
-- done for the request that holds the slot. C zeroes them for a new request.
local F_VARS, F_CACHE, F_RESPONDED = 1, 2, 4

function M.boot(api_lud, vm_lud, flags_lud, phase_lud)
    C = ffi.cast("const struct mg_ffi_api *", api_lud)
    VM = ffi.cast("mg_lua *", vm_lud)
    SF = ffi.cast("uint8_t **", flags_lud)
    PH = ffi.cast("const int *", phase_lud)
    local function same(what, c, lua)
        if c ~= lua then
            error(string.format("moongate/ctx.lua is out of step with gateway/lua/ctx.c: %s is %d in C, %d here",
                what, tonumber(c), tonumber(lua)), 0)
        end
    end
    same("sizeof(struct mg_ffi_api)", C.size, ffi.sizeof("struct mg_ffi_api"))
    same("sizeof(struct mg_lua_str)", C.str_size, ffi.sizeof("struct mg_lua_str"))
    same("sizeof(struct mg_lua_target)", C.target_size, ffi.sizeof("struct mg_lua_target"))
    same("offsetof(mg_lua_target, weight)", C.target_weight, ffi.offsetof("struct mg_lua_target", "weight"))
    same("offsetof(mg_lua_target, available)", C.target_available,
        ffi.offsetof("struct mg_lua_target", "available"))
    same("offsetof(mg_lua_target, stats)", C.target_stats, ffi.offsetof("struct mg_lua_target", "stats"))
    T0 = C.mg_ffi_call_start_ns(VM)
    return C, VM
end

function M.phase_name(p)
    return PHASE_NAMES[p or PH[0]]
end

-- Raises the error for a C return code, blaming the plugin line that called
-- the method (level 3: fail <- method <- plugin).
local function fail(what, rc, name)
    local msg
    if rc == BAD_CONTEXT then
        msg = what .. ": this ctx is not valid here (kept past its phase, or another request's)"
    elseif rc == BAD_PHASE then
        msg = what .. " is not available in the " .. PHASE_NAMES[PH[0]] .. " phase"
    elseif rc == BAD_NAME then
        msg = what .. ": invalid header name " .. string.format("%q", tostring(name))
    elseif rc == BAD_VALUE then
        msg = what .. ": invalid value (control characters such as CR or LF are not allowed)"
    elseif rc == FORBIDDEN then
        msg = what .. ": header '" .. tostring(name) .. "' is managed by the gateway"
    elseif rc == TOO_LARGE then
        msg = what .. ": over the per-request budget (64 KiB of header edits, 1 MiB of body)"
    else
        msg = what .. ": failed (" .. tostring(rc) .. ")"
    end
    error(msg, 3)
end

local function argerror(what, n, expected, got)
    error(string.format("bad argument #%d to %s (%s expected, got %s)", n, what, expected, type(got)), 3)
end

-- ------------------------------------------------------------------ ctx

local priv = {}   -- ctx object -> its state {slot, vars, cache}
local clear = require("table.clear")
local methods = {}
local ctx_mt = {}

local function state(self, what)
    local st = priv[self]
    if st == nil then
        error(what .. ": call it as a method (ctx:" .. what:match("[%w_]+$") .. "(...))", 3)
    end
    return st
end

local function fetch_str(slot, field)
    local rc = C.mg_ffi_ctx_str(VM, slot, field, sbuf)
    if rc == OK then
        return ffi.string(sbuf[0].p, sbuf[0].len)
    elseif rc == NOT_FOUND then
        return nil
    end
    fail("ctx", rc)
end

local function fetch_num(slot, field)
    local rc = C.mg_ffi_ctx_num(VM, slot, field, nbuf)
    if rc == OK then
        return nbuf[0]
    elseif rc == NOT_FOUND then
        return nil
    end
    fail("ctx", rc)
end

local function value_string(what, v)
    local t = type(v)
    if t == "string" then
        return v
    elseif t == "number" then
        return tostring(v)
    end
    error(string.format("bad argument #2 to %s (string, number or nil expected, got %s)", what, t), 3)
end

-- Request and response headers share one getter and one setter shape; only the
-- FFI function and the method name (for error messages) differ. The api table
-- C only exists after boot(), so the function is looked up by field name (a
-- constant key: the JIT specialises it).
local function header_getter(get, what)
    return function(self, name)
        local st = state(self, what)
        if type(name) ~= "string" then argerror(what, 1, "string", name) end
        local rc = C[get](VM, st.slot, name, #name, sbuf)
        if rc == OK then
            return ffi.string(sbuf[0].p, sbuf[0].len)
        elseif rc == NOT_FOUND then
            return nil
        end
        fail(what, rc, name)
    end
end

-- Prepared headers (gw.header(name, value)): checked once, then an edit is a
-- pointer append in C (no check, no copy). This table keeps every prepared
-- header's strings alive for the VM's life, so C may point at them from any
-- request of this VM; it also tells a prepared header from other tables. An
-- edit takes the checked strings kept here ({name, value}), never the
-- fields of the table the plugin holds, which it could change afterwards.
local prepared = {}

function M.header(name, value)
    if type(name) ~= "string" then argerror("gw.header", 1, "string", name) end
    value = value_string("gw.header", value)
    local rc = C.mg_ffi_header_check(name, #name, value, #value)
    if rc ~= OK then fail("gw.header", rc, name) end
    local key = name .. "\0" .. value -- the same pair prepared twice: one object
    local h = prepared[key]
    if h == nil then
        h = { name = name, value = value }
        prepared[key] = h
        prepared[h] = { name, value }
    end
    return h
end

-- An edit with a prepared header: ctx:set_response_header(h) and friends.
local function put_prepared(what, st, h, resp, append)
    local p = prepared[h]
    if p == nil then argerror(what, 1, "string or gw.header()", h) end
    local n, v = p[1], p[2]
    local rc = C.mg_ffi_header_put(VM, st.slot, resp, append, n, #n, v, #v)
    if rc ~= OK then fail(what, rc, n) end
end
M.put_prepared = put_prepared

local function header_setter(set, what, resp)
    return function(self, name, value)
        local st = state(self, what)
        if type(name) ~= "string" then
            if value == nil then return put_prepared(what, st, name, resp, 0) end
            argerror(what, 1, "string", name)
        end
        local rc
        if value == nil then
            rc = C[set](VM, st.slot, name, #name, nil, 0)
        else
            value = value_string(what, value)
            rc = C[set](VM, st.slot, name, #name, value, #value)
        end
        if rc ~= OK then fail(what, rc, name) end
    end
end

methods.header = header_getter("mg_ffi_req_header_get", "ctx:header")
methods.set_header = header_setter("mg_ffi_req_header_set", "ctx:set_header", 0)
methods.response_header = header_getter("mg_ffi_resp_header_get", "ctx:response_header")
methods.set_response_header = header_setter("mg_ffi_resp_header_set", "ctx:set_response_header", 1)

-- Ends the phase: raises a sentinel the runtime's protected call takes as the
-- phase's normal end, so no later code of this plugin and no later plugin
-- runs. A respond caught by a plugin's own pcall still stops the chain after
-- that plugin, and a second respond changes nothing.
function methods.respond(self, status, body, headers)
    local st = state(self, "ctx:respond")
    if band(SF[0][st.slot], F_RESPONDED) ~= 0 then error(RESPOND_SENTINEL) end
    if type(status) ~= "number" or status % 1 ~= 0 or status < 200 or status > 599 then
        error("bad argument #1 to ctx:respond (an integer status 200..599 expected, got "
            .. tostring(status) .. ")", 2)
    end
    if body ~= nil and type(body) ~= "string" then argerror("ctx:respond", 2, "string or nil", body) end
    if headers ~= nil and type(headers) ~= "table" then argerror("ctx:respond", 3, "table or nil", headers) end
    local rc = C.mg_ffi_respond(VM, st.slot, status, body, body and #body or 0)
    if rc ~= OK then fail("ctx:respond", rc) end
    if headers then
        for k, v in pairs(headers) do
            if type(k) ~= "string" then
                error("bad argument #3 to ctx:respond (header names must be strings)", 2)
            end
            local tv = type(v)
            if tv == "number" then
                v = tostring(v)
            elseif tv ~= "string" then
                error("bad argument #3 to ctx:respond (header '" .. k .. "' must be a string or number)", 2)
            end
            rc = C.mg_ffi_respond_header_add(VM, st.slot, k, #k, v, #v)
            if rc ~= OK then fail("ctx:respond", rc, k) end
        end
    end
    local f = SF[0]
    f[st.slot] = bor(f[st.slot], F_RESPONDED)
    error(RESPOND_SENTINEL)
end

-- gw.jwt's request verifier reads the token where it lies: the request
-- header's bytes into out[0] (a struct mg_lua_str[1]) without a Lua string
-- per request; true when present.
function M.header_into(o, name, out)
    local st = priv[o]
    if st == nil then error("bad argument #1 (a ctx expected)", 3) end
    local rc = C.mg_ffi_req_header_get(VM, st.slot, name, #name, out)
    if rc == OK then return true elseif rc == NOT_FOUND then return false end
    fail("ctx:header", rc, name)
end

-- Request fields that cannot change during a request: fetched once, cached.
local cached = {
    method = F_METHOD, path = F_PATH, query = F_QUERY, client_ip = F_CLIENT_IP,
    route = F_ROUTE, request_id = F_REQUEST_ID, protocol = F_PROTOCOL,
}

-- ctx.tls: one table per request (built on first use, then cached like the
-- fields above), or nil on a plain connection. `false` caches that nil.
local function fetch_tls(slot)
    local protocol = fetch_str(slot, F_TLS_PROTOCOL)
    if protocol == nil then return false end
    return {
        protocol = protocol,
        cipher = fetch_str(slot, F_TLS_CIPHER),
        sni = fetch_str(slot, F_TLS_SNI),
        client_subject = fetch_str(slot, F_TLS_CLIENT_SUBJECT),
    }
end

-- The request's cached fields (cleared on their first use in a request).
local function cache_of(st)
    local f, slot = SF[0], st.slot
    local fl = f[slot]
    if band(fl, F_CACHE) == 0 then
        clear(st.cache)
        f[slot] = bor(fl, F_CACHE)
    end
    return st.cache
end

ctx_mt.__index = function(self, k)
    local m = methods[k]
    if m ~= nil then return m end
    local st = priv[self]
    if k == "vars" then
        local f, slot = SF[0], st.slot
        local fl = f[slot]
        if band(fl, F_VARS) == 0 then
            clear(st.vars)
            f[slot] = bor(fl, F_VARS)
        end
        return st.vars
    end
    local f = cached[k]
    if f ~= nil then
        local cache = cache_of(st)
        local v = cache[k]
        if v == nil then
            v = fetch_str(st.slot, f)
            cache[k] = v
        end
        return v
    end
    if k == "tls" then
        local cache = cache_of(st)
        local v = cache.tls
        if v == nil then
            v = fetch_tls(st.slot)
            cache.tls = v
        end
        return v or nil
    end
    if k == "status" then return fetch_num(st.slot, F_STATUS) end
    if k == "latency" then return fetch_num(st.slot, F_LATENCY) end
    if k == "upstream_address" then return fetch_str(st.slot, F_UPSTREAM_ADDRESS) end
    error("ctx has no field '" .. tostring(k) .. "'", 2)
end
ctx_mt.__newindex = function(_, k)
    error("ctx." .. tostring(k) .. " cannot be assigned (keep per-request data in ctx.vars)", 2)
end
ctx_mt.__metatable = false
ctx_mt.__tostring = function(self)
    return "ctx (slot " .. priv[self].slot .. ")"
end

-- The pooled object of a slot, made on the slot's first use. Its tables are
-- cleared on first use in each request (the slot's flags), not when a
-- request starts: most requests never touch ctx.vars, and a balancer call
-- should not pay for clearing it.
function M.new_ctx(slot)
    local o = setmetatable({}, ctx_mt)
    priv[o] = { slot = slot, vars = {}, cache = {} }
    return o
end

-- Whether ctx:respond() ran in the request that holds `slot`.
function M.responded_slot(slot)
    return band(SF[0][slot], F_RESPONDED) ~= 0
end

function M.responded(o)
    return band(SF[0][priv[o].slot], F_RESPONDED) ~= 0
end

-- Whether the request's cached fields were cleared for it already (ext.lua:
-- a change of ctx.path must drop the cached value, not an old request's).
function M.cache_ready(st)
    return band(SF[0][st.slot], F_CACHE) ~= 0
end

-- For moongate/ext.lua, which adds the methods of DESIGN.md 10.4.
M.methods, M.priv, M.fail, M.argerror, M.value_string = methods, priv, fail, argerror, value_string
M.BAD_VALUE = BAD_VALUE

-- --------------------------------------------------------------- targets

-- ewma is the peak EWMA decayed to now (Finagle's): a target that has not
-- answered for a while looks faster, so a balancer probes it again instead of
-- starving it on one old slow sample. "now" is the balance call's start (the
-- VM took it for the plugin's timing already). The decay is computed in C
-- (mg_ffi_target_ewma): a branch here on whether "now" was read yet made a
-- side trace the JIT could not compile (NYI: return to lower frame at the
-- metamethod), so every other ewma read ran interpreted.

-- A target as balancers see it: a cdata of this struct, made once per targets
-- array, with typed pointers straight at the live counters. Field reads go
-- through the metatype's __index with a constant key, which the JIT folds to
-- a load or two: no table lookups, no per-request set-up. (Struct fields come
-- before __index, hence the underscores; const: a plugin cannot change them.)
ffi.cdef [[
struct mg_lua_tview {
    const struct mg_lua_target *const _t;
    const void *const _stats;
    const uint32_t *const _active;
    const uint64_t *const _ewma_ns, *const _ewma_at_ms, *const _failures;
    const double _weight;
    const int32_t _array, _index; /* where its address string is kept (addresses) */
};
]]

local addresses = {}                    -- [array][index] -> "host:port"

-- Not a tail call of the FFI function: a trace that starts in __index (it
-- gets hot before its callers when a balancer reads several fields) cannot
-- record a C function returning to the metamethod's caller ("NYI: return to
-- lower frame"), and its aborts left that path interpreted in some runs.
local function ewma_of(v)
    local e = C.mg_ffi_target_ewma(v._stats, T0[0])
    return e
end

local tview_t = ffi.metatype("struct mg_lua_tview", {
    __index = function(v, k)
        if k == "available" then return v._t.available ~= 0 end
        if k == "weight" then return v._weight end
        if k == "active" then return v._active[0] end
        if k == "ewma" then
            local e = ewma_of(v)
            return e
        end
        if k == "failures" then
            local f = tonumber(v._failures[0])
            return f
        end
        if k == "address" then return addresses[v._array][v._index] end
        error("target has no field '" .. tostring(k) .. "'", 2)
    end,
    __newindex = function(_, k)
        error("targets are read-only (field '" .. tostring(k) .. "')", 2)
    end,
    __tostring = function(v)
        return "target " .. addresses[v._array][v._index]
    end,
})

-- Wraps n targets at a C array once (`array`: its id, for the addresses):
-- address and weight are copied, the live fields stay pointers into C memory.
function M.wrap_targets(lud, n, array)
    local base = ffi.cast("const struct mg_lua_target *", lud)
    local ts, addrs = {}, {}
    addresses[array] = addrs
    for i = 0, n - 1 do
        local tp = base + i
        local sp = ffi.cast("const uint8_t *", tp.stats ~= nil and tp.stats or C.zero_stats)
        addrs[i + 1] = tp.address ~= nil and ffi.string(tp.address) or ""
        ts[i + 1] = tview_t(tp, sp,
            ffi.cast("const uint32_t *", sp + C.stats_active),
            ffi.cast("const uint64_t *", sp + C.stats_ewma_ns),
            ffi.cast("const uint64_t *", sp + C.stats_ewma_at_ms),
            ffi.cast("const uint64_t *", sp + C.stats_failures),
            tonumber(tp.weight), array, i + 1)
    end
    return ts
end

-- -------------------------------------------------------------- gw helpers

function M.log(level, msg)
    return C.mg_ffi_log(VM, level, msg, #msg)
end

function M.now()
    return C.mg_ffi_now()
end

function M.hash(s, seed)
    return tonumber(C.mg_ffi_hash(s, #s, seed or 0))
end

local gbuf = ffi.new("char[128]")
function M.guard_message()
    C.mg_ffi_guard_message(VM, gbuf, 128)
    return ffi.string(gbuf)
end

function M.plugin_enter(id)
    C.mg_ffi_plugin_enter(VM, id)
end

function M.plugin_error(id, msg)
    C.mg_ffi_plugin_error(VM, id, msg, #msg)
end

return M
