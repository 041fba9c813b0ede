-- The waiting part of the `gw` module (DESIGN.md section 10.3): gw.sleep,
-- gw.timer.at/every and gw.shared_dict. Installed into each VM's gw table by
-- gw.lua; the C side is gateway/lua/timer.c and gateway/lua/shdict.c.
local coro = require("moongate.coro")
local lio = require("moongate.lio")
local shd = require("moongate.shdict")
local ffi = require("ffi")

local M = {}

local type, tostring, select, unpack = type, tostring, select, unpack

local timers = {}       -- id -> {fn, n, args...}
local next_timer = 0

-- runner.timer(id): the callback of timer id (a job of the coroutine pool).
function M.timer_entry(id)
    local t = timers[id]
    if t == nil then return false end
    if not t.every then timers[id] = nil end
    return t
end

local function start_timer(what, delay, interval, fn, ...)
    if type(delay) ~= "number" or delay < 0 then
        error("bad argument #1 to " .. what .. " (seconds >= 0 expected, got " .. tostring(delay) .. ")", 3)
    end
    if type(fn) ~= "function" then
        error("bad argument #2 to " .. what .. " (function expected, got " .. type(fn) .. ")", 3)
    end
    next_timer = next_timer + 1
    local id = next_timer
    timers[id] = { fn = fn, n = select("#", ...), every = interval > 0, ... }
    local ok, err = lio.timer(id, delay, interval)
    if not ok then
        timers[id] = nil
        return nil, err
    end
    return true
end

-- gw.http.request{upstream = NAME | host = "IP:port", method, path, headers,
-- body, timeout, max_body}: the request is written here, sent and read by C.
local METHOD_RE = "^[A-Z][A-Z]*$"
local concat = table.concat

local function bad(field, what)
    error("gw.http.request: " .. field .. " " .. what, 3)
end

local function build_request(o, host_header, keepalive)
    local method = o.method or "GET"
    if type(method) ~= "string" or not method:match(METHOD_RE) then bad("method", "must be an upper-case token") end
    local path = o.path or "/"
    if type(path) ~= "string" then bad("path", "must be a string") end
    -- the rules of a client's request target: "/check/" .. input must not
    -- reach "/check/../admin" on the upstream
    local fault = require("moongate.ext").target_fault(path, false)
    if fault then bad("path", "is refused: " .. fault) end
    local body = o.body
    if body ~= nil and type(body) ~= "string" then bad("body", "must be a string") end
    local out = { method, " ", path, " HTTP/1.1\r\n" }
    local has_host = false
    if o.headers ~= nil then
        if type(o.headers) ~= "table" then bad("headers", "must be a table") end
        for k, v in pairs(o.headers) do
            if type(k) ~= "string" or not k:match("^[%w!#$%%&'*+.^_`|~-]+$") then
                bad("headers", "has a bad name: " .. tostring(k))
            end
            local lk = k:lower()
            if lk == "content-length" or lk == "transfer-encoding" or lk == "connection" then
                bad("headers", "must not set " .. k .. " (the client frames the request)")
            end
            if lk == "host" then has_host = true end
            local vals = type(v) == "table" and v or { v }
            for _, one in ipairs(vals) do
                one = tostring(one)
                if one:find("[\r\n%z]") then bad("headers", "value of " .. k .. " holds CR, LF or NUL") end
                out[#out + 1] = k .. ": " .. one .. "\r\n"
            end
        end
    end
    if not has_host then out[#out + 1] = "Host: " .. host_header .. "\r\n" end
    if body ~= nil or method == "POST" or method == "PUT" or method == "PATCH" then
        out[#out + 1] = "Content-Length: " .. #(body or "") .. "\r\n"
    end
    -- to an upstream the connection comes from (and may go back to) its pool
    out[#out + 1] = keepalive and "\r\n" or "Connection: close\r\n\r\n"
    if body ~= nil then out[#out + 1] = body end
    return concat(out)
end

local function http_request(o)
    if type(o) ~= "table" then
        error("bad argument #1 to gw.http.request (table expected, got " .. type(o) .. ")", 2)
    end
    coro.check("gw.http.request")
    local kind, target
    if o.upstream ~= nil then
        kind, target = "upstream", o.upstream
    elseif o.host ~= nil then
        kind, target = "host", o.host
    else
        error("gw.http.request: upstream or host is required", 2)
    end
    if type(target) ~= "string" then bad(kind, "must be a string") end
    if o.timeout ~= nil and (type(o.timeout) ~= "number" or o.timeout <= 0) then
        bad("timeout", "must be a positive number of seconds")
    end
    local req = build_request(o, target, kind == "upstream")
    local ok, err = lio.http(kind, target, req, o.timeout, o.max_body)
    if not ok then return nil, err end
    return coro.wait()
end

-- gw.redis:call(...) and gw.redis:eval(script, keys, args): errors are
-- returned (nil, message), never raised, except for misuse.
local redis = {}

function redis:call(...)
    coro.check("gw.redis:call")
    local ok, err = lio.redis(...)
    if not ok then return nil, err end
    return coro.wait()
end

-- SHA-1s of the scripts seen (a plugin's script is one constant string), so a
-- call does not hash it again; emptied beyond 256 scripts.
local shas, nshas = {}, 0
local function sha_of(script)
    local sha = shas[script]
    if sha == nil then
        if nshas >= 256 then shas, nshas = {}, 0 end
        sha = lio.sha1(script)
        shas[script], nshas = sha, nshas + 1
    end
    return sha
end

function redis:eval(script, keys, args)
    if type(script) ~= "string" then
        error("bad argument #1 to gw.redis:eval (string expected, got " .. type(script) .. ")", 2)
    end
    keys, args = keys or {}, args or {}
    if type(keys) ~= "table" or type(args) ~= "table" then
        error("gw.redis:eval: keys and args must be lists", 2)
    end
    coro.check("gw.redis:eval")
    local argv = { "EVALSHA", sha_of(script), #keys }
    for i = 1, #keys do argv[#argv + 1] = keys[i] end
    for i = 1, #args do argv[#argv + 1] = args[i] end
    local ok, err = lio.redis(unpack(argv))
    if not ok then return nil, err end
    local res, rerr = coro.wait()
    if res == nil and type(rerr) == "string" and rerr:find("^NOSCRIPT") then
        argv[1], argv[2] = "EVAL", script -- loads it for the next EVALSHA
        ok, err = lio.redis(unpack(argv))
        if not ok then return nil, err end
        return coro.wait()
    end
    return res, rerr
end

-- Shared dictionaries: one object per dictionary of the config.
local Dict = {}
Dict.__index = Dict
function Dict:get(k) return shd.get(self[1], k) end
function Dict:set(k, v, ttl) return shd.set(self[1], k, v, ttl) end
function Dict:add(k, v, ttl) return shd.add(self[1], k, v, ttl) end
function Dict:incr(k, by, init, ttl) return shd.incr(self[1], k, by, init, ttl) end
function Dict:delete(k) return shd.delete(self[1], k) end
function Dict:ttl(k) return shd.ttl(self[1], k) end

-- take() is rate_limit's per-request call: an FFI call (gateway/lua/shdict.c,
-- ffi_take) keeps the plugin's JIT trace going where a C function would stop it.
ffi.cdef [[
struct mg_ffi_shdict_api {
    uint32_t size;
    int (*take)(void *d, const char *k, size_t klen, double rate, double burst, double *out);
};
]]
local SHD = ffi.cast("const struct mg_ffi_shdict_api *", shd.api)
if SHD.size ~= ffi.sizeof("struct mg_ffi_shdict_api") then
    error("moongate/gw_io.lua is out of step with gateway/lua/shdict.c (struct mg_ffi_shdict_api)", 0)
end
local take_out = ffi.new("double[4]")
local RC_MSG = { [1] = "not found", [-1] = "no memory", [-2] = "exists", [-3] = "not a number" }

function Dict:take(k, rate, burst)
    local tk = type(k)
    if tk == "number" then
        k = tostring(k)
    elseif tk ~= "string" then
        error("shared dict: key must be a string or a number, got " .. tk, 2)
    end
    if #k == 0 then error("shared dict: key must not be empty", 2) end
    if type(rate) ~= "number" or type(burst) ~= "number" or not (rate > 0 and rate < 1e12)
        or not (burst >= 1 and burst < 1e12) then
        error("shared dict: take needs rate > 0 and burst >= 1", 2)
    end
    local rc = SHD.take(self.ptr, k, #k, rate, burst, take_out)
    if rc ~= 0 then return nil, RC_MSG[rc] end
    return take_out[0] ~= 0, take_out[1], take_out[2], take_out[3]
end

local dicts = {}
for name, i in pairs(shd.names()) do
    dicts[name] = setmetatable({ i, name = name, ptr = ffi.cast("void *", shd.ptr(i)) }, Dict)
end

function M.install(gw)
    gw.http = { request = http_request }
    gw.redis = redis
    function gw.shared_dict(name)
        local d = dicts[name]
        if d == nil then
            error("gw.shared_dict: no dictionary '" .. tostring(name)
                .. "' (declare it under shared_dicts in the config)", 2)
        end
        return d
    end

    function gw.sleep(seconds)
        if type(seconds) ~= "number" then
            error("bad argument #1 to gw.sleep (number expected, got " .. type(seconds) .. ")", 2)
        end
        coro.check("gw.sleep")
        lio.sleep(seconds)
        coro.wait()
    end

    gw.timer = {
        at = function(delay, fn, ...)
            return start_timer("gw.timer.at", delay, 0, fn, ...)
        end,
        every = function(interval, fn, ...)
            if type(interval) ~= "number" or interval < 0.001 then
                error("bad argument #1 to gw.timer.every (seconds >= 0.001 expected, got "
                    .. tostring(interval) .. ")", 2)
            end
            return start_timer("gw.timer.every", interval, interval, fn, ...)
        end,
    }
end

M.unpack = unpack
return M
