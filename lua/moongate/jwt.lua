-- gw.jwt.verify(token, opts) -> claims | nil, err (DESIGN.md 10.4): a JWS in
-- compact form, signature checked in C (crypto.c), then exp/nbf/iss/aud.
--
-- opts = {alg = {"RS256", ...} (required allow-list; "none" is never
-- accepted), key = PEM public key or certificate | HMAC secret, jwks = a JWK
-- set table ({keys = {...}}), leeway = seconds (0), iss = string | list,
-- aud = string | list}. Alg confusion is refused by construction: a PEM key
-- is only ever a public key (never an HMAC secret), and the key's type must
-- match the alg's family. Parsed keys are cached per VM (by PEM text, by JWK
-- table), so a request pays for neither PEM parsing nor key building.
local ffi = require("ffi")
local ctxm = require("moongate.ctx") -- also declares struct mg_lua_str
local native = require("moongate.native")
local crypto, json = native.crypto, native.json

ffi.cdef [[
struct mg_jwt_claim_val { const char *p; double num; uint32_t len; int32_t kind; };
struct mg_jwt_hs_out {
    const char *payload;
    uint32_t payload_len, nnames;
    double exp, nbf;
    struct mg_jwt_claim_val claim[8];
};
struct mg_jwt_cache_api {
    uint32_t size;
    int (*lookup)(void *c, const struct mg_lua_str *value, int bearer, double now, double leeway,
                  uint32_t *span, void *spec, struct mg_jwt_hs_out *out);
    int (*insert)(void *c, const char *tok, size_t len, double exp, double nbf);
    int (*hs_verify)(void *spec, const char *tok, size_t len, double now, struct mg_jwt_hs_out *out);
};
]]
local JC = ffi.cast("const struct mg_jwt_cache_api *", crypto.jwt_cache_api)
if JC.size ~= ffi.sizeof("struct mg_jwt_cache_api") then
    error("moongate/jwt.lua is out of step with gateway/lua/jwt_cache.c (struct mg_jwt_cache_api)", 0)
end
-- enum in jwt_cache.h
local JC_NO_TOKEN, JC_EXPIRED, JC_NOT_YET, JC_VERIFIED = -2, -3, -4, -5

local M = {}
local find, sub, byte = string.find, string.sub, string.byte

local clock
function M.set_clock(fn) clock = fn end

-- Claims of a token verified by jwt_hs.c's fast path, which reads only the
-- claims the verifier needs: a table that decodes its payload on the first
-- read of a field (or claims(t)), then holds every claim itself. No garbage
-- per request but the payload text and this table.
local lazy_src = setmetatable({}, { __mode = "k" })
local LAZY = {}

local function materialise(t)
    local src = lazy_src[t]
    if src == nil then return t end
    lazy_src[t] = nil
    setmetatable(t, nil)
    local claims = json.decode(src) -- always an object: jwt_hs.c checked it
    if type(claims) == "table" then
        for k, v in pairs(claims) do rawset(t, k, v) end
    end
    return t
end
LAZY.__index = function(t, k) return rawget(materialise(t), k) end
LAZY.__pairs = function(t) return next, materialise(t), nil end -- where LuaJIT honours it

local function lazy_claims(p, n)
    local t = setmetatable({}, LAZY)
    lazy_src[t] = ffi.string(p, n)
    return t
end

-- claims(t) -> t with every claim present (pairs/next see a lazy table's
-- claims only once one was read).
M.claims = materialise

local pem_cache = {}                               -- PEM text -> key userdata
local jwk_cache = setmetatable({}, { __mode = "k" }) -- JWK table -> key userdata
local hmac_cache = {}                              -- secret -> prepared HMAC key

local FAMILY = {
    HS256 = "oct", HS384 = "oct", HS512 = "oct",
    RS256 = "RSA", RS384 = "RSA", RS512 = "RSA",
    ES256 = "EC", ES384 = "EC", EdDSA = "OKP",
}

local function b64(s)
    return crypto.b64decode(s, true)
end

local function b64r(s, i, j)
    return crypto.b64decode(s, true, i, j)
end

local function pem_key(pem)
    local k = pem_cache[pem]
    if k == nil then
        local err
        k, err = crypto.pkey_pem(pem)
        if k == nil then return nil, "invalid key: " .. tostring(err) end
        pem_cache[pem] = k
    end
    return k
end

local function hmac_key(secret)
    local k = hmac_cache[secret]
    if k == nil then
        k = crypto.hmac_key(secret)
        hmac_cache[secret] = k
    end
    return k
end

local function jwk_key(j)
    local k = jwk_cache[j]
    if k ~= nil then return k end
    local err
    if j.kty == "oct" then
        k, err = b64(j.k or "")
        if k then k = crypto.hmac_key(k) end
    elseif j.kty == "RSA" then
        local n, e = b64(j.n or ""), b64(j.e or "")
        if n and e then k, err = crypto.pkey_rsa(n, e) else err = "bad n or e" end
    elseif j.kty == "EC" then
        local x, y = b64(j.x or ""), b64(j.y or "")
        if x and y then k, err = crypto.pkey_ec(tostring(j.crv), x, y) else err = "bad x or y" end
    elseif j.kty == "OKP" and j.crv == "Ed25519" then
        local x = b64(j.x or "")
        if x then k, err = crypto.pkey_ed25519(x) else err = "bad x" end
    else
        err = "unsupported kty " .. tostring(j.kty)
    end
    if k == nil then return nil, "invalid JWK: " .. tostring(err) end
    jwk_cache[j] = k
    return k
end

-- The JWKs that may have signed a token with this header.
local function jwks_candidates(jwks, header, family)
    local keys = jwks.keys or jwks
    local out = {}
    for _, j in ipairs(keys) do
        if type(j) == "table" and j.kty == family and (j.alg == nil or j.alg == header.alg)
            and (header.kid == nil or j.kid == nil or j.kid == header.kid)
            and (j.use == nil or j.use == "sig") then
            out[#out + 1] = j
        end
    end
    return out
end

-- want: a string or a list; v: a claim (string or list). No tables built:
-- this runs on every request.
local function has(want, a)
    if type(want) == "string" then return a == want end
    local i = 1
    while want[i] ~= nil do
        if want[i] == a then return true end
        i = i + 1
    end
    return false
end

local function one_of(v, want)
    if type(v) ~= "table" then return has(want, v) end
    for _, a in ipairs(v) do
        if has(want, a) then return true end
    end
    return false
end

local function check_claims(claims, opts)
    local now, leeway = clock(), tonumber(opts.leeway) or 0
    local exp, nbf = claims.exp, claims.nbf
    if exp ~= nil then
        if type(exp) ~= "number" then return "invalid exp claim" end
        if now > exp + leeway then return "token expired" end
    end
    if nbf ~= nil then
        if type(nbf) ~= "number" then return "invalid nbf claim" end
        if now + leeway < nbf then return "token not yet valid" end
    end
    if opts.iss ~= nil and not one_of(claims.iss, opts.iss) then return "issuer not allowed" end
    if opts.aud ~= nil and (claims.aud == nil or not one_of(claims.aud, opts.aud)) then
        return "audience not allowed"
    end
    return nil
end

-- Header segments seen (base64url text -> decoded header): a client sends
-- the same header on every request. Bounded: emptied when full.
local HEADER_CACHE_MAX = 256
local header_cache, header_count = {}, 0

local function check_opts(opts, level)
    if type(opts) ~= "table" or type(opts.alg) ~= "table" or opts.alg[1] == nil then
        error("gw.jwt.verify: opts.alg (a list of allowed algs) is required", level)
    end
    if opts.key == nil and opts.jwks == nil then
        error("gw.jwt.verify: opts.key or opts.jwks is required", level)
    end
end

local function alg_allowed(opts, alg)
    local algs = opts.alg
    local i = 1
    while algs[i] ~= nil do
        if algs[i] == alg then return true end
        i = i + 1
    end
    return false
end

-- The token is s[a..z] (plugins pass the header value and the token's
-- bounds: no substring per request). cached: header segments are looked up
-- in header_cache (then the header returned is shared, and must not be
-- changed by the caller).
local function verify(s, opts, cached, a, z)
    if type(s) ~= "string" then return nil, "no token" end
    a, z = a or 1, z or #s
    local d1 = find(s, ".", a, true)
    if d1 and d1 > z then d1 = nil end
    local d2 = d1 and find(s, ".", d1 + 1, true)
    if d2 and d2 > z then d2 = nil end
    local d3 = d2 and find(s, ".", d2 + 1, true)
    if not d2 or (d3 and d3 <= z) then return nil, "malformed token" end
    local hseg = sub(s, a, d1 - 1)
    local header = nil
    if cached then header = header_cache[hseg] end
    -- the payload is decoded now (no string for its JSON text), but a bad
    -- JSON payload is still reported only after the signature check
    local claims, _, bad64 = json.decode_b64url(s, d1 + 1, d2 - 1)
    local praw = bad64 == nil
    local sig = b64r(s, d2 + 1, z)
    if header == nil then
        -- the same order of checks as ever: base64url of all three first
        local hraw = b64(hseg)
        if not hraw or not praw or not sig then return nil, "malformed token (base64url)" end
        header = json.decode(hraw)
        if type(header) ~= "table" or type(header.alg) ~= "string" then return nil, "malformed token header" end
        if cached then
            if header_count >= HEADER_CACHE_MAX then header_cache, header_count = {}, 0 end
            header_cache[hseg] = header
            header_count = header_count + 1
        end
    elseif not praw or not sig then
        return nil, "malformed token (base64url)"
    end
    local alg = header.alg
    local family = FAMILY[alg]
    if family == nil or not alg_allowed(opts, alg) then return nil, "alg " .. alg .. " not allowed" end
    if header.crit ~= nil then return nil, "unsupported crit header" end
    local last = d2 - 1 -- the signing input is s[a..last]
    local ok, why = false, "no key"
    if opts.key ~= nil then
        local key = opts.key
        if find(key, "-----BEGIN", 1, true) then
            local err
            key, err = pem_key(key)
            if key == nil then return nil, err end
        elseif family == "oct" then
            key = hmac_key(key)
        end
        ok, why = crypto.verify(alg, key, s, sig, a, last)
    else
        for _, j in ipairs(jwks_candidates(opts.jwks, header, family)) do
            local key, err = jwk_key(j)
            if key ~= nil then
                ok, why = crypto.verify(alg, key, s, sig, a, last)
                if ok then break end
            else
                why = err
            end
        end
    end
    if not ok then return nil, "invalid signature (" .. why .. ")" end
    if type(claims) ~= "table" then return nil, "malformed token payload" end
    local err = check_claims(claims, opts)
    if err then return nil, err end
    return claims, nil, header
end

function M.verify(token, opts)
    check_opts(opts, 3)
    return verify(token, opts, false)
end

-- The fast path's spec (jwt_hs.c) for opts with an HMAC secret, or nil
-- (PEM keys, JWK sets, iss/aud it does not take: the full verify only).
-- names: the claims whose values the caller wants (claims_to_headers).
local hs_out = ffi.new("struct mg_jwt_hs_out")

local function hs_spec(opts, names)
    local key = opts.key
    if opts.jwks ~= nil or type(key) ~= "string" or find(key, "-----BEGIN", 1, true) then return nil end
    local spec, lud = crypto.jwt_hs_spec(hmac_key(key), opts.alg, tonumber(opts.leeway) or 0,
        opts.iss, opts.aud, names)
    if spec == nil then return nil end
    return spec, ffi.cast("void *", lud)
end

-- The claims_to_headers values hs_verify read (jwt_auth's header_values).
local function hs_values(n, out)
    out = out or {}
    for i = 0, n - 1 do
        local c = hs_out.claim[i]
        local k = c.kind
        out[i + 1] = k == 1 and ffi.string(c.p, c.len) or k == 2 and tostring(c.num) or false
    end
    return out
end

-- verifier(opts) -> function(s [, a, z]) -> claims | nil, err, for the
-- token s (or s:sub(a, z)): opts checked once (plugins call it at init);
-- header segments are cached across calls. An HMAC token is checked in one
-- C call (jwt_hs.c) and its claims table is built on first read.
function M.verifier(opts)
    check_opts(opts, 3)
    local spec, spec_ptr = hs_spec(opts)
    return function(s, a, z)
        if spec ~= nil and type(s) == "string" then
            local i, j = a or 1, z or #s
            if i >= 1 and j <= #s and j >= i and
                JC.hs_verify(spec_ptr, ffi.cast("const char *", s) + (i - 1), j - i + 1, clock(), hs_out) == 1 then
                return lazy_claims(hs_out.payload, hs_out.payload_len)
            end
        end
        local claims, err = verify(s, opts, true, a, z)
        return claims, err
    end, spec
end

-- request_verifier(opts, header, bearer, cache) -> function(ctx) -> claims,
-- nil, memo | nil, err: the token from the request header `header` (with
-- `bearer`, the "Bearer <token>" form), read in place. With cache > 0, up to
-- that many verified tokens are remembered (jwt_cache.c): a token seen before
-- costs a hash and a compare plus the exp/nbf check, and returns the same
-- claims table as the first time (callers must not change it). memo is a
-- table per cached token for the caller's derived values (when the token is
-- not cached, a fresh one, or with no cache one the next call reuses). names:
-- claims whose values an HMAC fast path hands over as memo.h (strings, numbers
-- as tostring, false for others): jwt_auth's claims_to_headers. Keys never change for a verifier; a caller that
-- swaps keys (opts.jwks) calls flush().
function M.request_verifier(opts, header, bearer, size, names)
    check_opts(opts, 3)
    local spec, spec_ptr = hs_spec(opts, names)
    local nnames = names and #names or 0
    local cache, cache_ptr = nil, nil
    if size and size > 0 then
        local lud
        cache, lud = crypto.jwt_cache(size)
        cache_ptr = ffi.cast("void *", lud) -- a cdata: the JIT compiles the call (not a light userdata)
    end
    local entries = { [0] = cache, [-1] = spec } -- cache index + 1 -> {claims, memo}; [0], [-1] kept alive
    local leeway = tonumber(opts.leeway) or 0
    local once = { h = {} } -- memo of a token that is not cached (reused)
    local value = ffi.new("struct mg_lua_str[1]")
    local span = ffi.new("uint32_t[2]")
    local nan = 0 / 0
    bearer = bearer and 1 or 0
    local function check(ctx)
        if not ctxm.header_into(ctx, header, value) then return nil, "missing token" end
        local now = clock()
        -- the cache, then for a new token the HMAC fast path: one C call
        local rc = JC.lookup(cache_ptr, value, bearer, now, leeway, span, spec_ptr, hs_out)
        if rc >= 0 then
            local e = entries[rc + 1]
            return e[1], nil, e[2]
        end
        if rc == JC_VERIFIED then
            -- claims decoded on first read, the header values from C
            local claims = lazy_claims(hs_out.payload, hs_out.payload_len)
            if cache_ptr == nil then
                -- not cached: nothing outlives the request, no table per request
                if nnames > 0 then hs_values(nnames, once.h) end
                return claims, nil, once
            end
            local memo = { h = nnames > 0 and hs_values(nnames) or nil }
            local i = JC.insert(cache_ptr, value[0].p + span[0], span[1], hs_out.exp, hs_out.nbf)
            if i >= 0 then entries[i + 1] = { claims, memo } end
            return claims, nil, memo
        end
        if rc == JC_NO_TOKEN then return nil, "missing token" end
        if rc == JC_EXPIRED then return nil, "token expired" end
        if rc == JC_NOT_YET then return nil, "token not yet valid" end
        local s = ffi.string(value[0].p, value[0].len)
        local a = span[0] + 1
        local claims, err = verify(s, opts, true, a, a + span[1] - 1)
        if not claims then return nil, err end
        local memo = {}
        if cache_ptr then
            local i = JC.insert(cache_ptr, value[0].p + span[0], span[1],
                claims.exp or nan, claims.nbf or nan)
            if i >= 0 then entries[i + 1] = { claims, memo } end
        end
        return claims, nil, memo
    end
    local function flush()
        if cache then crypto.jwt_cache_flush(cache) end
    end
    local function stats()
        if not cache then return { hits = 0, misses = 0, entries = 0 } end
        local h, m, n = crypto.jwt_cache_stats(cache)
        return { hits = h, misses = m, entries = n }
    end
    return check, flush, stats
end

return M
