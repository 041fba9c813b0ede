-- request_id: exposes the request id under the header names your stack uses.
--
-- The gateway already keeps a valid incoming X-Request-Id (or generates one),
-- sends it upstream and returns it. This plugin adds the same id under other
-- names: on every response (including ones that another plugin or the gateway
-- itself produces) and, optionally, on the request sent upstream.
--
-- config:
--   response_header: "X-Request-Id"  (default; "" to add none)
--   upstream_header: "X-Correlation-Id"  (default: none)
local P = {}

local function header_name(conf, key, default)
    local v = conf[key]
    if v == nil then return default end
    if type(v) ~= "string" or (v ~= "" and not v:match("^[%w!#$%%&'*+.^_`|~-]+$")) then
        error("request_id: config." .. key .. " must be a header name, got " .. tostring(v), 0)
    end
    return v ~= "" and v or nil
end

function P.init(conf)
    for k in pairs(conf) do
        if k ~= "response_header" and k ~= "upstream_header" then
            error("request_id: unknown config key '" .. tostring(k) .. "'", 0)
        end
    end
    conf._response = header_name(conf, "response_header", "X-Request-Id")
    conf._upstream = header_name(conf, "upstream_header", nil)
end

function P.access(ctx, conf)
    local id = ctx.request_id
    if id == nil then return end
    if conf._upstream then ctx:set_header(conf._upstream, id) end
    if conf._response then ctx:set_response_header(conf._response, id) end
end

return P
