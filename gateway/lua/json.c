/*
 * gw.json: a strict RFC 8259 codec between JSON text and Lua values, in C on
 * the Lua C API (no vendored library). Lua C functions in a table
 * (package.loaded["moongate.native"].json):
 *   decode(s) -> value | nil, "message at byte N"
 *   encode(v) -> string | nil, message
 * JSON null decodes to json.null (a light userdata) so arrays keep their
 * positions; encoding writes json.null and nil as null. A table encodes as an
 * array when its keys are exactly 1..n (n > 0), else as an object (string and
 * number keys); an empty table is {}. Depth is limited to MAX_DEPTH both ways.
 * Runs inside the runner's protected calls: only out-of-memory raises.
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/ctx_ext.h"

#define MAX_DEPTH 64

static const char json_null_tag = 0;
#define JSON_NULL ((void *)&json_null_tag)

/* ------------------------------------------------------------------ decode */

struct dec {
    lua_State *L;
    const char *s, *p, *end;
    const char *err;
    int depth;
};

static void skip_ws(struct dec *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
        d->p++;
}

static int dfail(struct dec *d, const char *msg)
{
    if (!d->err)
        d->err = msg;
    return -1;
}

static int hex4(const char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void add_utf8(luaL_Buffer *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12);
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | cp >> 18);
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    luaL_addlstring(b, u, n);
}

/* At the opening quote; pushes the string. */
static int dec_string(struct dec *d)
{
    const char *start = ++d->p, *q = start;
    while (q < d->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20)
        q++;
    if (q < d->end && *q == '"') { /* the common case: nothing to unescape */
        lua_pushlstring(d->L, start, (size_t)(q - start));
        d->p = q + 1;
        return 0;
    }
    luaL_Buffer b;
    luaL_buffinit(d->L, &b);
    luaL_addlstring(&b, start, (size_t)(q - start));
    d->p = q;
    for (;;) {
        if (d->p >= d->end)
            goto bad_end;
        unsigned char c = (unsigned char)*d->p;
        if (c == '"') {
            d->p++;
            luaL_pushresult(&b);
            return 0;
        }
        if (c < 0x20)
            goto bad_ctl;
        if (c != '\\') {
            luaL_addchar(&b, (char)c);
            d->p++;
            continue;
        }
        if (d->end - d->p < 2)
            goto bad_end;
        char e = d->p[1];
        d->p += 2;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char repl[] = "\"\\/\b\f\n\r\t";
            luaL_addchar(&b, repl[simple - "\"\\/bfnrt"]);
            continue;
        }
        if (e != 'u')
            goto bad_esc;
        uint32_t cp, lo;
        if (d->end - d->p < 4 || hex4(d->p, &cp) < 0)
            goto bad_esc;
        d->p += 4;
        if (cp >= 0xd800 && cp <= 0xdbff) { /* a high surrogate needs its low half */
            if (d->end - d->p < 6 || d->p[0] != '\\' || d->p[1] != 'u' || hex4(d->p + 2, &lo) < 0 ||
                lo < 0xdc00 || lo > 0xdfff)
                goto bad_esc;
            d->p += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            goto bad_esc;
        }
        add_utf8(&b, cp);
    }
bad_end:
    luaL_pushresult(&b);
    lua_pop(d->L, 1);
    return dfail(d, "unterminated string");
bad_ctl:
    luaL_pushresult(&b);
    lua_pop(d->L, 1);
    return dfail(d, "control character in string");
bad_esc:
    luaL_pushresult(&b);
    lua_pop(d->L, 1);
    return dfail(d, "invalid escape in string");
}

static int dec_number(struct dec *d)
{
    const char *p = d->p;
    if (p < d->end && *p == '-')
        p++;
    if (p >= d->end)
        return dfail(d, "invalid number");
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < d->end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return dfail(d, "invalid number");
    }
    if (p < d->end && *p == '.') {
        const char *f = ++p;
        while (p < d->end && *p >= '0' && *p <= '9')
            p++;
        if (p == f)
            return dfail(d, "invalid number");
    }
    if (p < d->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < d->end && (*p == '+' || *p == '-'))
            p++;
        const char *x = p;
        while (p < d->end && *p >= '0' && *p <= '9')
            p++;
        if (p == x)
            return dfail(d, "invalid number");
    }
    size_t n = (size_t)(p - d->p);
    /* Integers of up to 15 digits (exp, nbf, iat) are exact as doubles:
     * no strtod, which costs ~700 instructions. */
    bool neg = *d->p == '-';
    if (n - neg <= 15 && !memchr(d->p, '.', n) && !memchr(d->p, 'e', n) && !memchr(d->p, 'E', n)) {
        int64_t v = 0;
        for (const char *q = d->p + neg; q < p; q++)
            v = v * 10 + (*q - '0');
        lua_pushnumber(d->L, neg ? (v ? -(lua_Number)v : -0.0) : (lua_Number)v);
        d->p = p;
        return 0;
    }
    char tmp[64];
    if (n >= sizeof(tmp))
        return dfail(d, "number too long");
    memcpy(tmp, d->p, n);
    tmp[n] = '\0';
    lua_pushnumber(d->L, strtod(tmp, NULL));
    d->p = p;
    return 0;
}

static int dec_value(struct dec *d);

static int dec_array(struct dec *d)
{
    lua_newtable(d->L);
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        return 0;
    }
    for (int i = 1;; i++) {
        if (dec_value(d) < 0)
            return -1;
        lua_rawseti(d->L, -2, i);
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == ']') {
            d->p++;
            return 0;
        }
        return dfail(d, "expected ',' or ']'");
    }
}

static int dec_object(struct dec *d)
{
    lua_createtable(d->L, 0, 8); /* JWT headers and claims: no rehash while filling */
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        return 0;
    }
    for (;;) {
        skip_ws(d);
        if (d->p >= d->end || *d->p != '"')
            return dfail(d, "expected a string key");
        if (dec_string(d) < 0)
            return -1;
        skip_ws(d);
        if (d->p >= d->end || *d->p != ':')
            return dfail(d, "expected ':'");
        d->p++;
        if (dec_value(d) < 0)
            return -1;
        lua_rawset(d->L, -3);
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == '}') {
            d->p++;
            return 0;
        }
        return dfail(d, "expected ',' or '}'");
    }
}

static int literal(struct dec *d, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return dfail(d, "unexpected character");
    d->p += n;
    return 0;
}

static int dec_value(struct dec *d)
{
    skip_ws(d);
    if (d->p >= d->end)
        return dfail(d, "unexpected end");
    if (!lua_checkstack(d->L, 4))
        return dfail(d, "nested too deeply");
    int rc;
    switch (*d->p) {
    case '{':
    case '[':
        if (++d->depth > MAX_DEPTH)
            return dfail(d, "nested too deeply");
        rc = *d->p == '{' ? dec_object(d) : dec_array(d);
        d->depth--;
        return rc;
    case '"':
        return dec_string(d);
    case 't':
        if (literal(d, "true") < 0)
            return -1;
        lua_pushboolean(d->L, 1);
        return 0;
    case 'f':
        if (literal(d, "false") < 0)
            return -1;
        lua_pushboolean(d->L, 0);
        return 0;
    case 'n':
        if (literal(d, "null") < 0)
            return -1;
        lua_pushlightuserdata(d->L, JSON_NULL);
        return 0;
    default:
        return dec_number(d);
    }
}

static int l_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    struct dec d = {L, s, s, s + n, NULL, 0};
    int top = lua_gettop(L);
    if (dec_value(&d) == 0) {
        skip_ws(&d);
        if (d.p == d.end)
            return 1;
        dfail(&d, "trailing characters");
    }
    lua_settop(L, top);
    lua_pushnil(L);
    lua_pushfstring(L, "invalid JSON: %s at byte %d", d.err, (int)(d.p - s) + 1);
    return 2;
}

/* decode_b64url(s, i, j) -> value | nil, err, "base64": the JSON text
 * base64url-encoded in s[i..j] (a JWT segment), without a Lua string for the
 * decoded text (per-request garbage is what the GC pays for). */
static int l_decode_b64url(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_Integer i = luaL_checkinteger(L, 2), j = luaL_checkinteger(L, 3);
    if (i < 1)
        i = 1;
    if (j > (lua_Integer)n)
        j = (lua_Integer)n;
    size_t len = j >= i ? (size_t)(j - i + 1) : 0;
    unsigned char small[768];
    size_t cap = len / 4 * 3 + 3;
    unsigned char *buf = cap <= sizeof(small) ? small : lua_newuserdata(L, cap);
    long got = mg_lua_b64url_decode(s + i - 1, len, buf);
    if (got < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "invalid base64");
        lua_pushliteral(L, "base64");
        return 3;
    }
    const char *t = (const char *)buf;
    struct dec d = {L, t, t, t + got, NULL, 0};
    int top = lua_gettop(L);
    if (dec_value(&d) == 0) {
        skip_ws(&d);
        if (d.p == d.end)
            return 1;
        dfail(&d, "trailing characters");
    }
    lua_settop(L, top);
    lua_pushnil(L);
    lua_pushfstring(L, "invalid JSON: %s at byte %d", d.err, (int)(d.p - t) + 1);
    return 2;
}

/* ------------------------------------------------------------------ encode */

/* The output grows in a Lua userdata kept at stack index 2 (replaced when it
 * grows): an out-of-memory error raised anywhere leaks nothing, and the Lua
 * stack stays free for table traversal (a luaL_Buffer would not allow that). */
struct enc {
    lua_State *L;
    char *p;
    size_t n, cap;
    const char *err;
};

static void reserve(struct enc *e, size_t k)
{
    if (e->n + k <= e->cap)
        return;
    size_t cap = e->cap * 2 > e->n + k ? e->cap * 2 : e->n + k + 256;
    char *np = lua_newuserdata(e->L, cap);
    if (e->n)
        memcpy(np, e->p, e->n);
    lua_replace(e->L, 2);
    e->p = np;
    e->cap = cap;
}

static void add(struct enc *e, const char *s, size_t n)
{
    reserve(e, n);
    memcpy(e->p + e->n, s, n);
    e->n += n;
}

static void addc(struct enc *e, char c)
{
    reserve(e, 1);
    e->p[e->n++] = c;
}

static void adds(struct enc *e, const char *s)
{
    add(e, s, strlen(s));
}

static void enc_string(struct enc *e, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    addc(e, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            addc(e, '\\');
            addc(e, (char)c);
        } else if (c < 0x20 || c == 0x7f) {
            const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
            if (named) {
                add(e, named, 2);
            } else {
                char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                add(e, u, 6);
            }
        } else {
            addc(e, (char)c);
        }
    }
    addc(e, '"');
}

/* Array length when the table's keys are exactly 1..n, else 0. */
static size_t array_len(lua_State *L, int t)
{
    size_t n = lua_objlen(L, t), count = 0;
    if (n == 0)
        return 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER || ++count > n) {
            lua_pop(L, 1);
            return 0;
        }
    }
    return count == n ? n : 0;
}

static int enc_value(struct enc *e, int idx, int depth);

static int enc_number(struct enc *e, lua_Number v)
{
    char num[40];
    if (isnan(v) || isinf(v)) {
        e->err = "cannot encode NaN or infinity";
        return -1;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0)
        snprintf(num, sizeof(num), "%.0f", v);
    else
        snprintf(num, sizeof(num), "%.17g", v);
    adds(e, num);
    return 0;
}

static int enc_table(struct enc *e, int t, int depth)
{
    lua_State *L = e->L;
    if (depth > MAX_DEPTH) {
        e->err = "nested too deeply (a cycle?)";
        return -1;
    }
    size_t n = array_len(L, t);
    if (n) {
        addc(e, '[');
        for (size_t i = 1; i <= n; i++) {
            if (i > 1)
                addc(e, ',');
            lua_rawgeti(L, t, (int)i);
            int rc = enc_value(e, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
            if (rc < 0)
                return -1;
        }
        addc(e, ']');
        return 0;
    }
    addc(e, '{');
    bool first = true;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int kt = lua_type(L, -2);
        if (kt != LUA_TSTRING && kt != LUA_TNUMBER) {
            lua_pop(L, 2);
            e->err = "object keys must be strings or numbers";
            return -1;
        }
        if (!first)
            addc(e, ',');
        first = false;
        lua_pushvalue(L, -2);
        size_t kl;
        const char *k = lua_tolstring(L, -1, &kl); /* a copy: the key itself stays intact */
        enc_string(e, k, kl);
        lua_pop(L, 1);
        addc(e, ':');
        int rc = enc_value(e, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
        if (rc < 0) {
            lua_pop(L, 1);
            return -1;
        }
    }
    addc(e, '}');
    return 0;
}

static int enc_value(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    if (!lua_checkstack(L, 6)) {
        e->err = "nested too deeply";
        return -1;
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        adds(e, "null");
        return 0;
    case LUA_TBOOLEAN:
        adds(e, lua_toboolean(L, idx) ? "true" : "false");
        return 0;
    case LUA_TNUMBER:
        return enc_number(e, lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        enc_string(e, s, n);
        return 0;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == JSON_NULL) {
            adds(e, "null");
            return 0;
        }
        break;
    case LUA_TTABLE:
        return enc_table(e, idx, depth);
    default:
        break;
    }
    e->err = "cannot encode this type (functions, userdata, threads)";
    return -1;
}

static int l_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_newuserdata(L, 256); /* index 2: the output, see struct enc */
    struct enc e = {L, lua_touserdata(L, 2), 0, 256, NULL};
    if (enc_value(&e, 1, 0) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, e.err);
        return 2;
    }
    lua_pushlstring(L, e.p, e.n);
    return 1;
}

void mg_lua_json_push(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, l_decode_b64url);
    lua_setfield(L, -2, "decode_b64url");
    lua_pushcfunction(L, l_encode);
    lua_setfield(L, -2, "encode");
    lua_pushlightuserdata(L, JSON_NULL);
    lua_setfield(L, -2, "null");
}
