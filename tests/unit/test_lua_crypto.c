/*
 * gw.json, gw.base64, gw.crypto and gw.jwt below the plugin VM: the native
 * modules (crypto.c, json.c) and lua/moongate/jwt.lua in a bare lua_State,
 * against published vectors (RFC 4648 base64, RFC 4231 HMAC, RFC 7515 A.1
 * HS256) and keys and signatures made by the openssl CLI (RS256, ES256,
 * ES384, EdDSA).
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lua/ctx-t.h"
#include "lua/ctx_ext.h"
#include "lua/jwt_cache.h"

static char dir[64];

static lua_State *open_state(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    mg_lua_ext_open(L, NULL);
    luaL_dostring(L, "package.path = '" MG_LUA_DIR "/?.lua'\n"
                     "native = require('moongate.native')\n"
                     "crypto, json = native.crypto, native.json\n"
                     "jwt = require('moongate.jwt')\n"
                     "jwt.set_clock(function() return NOW or os.time() end)\n");
    return L;
}

/* Runs a chunk that must not raise (its asserts are the test). */
static void run(lua_State *L, const char *src)
{
    if (luaL_dostring(L, src) != 0) {
        fail_msg("lua: %s", lua_tostring(L, -1));
    }
}

static void json_codec(void **state)
{
    (void)state;
    lua_State *L = open_state();
    run(L, "local t = json.decode(' {\"a\" : [1, 2.5e1, -0, null, true, false], \"b\": "
           "\"x\\\\u00e9\\\\ud83d\\\\ude00\\\\n\"} ')\n"
           "assert(t.a[1] == 1 and t.a[2] == 25 and t.a[4] == json.null and t.a[5] == true and "
           "t.a[6] == false)\n"
           "assert(t.b == 'x\\195\\169\\240\\159\\152\\128\\n')\n"
           "for _, bad in ipairs({'', '[1,]', '{\"a\":1,}', '01', '1.', '.5', '\"\\1\"', '[1] x', "
           "\"{'a':1}\",\n"
           "    '\"\\\\ud800\"', '\"\\\\x\"', 'nul', '{\"a\" 1}', '[' , string.rep('[', 100) .. "
           "string.rep(']', 100)}) do\n"
           "  local v, err = json.decode(bad)\n"
           "  assert(v == nil and err:find('invalid JSON'), bad)\n"
           "end\n"
           "local s = json.encode({1, 'two', {k = 'v'}, json.null, true})\n"
           "assert(s == '[1,\"two\",{\"k\":\"v\"},null,true]', s)\n"
           "assert(json.encode({}) == '{}' and json.encode('a\"\\\\\\n\\1') == "
           "'\"a\\\\\"\\\\\\\\\\\\n\\\\u0001\"')\n"
           "assert(json.encode(1.5) == '1.5' and json.encode(-3) == '-3')\n"
           "assert(json.encode(0/0) == nil and json.encode(print) == nil)\n"
           "local cyc = {}; cyc.self = cyc\n"
           "local v, err = json.encode(cyc); assert(v == nil and err:find('deeply'))\n"
           "local big = {}; for i = 1, 1000 do big['k' .. i] = {i, tostring(i)} end\n"
           "local back = json.decode(json.encode(big)); assert(back.k999[1] == 999 and back.k1[2] "
           "== '1')\n");
    lua_close(L);
}

static void base64_and_digests(void **state)
{
    (void)state;
    lua_State *L = open_state();
    run(L, "local v = {[''] = '', f = 'Zg==', fo = 'Zm8=', foo = 'Zm9v', foob = 'Zm9vYg==',\n"
           "           fooba = 'Zm9vYmE=', foobar = 'Zm9vYmFy'}\n"
           "for plain, enc in pairs(v) do\n"
           "  assert(crypto.b64encode(plain) == enc and crypto.b64decode(enc) == plain, plain)\n"
           "  assert(crypto.b64decode(enc:gsub('=', ''), true) == plain)\n"
           "end\n"
           "assert(crypto.b64encode('\\251\\255', true) == '-_8' and crypto.b64decode('-_8', true) "
           "== '\\251\\255')\n"
           "for _, bad in ipairs({'Zg', 'Zg=', 'Z===', 'Zh==', 'Zm9v\\n', '-_8='}) do\n"
           "  assert(crypto.b64decode(bad) == nil, bad)\n"
           "end\n"
           "local function hex(s) return (s:gsub('.', function(c) return string.format('%02x', "
           "c:byte()) end)) end\n"
           "assert(hex(crypto.digest('sha256', 'abc')) ==\n"
           "  'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')\n"
           "assert(hex(crypto.hmac('sha256', 'Jefe', 'what do ya want for nothing?')) ==\n"
           "  '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843')\n"
           "assert(#crypto.random_bytes(32) == 32 and crypto.random_bytes(32) ~= "
           "crypto.random_bytes(32))\n"
           "assert(crypto.random_bytes(5000) == nil)\n"
           "assert(crypto.equal('abc', 'abc') and not crypto.equal('abc', 'abd') and not "
           "crypto.equal('a', 'ab'))\n");
    lua_close(L);
}

/* A prepared HMAC key (hmac_key, used by verify and the jwt fast path)
 * against OpenSSL's one-shot HMAC(), for every message length around the
 * padding boundaries (55/56 and 64 bytes into a block: one or two final
 * blocks), keys shorter and longer than a block, and two keys at once. */
static void hmac_key_lengths(void **state)
{
    (void)state;
    lua_State *L = open_state();
    run(L,
        "local algs = {HS256 = 'sha256', HS384 = 'sha384', HS512 = 'sha512'}\n"
        "local keys = {'k', string.rep('K', 64), string.rep('q', 65), string.rep('z', 129),\n"
        "              string.rep('w', 200)}\n"
        "local prepared = {}\n"
        "for i, k in ipairs(keys) do prepared[i] = crypto.hmac_key(k) end\n"
        "local msg = {}\n"
        "for n = 0, 300 do msg[n] = string.rep('m', n):gsub('()', function(i) return "
        "string.char((i * 7 + n) % 256) end):sub(1, n) end\n"
        "for alg, md in pairs(algs) do\n"
        "  for i, k in ipairs(keys) do\n"
        "    for n = 0, 300 do\n"
        "      local sig = crypto.hmac(md, k, msg[n])\n"
        "      assert(crypto.verify(alg, prepared[i], msg[n], sig), alg .. ' key ' .. i .. ' n ' "
        ".. n)\n"
        "      -- the other keys' states never verify it\n"
        "      local j = i % #keys + 1\n"
        "      assert(not crypto.verify(alg, prepared[j], msg[n], sig), alg .. ' wrong key ' .. "
        "j)\n"
        "      if n > 0 then\n"
        "        local flipped = msg[n]:sub(1, -2) .. string.char((msg[n]:byte(-1) + 1) % 256)\n"
        "        assert(not crypto.verify(alg, prepared[i], flipped, sig))\n"
        "      end\n"
        "    end\n"
        "  end\n"
        "end\n");
    lua_close(L);
}

/* The base64url decoder of JWT segments (mg_lua_b64url_decode): its
 * 16-character SSSE3 chunks and scalar quads and tail agree with a plain
 * encoder on every length 0..200 (every 6-bit value appears), with and
 * without padding; every byte outside the URL alphabet is refused at every
 * position (a chunk's first and last character, the tail). */
static void b64url_decoder(void **state)
{
    (void)state;
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char raw[200], got[200];
    char enc[280];
    bool in_abc[256] = {0};
    for (int i = 0; i < 64; i++)
        in_abc[(unsigned char)abc[i]] = true;
    srand(7);
    for (size_t n = 0; n <= sizeof(raw); n++) {
        for (size_t i = 0; i < n; i++)
            raw[i] = (unsigned char)(i < 64 ? i * 4 + (n & 3) : (size_t)rand());
        size_t e = 0;
        for (size_t i = 0; i < n; i += 3) {
            uint32_t v = (uint32_t)raw[i] << 16 | (i + 1 < n ? (uint32_t)raw[i + 1] << 8 : 0) |
                         (i + 2 < n ? raw[i + 2] : 0);
            size_t k = n - i >= 3 ? 4 : n - i + 1;
            for (size_t j = 0; j < k; j++)
                enc[e++] = abc[(v >> (18 - 6 * j)) & 63];
        }
        assert_int_equal(mg_lua_b64url_decode(enc, e, got), (long)n);
        assert_memory_equal(got, raw, n);
        size_t padded = e;
        while (padded % 4)
            enc[padded++] = '=';
        assert_int_equal(mg_lua_b64url_decode(enc, padded, got), (long)n);
        assert_memory_equal(got, raw, n);
        for (size_t pos = 0; pos < e; pos++) {
            char keep = enc[pos];
            for (int c = 0; c < 256; c++) {
                if (in_abc[c] || (c == '=' && pos + 2 >= e))
                    continue;
                enc[pos] = (char)c;
                if (mg_lua_b64url_decode(enc, e, got) != -1)
                    fail_msg("n %zu: byte %d at %zu accepted", n, c, pos);
            }
            enc[pos] = keep;
        }
    }
}

/* RFC 7515 appendix A.1: HS256, with exp in 2011. */
static void jwt_hs256_vector(void **state)
{
    (void)state;
    lua_State *L = open_state();
    run(L,
        "local key = "
        "crypto.b64decode('AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-"
        "1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow', true)\n"
        "local tok = "
        "'eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cn"
        "VlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'\n"
        "NOW = 1300819000\n"
        "local c, err = jwt.verify(tok, {alg = {'HS256'}, key = key, iss = 'joe'})\n"
        "assert(c and c.iss == 'joe' and c['http://example.com/is_root'] == true, err)\n"
        "NOW = 1300819380 + 31\n"
        "c, err = jwt.verify(tok, {alg = {'HS256'}, key = key, leeway = 30})\n"
        "assert(c == nil and err == 'token expired', err)\n"
        "NOW = 1300819000\n"
        "assert(select(2, jwt.verify(tok, {alg = {'HS256'}, key = key, iss = 'ann'})) == 'issuer "
        "not allowed')\n"
        "assert(select(2, jwt.verify(tok, {alg = {'HS256'}, key = key, aud = 'x'})) == 'audience "
        "not allowed')\n"
        "assert(select(2, jwt.verify(tok, {alg = {'RS256'}, key = key})):find('not allowed'))\n"
        "assert(select(2, jwt.verify(tok, {alg = {'HS256'}, key = 'other'})):find('signature'))\n"
        "assert(select(2, jwt.verify(tok:sub(1, -2) .. 'Y', {alg = {'HS256'}, key = "
        "key})):find('signature'))\n"
        "local none = crypto.b64encode('{\"alg\":\"none\"}', true) .. '.' .. "
        "crypto.b64encode('{}', true) .. '.'\n"
        "assert(select(2, jwt.verify(none, {alg = {'HS256', 'none'}, key = key})):find('not "
        "allowed'))\n"
        "assert(select(2, jwt.verify('a.b', {alg = {'HS256'}, key = key})) == 'malformed token')\n"
        "assert(select(2, jwt.verify('a.b.c.d', {alg = {'HS256'}, key = key})) == 'malformed "
        "token')\n"
        "assert(not pcall(jwt.verify, tok, {key = key}))\n"
        "local jwks = {keys = {{kty = 'oct', k = "
        "'AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow'}}"
        "}\n"
        "assert(jwt.verify(tok, {alg = {'HS256'}, jwks = jwks}))\n"
        "-- prepared HMAC keys agree with HMAC() for every size of key\n"
        "for _, alg in ipairs({'HS256', 'HS384', 'HS512'}) do\n"
        "  local md = 'sha' .. alg:sub(3)\n"
        "  for _, klen in ipairs({0, 5, 64, 100, 128, 200}) do\n"
        "    local key, si = string.rep('k', klen), string.rep('m', 300)\n"
        "    local sig = crypto.hmac(md, key, si)\n"
        "    assert(crypto.verify(alg, crypto.hmac_key(key), si, sig), alg .. klen)\n"
        "    assert(crypto.verify(alg, key, si, sig), alg .. klen)\n"
        "    assert(not crypto.verify(alg, crypto.hmac_key(key .. 'x'), si, sig), alg .. klen)\n"
        "  end\n"
        "end\n");
    lua_close(L);
}

/* The per-request path of jwt_auth: gw.jwt.verifier with the token's bounds
 * in a header value, the cached header segments, ranges in b64decode and
 * verify, JSON integers parsed without strtod. */
static void jwt_verifier_ranges(void **state)
{
    (void)state;
    lua_State *L = open_state();
    run(L,
        "local t = json.decode('[0, -0, 7, -12, 123456789012345, 1234567890123456789, 1.5, 2e3]')\n"
        "assert(t[1] == 0 and 1 / t[2] < 0 and t[3] == 7 and t[4] == -12)\n"
        "assert(t[5] == 123456789012345 and t[6] == 1234567890123456789 and t[7] == 1.5 and "
        "t[8] == 2000)\n"
        "assert(crypto.b64decode('xxaGVsbG8yy', true, 3, 9) == 'hello')\n"
        "assert(crypto.b64decode('xxaGVsbG8', true, 3, 100) == 'hello')\n"
        "assert(crypto.b64decode('aGVsbG8', true, 5, 4) == '')\n"
        "assert(crypto.b64decode('xxaGVsbG', true, 3, 8) == nil)\n"
        "local sig = crypto.hmac('sha256', 'k', 'data')\n"
        "assert(crypto.verify('HS256', crypto.hmac_key('k'), '__data__', sig, 3, 6))\n"
        "assert(not crypto.verify('HS256', crypto.hmac_key('k'), '__data__', sig, 2, 6))\n"
        "assert(not crypto.verify('HS256', crypto.hmac_key('k'), 'data', sig, 1, 5))\n"
        "local b64 = function(s) return crypto.b64encode(s, true) end\n"
        "local function tok(claims, key, header)\n"
        "  local si = b64(header or '{\"alg\":\"HS256\",\"typ\":\"JWT\"}') .. '.' .. "
        "b64(json.encode(claims))\n"
        "  return si .. '.' .. b64(crypto.hmac('sha256', key or 'k', si))\n"
        "end\n"
        "NOW = 1000\n"
        "local v = jwt.verifier({alg = {'HS256'}, key = 'k', iss = {'a', 'b'}, aud = 'api'})\n"
        "local good = tok({iss = 'b', aud = {'x', 'api'}, exp = 2000, sub = 'u'})\n"
        "local value = 'Bearer ' .. good .. '  '\n"
        "for _ = 1, 3 do\n"
        "  local c, err = v(value, 8, 7 + #good)\n"
        "  assert(c and c.sub == 'u', err)\n"
        "  assert(v(good).sub == 'u')\n"
        "end\n"
        "-- the same (cached) header with a bad signature, payload or claims still fails\n"
        "assert(select(2, v(tok({iss = 'b', aud = 'api'}, 'other'))):find('signature'))\n"
        "assert(select(2, v(good:sub(1, -2) .. 'A')):find('signature'))\n"
        "assert(select(2, v(tok({iss = 'c', aud = 'api'}))) == 'issuer not allowed')\n"
        "assert(select(2, v(tok({iss = 'a', aud = {'x'}}))) == 'audience not allowed')\n"
        "assert(select(2, v(tok({iss = 'a', aud = 'api', exp = 10}))) == 'token expired')\n"
        "local d1 = good:find('.', 1, true)\n"
        "assert(select(2, v(good:sub(1, d1) .. '!' .. good:sub(d1 + 2))) == "
        "'malformed token (base64url)')\n"
        "assert(select(2, v(value, 8, 7 + d1)) == 'malformed token')\n"
        "assert(select(2, v(good .. '.x', 1, #good + 2)) == 'malformed token')\n"
        "assert(v(good .. '.x', 1, #good).sub == 'u')\n"
        "assert(select(2, v(tok({}, 'k', '{\"alg\":\"HS384\"}'))) == 'alg HS384 not allowed')\n"
        "assert(select(2, v(tok({}, 'k', '{\"alg\":\"HS256\",\"crit\":[\"x\"]}'))) == "
        "'unsupported crit header')\n"
        "assert(select(2, v(tok({}, 'k', '[1]'))) == 'malformed token header')\n"
        "local function raw(payload, key)\n"
        "  local si = b64('{\"alg\":\"HS256\"}') .. '.' .. b64(payload)\n"
        "  return si .. '.' .. b64(crypto.hmac('sha256', key or 'k', si))\n"
        "end\n"
        "assert(select(2, v(raw('{\"iss\":'))) == 'malformed token payload')\n"
        "assert(select(2, v(raw('123'))) == 'malformed token payload')\n"
        "assert(select(2, v(raw('{\"iss\":', 'x'))):find('signature'))\n"
        "assert(json.decode_b64url('..' .. b64('{\"a\":[1]}'), 3, 100).a[1] == 1)\n"
        "assert(select(3, json.decode_b64url('e30', 1, 2)) == 'base64')\n"
        "assert(select(2, json.decode_b64url(b64(string.rep(' ', 2000) .. '{}x'), 1, 9999)):find("
        "'trailing'))\n"
        "assert(not pcall(jwt.verifier, {key = 'k'}))\n"
        "-- many distinct headers: the cache stays bounded and correct\n"
        "for i = 1, 600 do\n"
        "  local h = '{\"alg\":\"HS256\",\"kid\":\"' .. i .. '\"}'\n"
        "  assert(v(tok({iss = 'a', aud = 'api'}, 'k', h)))\n"
        "end\n"
        "assert(v(good).sub == 'u')\n");
    lua_close(L);
}

/* The one-call HMAC path (jwt_hs.c) against the full verify: cases in
 * tests/unit/lua/jwt_hs_cases.lua. */
static void jwt_hs_fast_path(void **state)
{
    (void)state;
    lua_State *L = open_state();
    if (luaL_dofile(L, MG_LUA_DIR "/../tests/unit/lua/jwt_hs_cases.lua") != 0)
        fail_msg("lua: %s", lua_tostring(L, -1));
    lua_close(L);
}

static void sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

/* Public-key algs: keys by the openssl CLI, the signing input signed by it. */
static void jwt_public_keys(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/mg-jwt-XXXXXX");
    assert_non_null(mkdtemp(dir));
    sh("cd %s && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key "
       "2>/dev/null"
       " && openssl pkey -in rsa.key -pubout -out rsa.pub"
       " && openssl ecparam -name prime256v1 -genkey -noout -out p256.key"
       " && openssl pkey -in p256.key -pubout -out p256.pub"
       " && openssl ecparam -name secp384r1 -genkey -noout -out p384.key"
       " && openssl pkey -in p384.key -pubout -out p384.pub"
       " && openssl genpkey -algorithm ED25519 -out ed.key && openssl pkey -in ed.key -pubout -out "
       "ed.pub",
       dir);
    lua_State *L = open_state();
    lua_pushstring(L, dir);
    lua_setglobal(L, "DIR");
    run(L,
        "local function rd(n) local f = assert(io.open(DIR .. '/' .. n, 'rb')); local s = "
        "f:read('*a'); f:close(); return s end\n"
        "local function wr(n, s) local f = assert(io.open(DIR .. '/' .. n, 'wb')); f:write(s); "
        "f:close() end\n"
        "local function b64(s) return crypto.b64encode(s, true) end\n"
        "local function der_rs(der, n)\n"
        "  local i, out = (der:byte(2) < 128) and 3 or 4, ''\n"
        "  for _ = 1, 2 do\n"
        "    local len = der:byte(i + 1); local v = der:sub(i + 2, i + 1 + len):gsub('^%z+', '')\n"
        "    out = out .. string.rep('\\0', n - #v) .. v; i = i + 2 + len\n"
        "  end\n"
        "  return out\n"
        "end\n"
        "local function token(alg, keyfile, claims, n)\n"
        "  local si = b64(json.encode({alg = alg})) .. '.' .. b64(json.encode(claims))\n"
        "  wr('si', si)\n"
        "  local md = alg:sub(3) == '384' and '-sha384' or '-sha256'\n"
        "  if alg == 'EdDSA' then\n"
        "    assert(os.execute('openssl pkeyutl -sign -rawin -inkey ' .. DIR .. '/' .. keyfile .. "
        "' -in ' .. DIR .. '/si -out ' .. DIR .. '/sig') == 0)\n"
        "  else\n"
        "    assert(os.execute('openssl dgst ' .. md .. ' -sign ' .. DIR .. '/' .. keyfile .. ' "
        "-out ' .. DIR .. '/sig ' .. DIR .. '/si') == 0)\n"
        "  end\n"
        "  local sig = rd('sig')\n"
        "  if n then sig = der_rs(sig, n) end\n"
        "  return si .. '.' .. b64(sig)\n"
        "end\n"
        "local claims = {sub = 'u1', exp = os.time() + 60}\n"
        "local cases = {{'RS256', 'rsa', nil}, {'ES256', 'p256', 32}, {'ES384', 'p384', 48}, "
        "{'EdDSA', 'ed', nil}}\n"
        "for _, c in ipairs(cases) do\n"
        "  local alg, k, n = c[1], c[2], c[3]\n"
        "  local tok = token(alg, k .. '.key', claims, n)\n"
        "  local pub = rd(k .. '.pub')\n"
        "  local got, err = jwt.verify(tok, {alg = {alg}, key = pub})\n"
        "  assert(got and got.sub == 'u1', alg .. ': ' .. tostring(err))\n"
        "  local h, p, s = tok:match('^([^.]+)%.([^.]+)%.([^.]+)$')\n"
        "  local forged = h .. '.' .. b64(json.encode({sub = 'root', exp = claims.exp})) .. '.' .. "
        "s\n"
        "  assert(select(2, jwt.verify(forged, {alg = {alg}, key = pub})):find('signature'), alg)\n"
        "  -- alg confusion: HS256 signed with the PEM text as the secret\n"
        "  local hs_si = b64(json.encode({alg = 'HS256'})) .. '.' .. p\n"
        "  local hs = hs_si .. '.' .. b64(crypto.hmac('sha256', pub, hs_si))\n"
        "  assert(select(2, jwt.verify(hs, {alg = {alg, 'HS256'}, key = pub})):find('signature'), "
        "alg)\n"
        "end\n"
        "-- an ES256 token checked with the P-384 key, and an RS256 one with an EC key\n"
        "local es = token('ES256', 'p256.key', claims, 32)\n"
        "assert(jwt.verify(es, {alg = {'ES256'}, key = rd('p384.pub')}) == nil)\n"
        "assert(jwt.verify(token('RS256', 'rsa.key', claims), {alg = {'RS256'}, key = "
        "rd('p256.pub')}) == nil)\n"
        "assert(select(2, jwt.verify(es, {alg = {'ES256'}, key = '-----BEGIN PUBLIC "
        "KEY-----\\nxx\\n-----END PUBLIC KEY-----\\n'})):find('invalid key'))\n");
    lua_close(L);
    sh("rm -rf %s", dir);
}

static int cache_get(struct mg_jwt_cache *c, const char *value, int bearer, double now,
                     uint32_t *span)
{
    struct mg_lua_str v = {value, strlen(value)};
    return mg_jwt_cache_api.lookup(c, &v, bearer, now, 30, span, NULL, NULL);
}

static int cache_put(struct mg_jwt_cache *c, const char *tok, double exp, double nbf)
{
    return mg_jwt_cache_api.insert(c, tok, strlen(tok), exp, nbf);
}

/* The verified-token cache (jwt_cache.c): token bounds, hits on all bytes
 * only, exp and nbf re-checked on every hit (leeway 30), LRU eviction within
 * a set, flush. */
static void jwt_token_cache(void **state)
{
    (void)state;
    uint32_t span[2];
    /* bounds, with no cache at all */
    assert_int_equal(cache_get(NULL, "Bearer  a.b.c  ", 1, 0, span), MG_JWT_CACHE_MISS);
    assert_int_equal(span[0], 8);
    assert_int_equal(span[1], 5);
    assert_int_equal(cache_get(NULL, "bEaReR\ta.b.c", 1, 0, span), MG_JWT_CACHE_MISS);
    assert_int_equal(span[0], 7);
    for (const char **bad = (const char *[]){"", "Bearer", "Bearer   ", "Basic a.b.c",
                                             "Bearera.b.c", "Bearer a.b c", NULL};
         *bad; bad++)
        assert_int_equal(cache_get(NULL, *bad, 1, 0, span), MG_JWT_CACHE_NO_TOKEN);
    assert_int_equal(cache_get(NULL, "a b", 0, 0, span), MG_JWT_CACHE_MISS); /* not bearer */
    assert_int_equal(span[1], 3);
    assert_int_equal(cache_get(NULL, "", 0, 0, span), MG_JWT_CACHE_NO_TOKEN);

    struct mg_jwt_cache *c = mg_jwt_cache_new(4); /* one set of 4 ways */
    assert_non_null(c);
    assert_int_equal(cache_get(c, "Bearer tok1", 1, 1000, span), MG_JWT_CACHE_MISS);
    int i1 = cache_put(c, "tok1", 2000, NAN);
    assert_true(i1 >= 0);
    assert_int_equal(cache_get(c, "Bearer tok1 ", 1, 1000, span), i1);
    assert_int_equal(cache_get(c, "Bearer tok2", 1, 1000, span), MG_JWT_CACHE_MISS);
    assert_int_equal(cache_get(c, "Bearer tok12", 1, 1000, span), MG_JWT_CACHE_MISS);
    /* exp: valid up to exp + leeway, then refused and forgotten */
    assert_int_equal(cache_get(c, "Bearer tok1", 1, 2030, span), i1);
    assert_int_equal(cache_get(c, "Bearer tok1", 1, 2031, span), MG_JWT_CACHE_EXPIRED);
    assert_int_equal(cache_get(c, "Bearer tok1", 1, 1000, span), MG_JWT_CACHE_MISS);
    /* nbf: refused before nbf - leeway, kept, then served */
    int i2 = cache_put(c, "tok2", NAN, 5000);
    assert_int_equal(cache_get(c, "Bearer tok2", 1, 4969, span), MG_JWT_CACHE_NOT_YET);
    assert_int_equal(cache_get(c, "Bearer tok2", 1, 4970, span), i2);
    assert_int_equal(cache_get(c, "Bearer tok2", 1, 1e12, span), i2); /* no exp */
    /* LRU: tok2 used last, so a fifth token evicts the oldest other one */
    int i3 = cache_put(c, "tok3", NAN, NAN), i4 = cache_put(c, "tok4", NAN, NAN);
    int i5 = cache_put(c, "tok5", NAN, NAN);
    assert_true(i3 >= 0 && i4 >= 0 && i5 >= 0);
    assert_int_equal(cache_get(c, "Bearer tok2", 1, 5000, span), i2);
    assert_int_equal(cache_get(c, "Bearer tok4", 1, 5000, span), i4);
    assert_int_equal(cache_get(c, "Bearer tok5", 1, 5000, span), i5);
    int i6 = cache_put(c, "tok6", NAN, NAN);
    assert_int_equal(i6, i3); /* tok3 was the least recently used */
    assert_int_equal(cache_get(c, "Bearer tok3", 1, 5000, span), MG_JWT_CACHE_MISS);
    assert_int_equal(cache_get(c, "Bearer tok6", 1, 5000, span), i6);
    /* the same token again replaces its own entry */
    assert_int_equal(cache_put(c, "tok6", 10, NAN), i6);
    assert_int_equal(cache_get(c, "Bearer tok6", 1, 100, span), MG_JWT_CACHE_EXPIRED);
    /* too long: verified every time, never stored */
    char *big = malloc(MG_JWT_CACHE_MAX_TOKEN + 2);
    memset(big, 'x', MG_JWT_CACHE_MAX_TOKEN + 1);
    big[MG_JWT_CACHE_MAX_TOKEN + 1] = 0;
    assert_int_equal(cache_put(c, big, NAN, NAN), -1);
    assert_int_equal(cache_get(c, big, 0, 0, span), MG_JWT_CACHE_MISS);
    free(big);
    mg_jwt_cache_flush(c);
    assert_int_equal(cache_get(c, "Bearer tok2", 1, 0, span), MG_JWT_CACHE_MISS);
    mg_jwt_cache_free(c);
    /* a bigger cache spreads tokens over its 256 sets (one set would keep 4) */
    c = mg_jwt_cache_new(1000);
    char tok[32];
    int idx[50];
    for (int i = 0; i < 50; i++) {
        snprintf(tok, sizeof(tok), "a.b.sig%d", i);
        idx[i] = cache_put(c, tok, NAN, NAN);
    }
    int found = 0;
    for (int i = 0; i < 50; i++) {
        snprintf(tok, sizeof(tok), "a.b.sig%d", i);
        found += cache_get(c, tok, 0, 0, span) == idx[i];
    }
    assert_true(found >= 48); /* 4-way sets of a random hash: not all in one set */
    mg_jwt_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_codec),       cmocka_unit_test(base64_and_digests),
        cmocka_unit_test(hmac_key_lengths), cmocka_unit_test(b64url_decoder),
        cmocka_unit_test(jwt_hs256_vector), cmocka_unit_test(jwt_verifier_ranges),
        cmocka_unit_test(jwt_hs_fast_path), cmocka_unit_test(jwt_public_keys),
        cmocka_unit_test(jwt_token_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
