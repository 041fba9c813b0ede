-- test_lua_crypto's jwt_hs_fast_path: gw.jwt.verifier's one-call HMAC path
-- (gateway/lua/jwt_hs.c) against the full verify (jwt.verify), token by token:
-- the same claims or the same reason, and the fast path taken where it should
-- be (its claims table is lazy until a field is read).
local b64 = function(s) return crypto.b64encode(s, true) end
local MD = { HS256 = "sha256", HS384 = "sha384", HS512 = "sha512" }

local function raw(payload, header, key)
    header = header or '{"alg":"HS256","typ":"JWT"}'
    local alg = header:match('"alg":"(HS%d+)"') or "HS256"
    local si = b64(header) .. "." .. b64(payload)
    return si .. "." .. b64(crypto.hmac(MD[alg], key or "k", si))
end

local function same(a, b)
    if type(a) ~= "table" or type(b) ~= "table" then return a == b end
    for k, v in pairs(a) do if not same(v, b[k]) then return false end end
    for k, v in pairs(b) do if not same(v, a[k]) then return false end end
    return true
end

NOW = 1000
local opts = { alg = { "HS256", "HS384" }, key = "k", iss = { "a", "b" }, aud = "api", leeway = 5 }
local v, spec = jwt.verifier(opts)
assert(spec, "an HMAC secret gets the fast path")

local base = '"iss":"a","aud":"api"'
-- payload, header, key, fast (true: the fast path must answer), reason
local cases = {
    { '{' .. base .. ',"exp":2000,"sub":"u"}', nil, nil, true },
    { ' { "iss" : "b" , "aud" : [ "x" , "api" ] , "exp" : 996 } ', nil, nil, true },
    { '{' .. base .. ',"nbf":1004,"n":-0,"f":1.5e3,"big":12345678901234567890}', nil, nil, true },
    { '{' .. base .. ',"x":{"y":[1,2,{"z":null}],"e":"\\u00e9\\n"},"t":true}', nil, nil, true },
    { '{' .. base .. ',"sub":"caf\195\169"}', nil, nil, true },
    { '{' .. base .. ',"exp":1.5e3}', '{"alg":"HS384"}', nil, true },
    { '{' .. base .. ',"exp":999999999999999,"nbf":-5,"z":0}', nil, nil, true }, -- 15 digits: no strtod
    { '{' .. base .. ',"exp":1234567890123456,"iat":2000.0e0}', nil, nil, true }, -- 16: strtod
    { '{' .. base .. ',"exp":2000}', '{"typ":"JWT","alg":"HS256","kid":{"a":[1]}}', nil, true },
    -- valid, but left to the full verify
    { '{"iss":"\\u0061","aud":"api"}', nil, nil, false },
    { '{"iss":"a","aud":["x","ap\\u0069"]}', nil, nil, false },
    { '{' .. base .. ',"exp":10,"exp":2000}', nil, nil, false },
    { '{' .. base .. '}', '{"alg":"HS\\u0032\\u00356"}', nil, false },
    { '{' .. base .. ',"exp":2000}', '{"alg":"HS256","alg":"HS256"}', nil, false },
    -- refused, with the full verify's reason
    { '{' .. base .. ',"exp":994}', nil, nil, false, "token expired" },
    { '{' .. base .. ',"nbf":1006}', nil, nil, false, "token not yet valid" },
    { '{' .. base .. ',"exp":"2000"}', nil, nil, false, "invalid exp claim" },
    { '{' .. base .. ',"\\u0065xp":10}', nil, nil, false, "token expired" },
    { '{' .. base .. ',"exp":null}', nil, nil, false, "invalid exp claim" },
    { '{"iss":"c","aud":"api"}', nil, nil, false, "issuer not allowed" },
    { '{"aud":"api"}', nil, nil, false, "issuer not allowed" },
    { '{"iss":["a"],"aud":"api"}', nil, nil, false, nil },
    { '{"iss":"a","aud":[]}', nil, nil, false, "audience not allowed" },
    { '{"iss":"a"}', nil, nil, false, "audience not allowed" },
    { '{"iss":"a","aud":"api"} x', nil, nil, false, "malformed token payload" },
    { '123', nil, nil, false, "malformed token payload" },
    { '[1]', nil, nil, false, "issuer not allowed" },
    { '{"iss":"a","aud":"api","s":"\1"}', nil, nil, false, "malformed token payload" },
    { '{"iss":"a","aud":"api","n":01}', nil, nil, false, "malformed token payload" },
    { '{"iss":"a","aud":"api","d":' .. string.rep("[", 70) .. string.rep("]", 70) .. '}', nil, nil, false,
        "malformed token payload" },
    { '{' .. base .. '}', '{"alg":"HS256","crit":["x"]}', nil, false, "unsupported crit header" },
    { '{' .. base .. '}', '{"alg":"HS512"}', nil, false, "alg HS512 not allowed" },
    { '{' .. base .. '}', '{"alg":"RS256"}', nil, false, "alg RS256 not allowed" },
    { '{' .. base .. '}', nil, "other", false, "invalid signature (signature mismatch)" },
    { '{' .. base .. '}', '[1]', nil, false, "malformed token header" },
}
for i, c in ipairs(cases) do
    local t = raw(c[1], c[2], c[3])
    local got, err = v(t)
    local want, werr = jwt.verify(t, opts)
    assert((got == nil) == (want == nil) and err == werr,
        ("case %d: %s / %s"):format(i, tostring(err), tostring(werr)))
    if c[5] ~= nil then assert(err == c[5], ("case %d: %s"):format(i, tostring(err))) end
    if got then
        local lazy = getmetatable(got) ~= nil
        assert(lazy == c[4], ("case %d: fast path %s"):format(i, tostring(lazy)))
        assert(same(jwt.claims(got), want), "case " .. i .. ": claims differ")
    end
end

-- the lazy table: a field read builds it, then pairs sees every claim
local got = v(raw('{' .. base .. ',"sub":"u","n":3}'))
assert(getmetatable(got) ~= nil and got.sub == "u" and getmetatable(got) == nil)
local n = 0
for _ in pairs(got) do n = n + 1 end
assert(n == 4 and got.n == 3 and got.iss == "a")

-- bounds within a header value; a bad range falls back, a bad token too
local good = raw('{' .. base .. ',"exp":2000,"sub":"u"}')
local value = "Bearer " .. good .. "  "
assert(v(value, 8, 7 + #good).sub == "u")
assert(not v(value, 8, 7 + #good - 1))
assert(select(2, v(good .. ".x")) == "malformed token")
assert(select(2, v("a.b")) == "malformed token")
assert(select(2, v("")) == "malformed token")
-- a token over 8 KiB: the full verify only
local long = raw('{' .. base .. ',"pad":"' .. string.rep("x", 9000) .. '"}')
local c = v(long)
assert(c and getmetatable(c) == nil and #c.pad == 9000)

-- no fast path: a PEM key, a JWK set, an iss that is not strings, > 8 names
assert(select(2, jwt.verifier({ alg = { "HS256" }, key = "k", iss = { 1 } })) == nil)
assert(select(2, jwt.verifier({ alg = { "RS256" }, key = "k" })) == nil)
assert(select(2, jwt.verifier({ alg = { "HS256" }, jwks = { keys = {} } })) == nil)

-- the spec holds its own copies of iss/aud and its key (collected tables)
local v2 = jwt.verifier({ alg = { "HS512" }, key = "k2", iss = "a", aud = { "api", "z" } })
collectgarbage()
collectgarbage()
local t2 = raw('{"iss":"a","aud":"z"}', '{"alg":"HS512"}', "k2")
got = v2(t2)
assert(got and getmetatable(got) ~= nil and got.aud == "z")

-- mg_lua_b64url_decode (four shifted tables per quad): every length and tail,
-- and a character outside the URL alphabet at every place of a quad
math.randomseed(7)
for len = 0, 40 do
    local cs = {}
    for i = 1, len do cs[i] = string.char(math.random(0x23, 0x5b)) end
    local text = '"' .. table.concat(cs) .. '"'
    local enc = b64(text)
    assert(json.decode_b64url(enc, 1, #enc) == table.concat(cs), "length " .. len)
    for i = 1, math.min(#enc, 8) do
        local bad = enc:sub(1, i - 1) .. "+" .. enc:sub(i + 1)
        assert(select(3, json.decode_b64url(bad, 1, #bad)) == "base64", "bad at " .. i)
    end
end
local seg = b64('{"iss":"a","aud":"api"}')
local last = seg:sub(-1)
local odd = seg:sub(1, -2) .. (last == "Q" and "R" or "Q") -- nonzero trailing bits or another byte
local got2, err2 = v(b64('{"alg":"HS256"}') .. "." .. odd .. "." .. "x")
assert(not got2 and err2)
