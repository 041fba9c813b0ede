-- key_auth: API-key authentication.
--
-- A request must carry one of the configured keys in a header (or, if
-- configured, a query parameter); otherwise it is answered here with
--   401 {"error":"unauthorized","message":"...","request_id":"...","status":401}
-- and never reaches an upstream. With keys given as a map (consumer: key), the
-- consumer's name is left in ctx.vars.consumer for the plugins that follow.
--
-- config:
--   keys: ["k1", "k2"]  or  {alice: "k1", bob: "k2"}   (required; strings)
--   header: "X-Api-Key"            (default)
--   query: "apikey"                (default: none; checked when the header is absent)
--   hide_credentials: false        (true: the key is not forwarded upstream)
local P = {}

local KNOWN = { keys = true, header = true, query = true, hide_credentials = true }

function P.init(conf)
    for k in pairs(conf) do
        if not KNOWN[k] then error("key_auth: unknown config key '" .. tostring(k) .. "'", 0) end
    end
    if type(conf.keys) ~= "table" or next(conf.keys) == nil then
        error("key_auth: config.keys must be a non-empty list or map of keys", 0)
    end
    local set = {}
    for name, key in pairs(conf.keys) do
        if type(key) ~= "string" or key == "" then
            error("key_auth: config.keys." .. tostring(name) .. " must be a non-empty string"
                .. " (quote keys that look like numbers)", 0)
        end
        set[key] = type(name) == "string" and name or true
    end
    conf._keys = set
    conf._header = conf.header or "X-Api-Key"
    if type(conf._header) ~= "string" or not conf._header:match("^[%w!#$%%&'*+.^_`|~-]+$") then
        error("key_auth: config.header must be a header name", 0)
    end
    if conf.query ~= nil and (type(conf.query) ~= "string" or conf.query == "") then
        error("key_auth: config.query must be a parameter name", 0)
    end
    if conf.hide_credentials ~= nil and type(conf.hide_credentials) ~= "boolean" then
        error("key_auth: config.hide_credentials must be true or false", 0)
    end
end

local function unescape(s)
    return (s:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function from_query(query, name)
    if not query then return nil end
    for k, v in query:gmatch("([^&=]+)=?([^&]*)") do
        if unescape(k) == name then return unescape(v) end
    end
    return nil
end

local function reject(ctx, message)
    local body = gw.json_encode({
        error = "unauthorized", status = 401, message = message, request_id = ctx.request_id,
    })
    ctx:respond(401, body, {
        ["Content-Type"] = "application/json",
        ["WWW-Authenticate"] = 'Key realm="moongate"',
    })
end

function P.access(ctx, conf)
    local key = ctx:header(conf._header)
    if key == nil and conf.query then key = from_query(ctx.query, conf.query) end
    if key == nil or key == "" then
        return reject(ctx, "missing API key")
    end
    local who = conf._keys[key]
    if who == nil then
        return reject(ctx, "invalid API key")
    end
    if who ~= true then ctx.vars.consumer = who end
    if conf.hide_credentials then ctx:set_header(conf._header, nil) end
end

return P
