-- The Lua twin of gateway/lua/ctx_ext.c: the ctx methods of DESIGN.md 10.4
-- (every value of a header, added headers, routing control) and the balancer's
-- refusal. They join ctx.lua's method table at load, so ctx objects need no
-- change; same conventions as ctx.lua (C never raises, errors name the method
-- and blame the plugin's line).
local ffi = require("ffi")
local ctxm = require("moongate.ctx")
local native = require("moongate.native")

local M = {}

ffi.cdef [[
struct mg_ffi_ext_api {
    uint32_t size;
    int (*headers)(mg_lua *, uint32_t, int resp, const char *, size_t, struct mg_lua_str *,
                   size_t cap, size_t *total);
    int (*add_header)(mg_lua *, uint32_t, int resp, const char *, size_t, const char *, size_t);
    int (*set_path)(mg_lua *, uint32_t, const char *, size_t);
    int (*set_query)(mg_lua *, uint32_t, const char *, size_t);
    int (*set_upstream)(mg_lua *, uint32_t, const char *, size_t);
    int (*balance_refuse)(mg_lua *, uint32_t, int status);
    int (*body)(mg_lua *, uint32_t, struct mg_lua_str *out);
    int (*set_body)(mg_lua *, uint32_t, const char *, size_t);
    int (*target_fault)(const char *, size_t, int path_only);
};
]]

local OK, NOT_FOUND = 0, 1
local C = ffi.cast("const struct mg_ffi_ext_api *", native.api)
if C.size ~= ffi.sizeof("struct mg_ffi_ext_api") then
    error("moongate/ext.lua is out of step with gateway/lua/ctx_ext.c (struct mg_ffi_ext_api)", 0)
end

local VM
local methods, priv, fail, argerror = ctxm.methods, ctxm.priv, ctxm.fail, ctxm.argerror
local value_string = ctxm.value_string

function M.boot(vm_lud)
    VM = ffi.cast("mg_lua *", vm_lud)
end

local function state(self, what)
    local st = priv[self]
    if st == nil then
        error(what .. ": call it as a method (ctx:" .. what:match("[%w_]+$") .. "(...))", 3)
    end
    return st
end

local vcap = 16
local vbuf = ffi.new("struct mg_lua_str[?]", vcap)
local total = ffi.new("size_t[1]")

local function all_values(resp, what)
    return function(self, name)
        local st = state(self, what)
        if type(name) ~= "string" then argerror(what, 1, "string", name) end
        local rc = C.headers(VM, st.slot, resp, name, #name, vbuf, vcap, total)
        if rc == OK and total[0] > vcap then -- rare: many values of one name
            vcap = tonumber(total[0])
            vbuf = ffi.new("struct mg_lua_str[?]", vcap)
            rc = C.headers(VM, st.slot, resp, name, #name, vbuf, vcap, total)
        end
        if rc ~= OK then fail(what, rc, name) end
        local out = {}
        for i = 0, tonumber(total[0]) - 1 do
            out[i + 1] = ffi.string(vbuf[i].p, vbuf[i].len)
        end
        return out
    end
end

local function adder(resp, what)
    return function(self, name, value)
        local st = state(self, what)
        if type(name) ~= "string" then
            if value == nil then return ctxm.put_prepared(what, st, name, resp, 1) end
            argerror(what, 1, "string", name)
        end
        value = value_string(what, value)
        local rc = C.add_header(VM, st.slot, resp, name, #name, value, #value)
        if rc ~= OK then fail(what, rc, name) end
    end
end

methods.headers = all_values(0, "ctx:headers")
methods.response_headers = all_values(1, "ctx:response_headers")
methods.add_header = adder(0, "ctx:add_header")
methods.add_response_header = adder(1, "ctx:add_response_header")

function methods.clear_header(self, name)
    return methods.set_header(self, name, nil)
end

function methods.clear_response_header(self, name)
    return methods.set_response_header(self, name, nil)
end

-- The cached ctx.path / ctx.query must show the new value.
local function forget(st, k)
    if ctxm.cache_ready(st) then st.cache[k] = nil end
end

-- Why a target is refused (enum mg_http_target_fault), in the words of
-- docs/plugins.md: the same rules as a client's request target.
local TARGET_FAULTS = {
    [1] = "it must start with '/'",
    [2] = "it holds a space or a control character",
    [3] = "it holds a byte >= 0x80 (percent-encode non-ASCII characters)",
    [4] = "it holds '#' (a fragment)",
    [5] = "it holds '?' (use ctx:set_query for the query)",
    [6] = "it holds a dot segment ('.' or '..' in any spelling: %2e, ..;, ..%2f, ..\\),"
        .. " '%00' or '\\'",
}

-- nil for a target the gateway would accept from a client, else the reason.
function M.target_fault(target, path_only)
    local f = C.target_fault(target, #target, path_only and 1 or 0)
    if f == 0 then return nil end
    return TARGET_FAULTS[f] or ("refused (" .. f .. ")")
end

function methods.set_path(self, path)
    local st = state(self, "ctx:set_path")
    if type(path) ~= "string" then argerror("ctx:set_path", 1, "string", path) end
    local rc = C.set_path(VM, st.slot, path, #path)
    if rc == ctxm.BAD_VALUE then
        error("bad argument #1 to ctx:set_path (refused: "
            .. (M.target_fault(path, true) or "over 8192 bytes") .. ")", 2)
    end
    if rc ~= OK then fail("ctx:set_path", rc) end
    forget(st, "path")
end

function methods.set_query(self, query)
    local st = state(self, "ctx:set_query")
    if query ~= nil and type(query) ~= "string" then argerror("ctx:set_query", 1, "string or nil", query) end
    local rc = C.set_query(VM, st.slot, query, query and #query or 0)
    if rc == ctxm.BAD_VALUE then
        error("bad argument #1 to ctx:set_query (no '#', spaces or control characters allowed)", 2)
    end
    if rc ~= OK then fail("ctx:set_query", rc) end
    forget(st, "query")
end

function methods.set_upstream(self, name)
    local st = state(self, "ctx:set_upstream")
    if type(name) ~= "string" then argerror("ctx:set_upstream", 1, "string", name) end
    local rc = C.set_upstream(VM, st.slot, name, #name)
    if rc == NOT_FOUND then
        error("ctx:set_upstream: no upstream named '" .. name .. "' in the config", 2)
    end
    if rc ~= OK then fail("ctx:set_upstream", rc) end
end

local sbuf = ffi.new("struct mg_lua_str[1]")

function methods.body(self)
    local st = state(self, "ctx:body")
    local rc = C.body(VM, st.slot, sbuf)
    if rc == NOT_FOUND then
        error("ctx:body: the request body is not buffered on this route (declare P.body = {max = \"64k\"})", 2)
    end
    if rc ~= OK then fail("ctx:body", rc) end
    return ffi.string(sbuf[0].p, sbuf[0].len)
end

function methods.set_body(self, body)
    local st = state(self, "ctx:set_body")
    if type(body) ~= "string" then argerror("ctx:set_body", 1, "string", body) end
    local rc = C.set_body(VM, st.slot, body, #body)
    if rc == NOT_FOUND then
        error("ctx:set_body: the request body is not buffered on this route (declare P.body = {max = \"64k\"})", 2)
    end
    if rc ~= OK then fail("ctx:set_body", rc) end
end

-- balance returned nil, status: the request is refused (503 balancer_refused).
function M.refuse(o, status)
    if type(status) ~= "number" or status % 1 ~= 0 or status < 500 or status > 599 then
        error("balance: a refusal is `return nil, 503` (a 5xx status), got " .. tostring(status), 0)
    end
    local rc = C.balance_refuse(VM, priv[o].slot, status)
    if rc ~= OK then fail("balance", rc) end
end

return M
