-- forward_auth: asks an auth service whether a request may go on
-- (DESIGN.md section 10.3), as Traefik's forwardAuth or nginx's auth_request.
--
-- For each request, a GET to `path` on the upstream `upstream` (its targets in
-- turn) carries the request headers named in `forward_headers` plus
-- X-Forwarded-Method, X-Forwarded-Uri and X-Forwarded-For. Then:
--   2xx           the request goes on, with the auth response's headers named in
--                 `copy_headers` set on it (e.g. X-User for the upstream)
--   other status  that status and body are the answer (with the auth service's
--                 Content-Type and WWW-Authenticate)
--   no answer     (timeout, refused, a bad response) `on_error`: 503
--                 {"error":"auth_unavailable"} (default) or 401 {"error":"unauthorized"}
--
-- config:
--   upstream: auth          an upstream of the config (required)
--   path: /check            (default /)
--   forward_headers: [Authorization, Cookie]   (default [Authorization])
--   copy_headers: [X-User]  (default none)
--   timeout: 0.5            seconds (default 1)
--   on_error: 503           503 | 401
local P = { waits = true }

local KNOWN = {
    upstream = true, path = true, forward_headers = true, copy_headers = true, timeout = true,
    on_error = true,
}

local function names(v, what)
    if v == nil then return {} end
    if type(v) ~= "table" then error("forward_auth: config." .. what .. " must be a list of header names", 0) end
    for _, n in ipairs(v) do
        if type(n) ~= "string" or not n:match("^[%w!#$%%&'*+.^_`|~-]+$") then
            error("forward_auth: config." .. what .. " holds a bad header name: " .. tostring(n), 0)
        end
    end
    return v
end

function P.init(conf)
    for k in pairs(conf) do
        if not KNOWN[k] then error("forward_auth: unknown config key '" .. tostring(k) .. "'", 0) end
    end
    if type(conf.upstream) ~= "string" then
        error("forward_auth: config.upstream (the auth service's upstream) is required", 0)
    end
    conf.path = conf.path or "/"
    if type(conf.path) ~= "string" or conf.path:sub(1, 1) ~= "/" then
        error("forward_auth: config.path must start with /", 0)
    end
    conf._forward = names(conf.forward_headers or { "Authorization" }, "forward_headers")
    conf._copy = names(conf.copy_headers, "copy_headers")
    conf.timeout = conf.timeout or 1
    if type(conf.timeout) ~= "number" or not (conf.timeout > 0) then
        error("forward_auth: config.timeout must be a positive number of seconds", 0)
    end
    local oe = conf.on_error or 503
    if oe ~= 503 and oe ~= 401 then error("forward_auth: config.on_error must be 503 or 401", 0) end
    conf._on_error = oe
end

local function answer_error(ctx, conf, why)
    gw.log("warn", "forward_auth: " .. conf.upstream .. ": " .. tostring(why))
    local name = conf._on_error == 401 and "unauthorized" or "auth_unavailable"
    ctx:respond(conf._on_error, gw.json_encode({
        error = name, status = conf._on_error, request_id = ctx.request_id,
    }), { ["Content-Type"] = "application/json" })
end

function P.access(ctx, conf)
    local h = {
        ["X-Forwarded-Method"] = ctx.method,
        ["X-Forwarded-Uri"] = ctx.query and (ctx.path .. "?" .. ctx.query) or ctx.path,
        ["X-Forwarded-For"] = ctx.client_ip,
    }
    for _, n in ipairs(conf._forward) do
        local v = ctx:header(n)
        if v ~= nil then h[n] = v end
    end
    local res, err = gw.http.request{
        upstream = conf.upstream, method = "GET", path = conf.path, headers = h,
        timeout = conf.timeout, max_body = 65536,
    }
    if not res then return answer_error(ctx, conf, err) end
    if res.status >= 200 and res.status < 300 then
        for _, n in ipairs(conf._copy) do
            local vals = res.headers[n:lower()]
            if vals then ctx:set_header(n, vals[1]) end
        end
        return
    end
    local out = {}
    for _, n in ipairs({ "Content-Type", "WWW-Authenticate" }) do
        local vals = res.headers[n:lower()]
        if vals then out[n] = vals[1] end
    end
    if res.status < 200 or res.status > 599 then return answer_error(ctx, conf, "status " .. res.status) end
    ctx:respond(res.status, res.body, out)
end

return P
