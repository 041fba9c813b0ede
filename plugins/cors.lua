-- cors: Cross-Origin Resource Sharing (DESIGN.md 10.4).
--
-- Preflights (OPTIONS with Access-Control-Request-Method) from an allowed
-- origin are answered here with 204; other requests from an allowed origin go
-- on and their response gets Access-Control-Allow-Origin (and Vary: Origin).
-- A disallowed origin gets no CORS headers (the browser then blocks it).
--
-- config:
--   origins: ["https://a.example"]  ("*" allows any; required)
--   methods: [GET, HEAD, PUT, PATCH, POST, DELETE]
--   headers: []          allowed request headers (default: echo the preflight's)
--   expose: []           Access-Control-Expose-Headers
--   credentials: false
--   max_age: 600         seconds
local P = {}
P.priority = 2000

local strings = { type = "array", items = { type = "string" } }
P.schema = { fields = {
    origins = { type = "array", items = { type = "string" }, required = true },
    methods = strings, headers = strings, expose = strings,
    credentials = { type = "boolean", default = false },
    max_age = { type = "any", default = 600 },   -- seconds, or "10m"
} }

local function list(v)
    return v and table.concat(v, ", ") or nil
end

local function seconds(v)
    if type(v) == "number" then return v end
    local n, unit = tostring(v):match("^(%d+)([smh]?)$")
    if not n then error("cors: config.max_age must be seconds or a duration like 10m", 0) end
    return tonumber(n) * (unit == "m" and 60 or unit == "h" and 3600 or 1)
end

function P.init(conf)
    if conf.origins[1] == nil then error("cors: config.origins must not be empty", 0) end
    conf._any = false
    conf._origins = {}      -- origin -> its Access-Control-Allow-Origin header (below)
    for _, o in ipairs(conf.origins) do
        if o == "*" then conf._any = true else conf._origins[o] = o end
    end
    if conf._any and conf.credentials then
        error("cors: credentials: true cannot be used with origin '*'", 0)
    end
    conf._methods = list(conf.methods) or "GET, HEAD, PUT, PATCH, POST, DELETE"
    conf._headers = list(conf.headers)
    conf._expose = list(conf.expose)
    conf._max_age = tostring(math.floor(seconds(conf.max_age)))
    -- the response headers, prepared once (gw.header): an edit is then a
    -- pointer append in C, without a check or a copy per request
    local acao = "Access-Control-Allow-Origin"
    conf._h_any = gw.header(acao, "*")
    for o in pairs(conf._origins) do conf._origins[o] = gw.header(acao, o) end
    conf._h_vary = gw.header("Vary", "Origin")
    conf._h_credentials = gw.header("Access-Control-Allow-Credentials", "true")
    conf._h_expose = conf._expose and gw.header("Access-Control-Expose-Headers", conf._expose)
end

local function preflight(ctx, conf, allow)
    local h = {
        ["Access-Control-Allow-Origin"] = allow,
        ["Access-Control-Allow-Methods"] = conf._methods,
        ["Access-Control-Max-Age"] = conf._max_age,
        ["Vary"] = "Origin",
    }
    local req_headers = conf._headers or ctx:header("Access-Control-Request-Headers")
    if req_headers then h["Access-Control-Allow-Headers"] = req_headers end
    if conf.credentials then h["Access-Control-Allow-Credentials"] = "true" end
    ctx:respond(204, nil, h)
end

-- The common requests cost one header lookup (no Origin: not CORS) or one
-- lookup, one table index and two prepared response-header edits (an allowed
-- origin); nothing is built, checked or copied per request.
function P.access(ctx, conf)
    local origin = ctx:header("Origin")
    if origin == nil then return end
    local any = conf._any
    local h = any and conf._h_any or conf._origins[origin] -- one lookup: origin -> header
    if not h then return end
    -- a preflight is an OPTIONS with Access-Control-Request-Method; the
    -- header is looked up first: a miss makes no string, while the first
    -- ctx.method of a request clears the field cache and interns the method
    if ctx:header("Access-Control-Request-Method") and ctx.method == "OPTIONS" then
        preflight(ctx, conf, any and "*" or origin)
    end
    ctx:set_response_header(h)
    if not any then ctx:add_response_header(conf._h_vary) end
    if conf.credentials then ctx:set_response_header(conf._h_credentials) end
    if conf._h_expose then ctx:set_response_header(conf._h_expose) end
end

return P
