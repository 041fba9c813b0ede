-- jwt_auth: JSON Web Token authentication (DESIGN.md 10.4).
--
-- The token comes from a header (default Authorization, "Bearer " stripped);
-- gw.jwt.verify checks its signature (libcrypto, in C), exp/nbf with leeway,
-- iss and aud. On failure:
--   401 {"error":"unauthorized","message":"...","request_id":"...","status":401}
-- On success the claims are in ctx.vars.jwt_claims (read-only: a cached
-- token's claims table is shared by its requests; with an HMAC key it is
-- decoded on the first read of a field), and claims_to_headers
-- copies claims into request headers for the upstream.
--
-- config:
--   alg: [HS256]                 allowed algs (HS256/384/512, RS256/384/512, ES256/384, EdDSA)
--   key: "secret" or PEM text    one of key, key_file, jwks_file, jwks_url is required
--   key_file: /path/key.pem      read once at load
--   jwks_file: /path/jwks.json   a JWK set, read once at load
--   jwks_url: a JWK set fetched by each worker at start and every jwks_refresh
--             seconds (gw.http): "http://IP:port/path" (one plain connection per
--             fetch) or "upstream://NAME/path" (a configured upstream: its pool,
--             tls, breaker). Until the first fetch answers, tokens are refused;
--             a failed fetch keeps the previous keys. New keys flush the cache.
--   jwks_refresh: 300            seconds between fetches
--   jwks_timeout: 5              seconds for one fetch
--   iss: "https://issuer" | [..] (default: not checked)
--   aud: "api" | [..]            (default: not checked)
--   leeway: 30                   seconds of clock skew allowed for exp/nbf
--   header: Authorization
--   claims_to_headers: {sub: X-User}
--   cache: 1024                  verified tokens remembered per worker (0: off); a
--                                cached token only has exp/nbf re-checked
local P = {}
P.priority = 1450
P.waits = false -- only the jwks_url timer waits (gw.http): access stays a direct call

local ALGS = { "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA", "none" }
P.schema = { fields = {
    alg = { type = "array", items = { type = "string", enum = ALGS }, default = { "HS256" } },
    key = { type = "string" }, key_file = { type = "string" }, jwks_file = { type = "string" },
    jwks_url = { type = "string", pattern = "^[%w]+://[^/]+/.*$" },
    jwks_refresh = { type = "number", min = 1, default = 300 },
    jwks_timeout = { type = "number", min = 0.001, default = 5 },
    iss = { type = "any" }, aud = { type = "any" },
    leeway = { type = "number", min = 0, default = 30 },
    header = { type = "string", default = "Authorization", pattern = "^[%w!#$%%&'*+.^_`|~-]+$" },
    claims_to_headers = { type = "map" },
    cache = { type = "number", min = 0, max = 1048576, default = 1024 },
} }

local function bad(msg) error("jwt_auth: " .. msg, 0) end

-- jwks_url -> the gw.http.request fields
local function jwks_target(url)
    local host, path = url:match("^http://([%d%.]+:%d+)(/.*)$")
    if host then return { host = host, path = path } end
    local name
    name, path = url:match("^upstream://([^/]+)(/.*)$")
    if name then return { upstream = name, path = path } end
    bad("config.jwks_url must be http://IP:port/path (no name resolution on a worker)"
        .. " or upstream://NAME/path, got " .. url)
end

function P.init(conf)
    local alg = conf.alg
    if alg[1] == nil then bad("config.alg must not be empty") end
    for _, a in ipairs(alg) do
        if a == "none" then bad("alg 'none' is never accepted") end
    end
    local sources = (conf.key and 1 or 0) + (conf.key_file and 1 or 0) + (conf.jwks_file and 1 or 0)
        + (conf.jwks_url and 1 or 0)
    if sources ~= 1 then bad("exactly one of config.key, key_file, jwks_file or jwks_url is required") end
    local opts = { alg = alg, leeway = conf.leeway, iss = conf.iss, aud = conf.aud }
    if conf.key then
        if conf.key == "" then bad("config.key must not be empty") end
        opts.key = conf.key
    elseif conf.key_file then
        local data, err = gw.read_file(tostring(conf.key_file))
        if not data then bad("cannot read key_file: " .. tostring(err)) end
        opts.key = data:find("-----BEGIN", 1, true) and data or data:gsub("%s+$", "")
    elseif conf.jwks_url then
        conf._jwks_req = jwks_target(conf.jwks_url)
        conf._jwks_req.timeout = conf.jwks_timeout
        conf._jwks_req.headers = { Accept = "application/json" }
        opts.jwks = { keys = {} } -- none until the first fetch (init_worker)
    else
        local data, err = gw.read_file(tostring(conf.jwks_file))
        if not data then bad("cannot read jwks_file: " .. tostring(err)) end
        local set, jerr = gw.json.decode(data)
        if type(set) ~= "table" or type(set.keys) ~= "table" then
            bad("jwks_file is not a JWK set: " .. tostring(jerr or "no keys"))
        end
        opts.jwks = set
    end
    conf._opts = opts
    -- claims_to_headers as two arrays: no pairs() per request
    local claims, headers = {}, {}
    for claim, header in pairs(conf.claims_to_headers or {}) do
        claims[#claims + 1], headers[#headers + 1] = claim, header
    end
    conf._claims, conf._headers = claims, headers
    -- with an HMAC key a new token is verified in one C call that also reads
    -- these claims' values (memo.h), and the claims table is built on first read
    conf._verify, conf._flush = gw.jwt.request_verifier(opts, conf.header,
        conf.header:lower() == "authorization", math.floor(conf.cache), claims)
end

-- One fetch of jwks_url; the keys change only on a valid JWK set.
local function refresh(conf)
    local res, err = gw.http.request(conf._jwks_req)
    if not res then
        gw.log("warn", "jwt_auth: jwks_url " .. conf.jwks_url .. ": " .. tostring(err) .. " (keeping the previous keys)")
        return
    end
    local set, jerr = nil, "status " .. tostring(res.status)
    if res.status == 200 then set, jerr = gw.json.decode(res.body) end
    if type(set) ~= "table" or type(set.keys) ~= "table" then
        gw.log("warn", "jwt_auth: jwks_url " .. conf.jwks_url .. ": not a JWK set ("
            .. tostring(jerr or "no keys") .. "), keeping the previous keys")
        return
    end
    conf._opts.jwks = set
    conf._flush() -- tokens verified with keys that may be gone
end

function P.init_worker(conf)
    if not conf._jwks_req then return end
    gw.timer.at(0, refresh, conf)
    gw.timer.every(conf.jwks_refresh, refresh, conf)
end

local function reject(ctx, message)
    ctx:respond(401, gw.json_encode({
        error = "unauthorized", status = 401, message = message, request_id = ctx.request_id,
    }), { ["Content-Type"] = "application/json", ["WWW-Authenticate"] = 'Bearer realm="moongate"' })
end

-- The header values of claims_to_headers for one token (false: no such
-- string or number claim), computed once per cached token.
local function header_values(conf, claims)
    local out = {}
    for i, claim in ipairs(conf._claims) do
        local v = claims[claim]
        local t = type(v)
        out[i] = (t == "string" or t == "number") and tostring(v) or false
    end
    return out
end

function P.access(ctx, conf)
    -- the token is read in place and a token seen before is not verified
    -- again (only exp/nbf): no garbage per request on that path
    local claims, err, memo = conf._verify(ctx)
    if not claims then reject(ctx, err) end
    ctx.vars.jwt_claims = claims
    local headers = conf._headers
    if headers[1] ~= nil then
        local values = memo.h
        if values == nil then
            values = header_values(conf, claims)
            memo.h = values
        end
        -- one header (the usual case) without a loop: a loop here would leave
        -- the function's root trace (a JIT abort per request shape)
        local v = values[1]
        if v then ctx:set_header(headers[1], v) end
        if headers[2] ~= nil then
            for i = 2, #headers do
                v = values[i]
                if v then ctx:set_header(headers[i], v) end
            end
        end
    end
end

return P
