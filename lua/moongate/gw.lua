-- The `gw` module that plugins see (DESIGN.md section 6): logging, clocks,
-- hashing, a tiny JSON encoder and the per-worker shared table.
--
-- One gw table per VM (so gw.shared is per worker and starts empty at each
-- reload); plugins reach it as the global `gw` or require("gw").
local ctx = require("moongate.ctx")

local M = {}

local LEVELS = { debug = 0, info = 1, warn = 2, error = 3 }

local concat, select, tostring, type = table.concat, select, tostring, type

local function message(...)
    local n = select("#", ...)
    if n == 1 then return tostring((...)) end
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    return concat(parts, " ")
end

-- ------------------------------------------------------------------ JSON

local escapes = {
    ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
    ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}

local function escape_char(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
end

local function quote(s)
    return '"' .. s:gsub('[%c"\\]', escape_char) .. '"'
end

local encode

local function encode_table(t, depth, out)
    if depth > 32 then error("gw.json_encode: nested too deeply (a cycle?)", 0) end
    local n, count = #t, 0
    for _ in pairs(t) do count = count + 1 end
    if n > 0 and count == n then
        out[#out + 1] = "["
        for i = 1, n do
            if i > 1 then out[#out + 1] = "," end
            encode(t[i], depth + 1, out)
        end
        out[#out + 1] = "]"
        return
    end
    local keys = {}
    for k in pairs(t) do
        if type(k) ~= "string" and type(k) ~= "number" then
            error("gw.json_encode: object keys must be strings or numbers, got " .. type(k), 0)
        end
        keys[#keys + 1] = tostring(k)
    end
    table.sort(keys) -- stable output: easier to test and to diff
    out[#out + 1] = "{"
    for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = quote(k)
        out[#out + 1] = ":"
        local v = t[k]
        if v == nil then v = t[tonumber(k)] end
        encode(v, depth + 1, out)
    end
    out[#out + 1] = "}"
end

encode = function(v, depth, out)
    local t = type(v)
    if v == nil then
        out[#out + 1] = "null"
    elseif t == "boolean" then
        out[#out + 1] = v and "true" or "false"
    elseif t == "number" then
        if v ~= v or v == math.huge or v == -math.huge then
            out[#out + 1] = "null"
        elseif v % 1 == 0 and v > -2 ^ 53 and v < 2 ^ 53 then
            out[#out + 1] = string.format("%d", v)
        else
            out[#out + 1] = string.format("%.17g", v)
        end
    elseif t == "string" then
        out[#out + 1] = quote(v)
    elseif t == "table" then
        encode_table(v, depth, out)
    else
        error("gw.json_encode: cannot encode a " .. t, 0)
    end
end

-- ------------------------------------------------------------------ gw

-- Builds the gw table of one VM.
function M.new(worker_id, checking)
    local gw = {
        shared = {},
        worker_id = worker_id,
        checking = checking,
    }

    function gw.log(level, ...)
        local l = LEVELS[level]
        if l == nil then
            error("bad argument #1 to gw.log (\"debug\", \"info\", \"warn\" or \"error\" expected, got "
                .. tostring(level) .. ")", 2)
        end
        ctx.log(l, message(...))
    end

    function gw.now()
        return ctx.now()
    end

    function gw.hash(s, seed)
        if type(s) ~= "string" then
            error("bad argument #1 to gw.hash (string expected, got " .. type(s) .. ")", 2)
        end
        return ctx.hash(s, seed)
    end

    function gw.json_encode(v)
        local out = {}
        encode(v, 0, out)
        return concat(out)
    end

    gw.json_quote = quote
    gw.header = ctx.header
    require("moongate.gw_io").install(gw)
    require("moongate.gwext").extend(gw)

    return gw
end

return M
