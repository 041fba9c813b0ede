-- P.schema: a plugin's declared config, checked by the core at -t, start and
-- reload before init(conf) runs (DESIGN.md 10.4). Defaults are filled in.
--
--   P.schema = {fields = {
--     mode  = {type = "string", enum = {"enforce", "report"}, default = "enforce"},
--     limit = {type = "number", min = 1, required = true},
--     name  = {type = "string", pattern = "^%w+$"},
--     tags  = {type = "array", items = {type = "string"}},
--     auth  = {type = "table", fields = {...}},        -- nested, checked the same way
--     extra = {type = "map"},                          -- any table, unchecked inside
--   }}
-- types: string, number, integer, boolean, array, table (with fields), map, any.
-- Keys not declared are refused (a typo is an error, not a silent default).
-- An error raises "\1LINE:COL\1config.PATH: message": vm.c turns the prefix
-- into the FILE:LINE:COL of the offending value.
local M = {}

local function where(pos, path)
    local p = pos[path]
    while p == nil and path ~= "" do
        path = path:match("^(.*)[%.%[][^%.%[]*$") or ""
        p = pos[path]
    end
    return p
end

local function fail(pos, path, msg)
    local p = where(pos, path)
    local label = path == "" and "config" or "config." .. path
    error((p and ("\1" .. p .. "\1") or "") .. label .. ": " .. msg, 0)
end

local TYPES = { string = true, number = true, integer = true, boolean = true, array = true,
                table = true, map = true, any = true }

local function is_array(v)
    local n = #v
    for k in pairs(v) do
        if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return false end
    end
    return true
end

local check_fields

local function check_value(spec, v, pos, path)
    local t = spec.type or "any"
    if not TYPES[t] then fail(pos, path, "schema error: unknown type '" .. tostring(t) .. "'") end
    local lt = type(v)
    if t == "integer" then
        if lt ~= "number" or v % 1 ~= 0 then fail(pos, path, "an integer expected, got " .. tostring(v)) end
    elseif t == "array" then
        if lt ~= "table" or not is_array(v) then fail(pos, path, "a list expected, got " .. lt) end
    elseif t == "table" or t == "map" then
        if lt ~= "table" then fail(pos, path, "a mapping expected, got " .. lt) end
    elseif t ~= "any" and lt ~= t then
        fail(pos, path, "a " .. t .. " expected, got " .. lt .. (lt ~= "table" and " (" .. tostring(v) .. ")" or ""))
    end
    if spec.enum then
        local ok = false
        for _, e in ipairs(spec.enum) do if e == v then ok = true break end end
        if not ok then
            local names = {}
            for i, e in ipairs(spec.enum) do names[i] = tostring(e) end
            fail(pos, path, "must be one of " .. table.concat(names, ", ") .. ", got " .. tostring(v))
        end
    end
    if lt == "number" then
        if spec.min and v < spec.min then fail(pos, path, "must be at least " .. spec.min .. ", got " .. v) end
        if spec.max and v > spec.max then fail(pos, path, "must be at most " .. spec.max .. ", got " .. v) end
    end
    if lt == "string" then
        if spec.pattern and not v:find(spec.pattern) then
            fail(pos, path, "does not match the pattern " .. spec.pattern)
        end
        if spec.min and #v < spec.min then fail(pos, path, "must be at least " .. spec.min .. " characters") end
        if spec.max and #v > spec.max then fail(pos, path, "must be at most " .. spec.max .. " characters") end
    end
    if t == "array" and spec.items then
        for i, item in ipairs(v) do check_value(spec.items, item, pos, path .. "[" .. i .. "]") end
    end
    if t == "table" and spec.fields then
        check_fields(spec.fields, v, pos, path)
    end
end

local function copy(v)
    if type(v) ~= "table" then return v end
    local out = {}
    for k, x in pairs(v) do out[k] = copy(x) end
    return out
end

check_fields = function(fields, conf, pos, path)
    local prefix = path == "" and "" or path .. "."
    for k in pairs(conf) do
        if fields[k] == nil then fail(pos, prefix .. tostring(k), "unknown key") end
    end
    for name, spec in pairs(fields) do
        local v = conf[name]
        if v == nil and spec.default ~= nil then
            v = copy(spec.default)
            conf[name] = v
        end
        if v == nil then
            if spec.required then fail(pos, path, "'" .. name .. "' is required") end
        else
            check_value(spec, v, pos, prefix .. name)
        end
    end
end

function M.check(schema, conf, pos)
    if type(schema) ~= "table" or type(schema.fields) ~= "table" then
        error("P.schema must be a table like {fields = {name = {type = ...}}}", 0)
    end
    check_fields(schema.fields, conf, pos or {}, "")
end

return M
