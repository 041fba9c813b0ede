/*
 * gw.jwt's HMAC fast path (jwt_hs.h): the whole HS256/384/512 verify of a
 * token not seen before in one C call. Before it, a miss cost ~30k
 * instructions under callgrind: the HMAC (~9.5k, scalar SHA-256), and ~13k
 * for the Lua side (segment strings, the header and claims tables and their
 * garbage). Here nothing reaches the Lua heap: the segments decode into a
 * per-thread buffer, the JSON is scanned in place and only exp, nbf, iss,
 * aud and the claims_to_headers names are read.
 *
 * Agreement with the full verify (jwt.lua) is by construction: this path
 * only ever answers "valid" for a token the full verify accepts, and hands
 * every other token (bad base64, JSON it does not fully check, escapes in
 * a claim it reads, duplicate keys, crit, a failing check...) back to the
 * full verify, which gives the same reason as ever. So the scanner accepts
 * a subset of what json.c decodes (same number parsing, same string rules).
 */
#include "lua/jwt_hs.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lua/ctx_ext.h"
#include "lua/jwt_cache.h"

#define MAX_LIST   16 /* iss and aud values a spec holds */
#define MAX_DEPTH  64 /* json.c's */
#define HEADER_MAX 96 /* remembered header segments, in base64url characters */

struct str {
    const char *p;
    size_t n;
};

struct mg_jwt_hs {
    const void *hk; /* the hmac_key userdata, kept alive by the spec's env */
    unsigned algs;  /* bit 0 HS256, 1 HS384, 2 HS512 */
    double leeway;
    int niss, naud, nnames; /* niss/naud -1: not checked */
    /* The last header segment and its alg bit: a client sends the same
     * header on every token (not secret: the HMAC still covers it). */
    uint32_t hlen;
    unsigned halg;
    char htext[HEADER_MAX];
    struct str iss[MAX_LIST], aud[MAX_LIST], names[MG_JWT_HS_NAMES];
    char text[]; /* the strings above */
};

/* Decoded header, payload and signature of one token (the token is at most
 * MG_JWT_CACHE_MAX_TOKEN bytes, and decodes to fewer). */
static _Thread_local unsigned char scratch[MG_JWT_CACHE_MAX_TOKEN];

/* ------------------------------------------------------- the JSON scanner */

struct scan {
    const unsigned char *p, *end;
    int depth;
};

static void ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool hex4(const unsigned char *p, uint32_t *cp)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return false;
        v = v << 4 | d;
    }
    *cp = v;
    return true;
}

/* Bytes that stand for themselves in a JSON string (not '"', '\\' or a
 * control character): one load and test per byte. */
static const bool plain[256] = {
#define R16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
    R16(0), R16(0), 1,      1,      0,      1,      1,      1,      1,      1,
    1,      1,      1,      1,      1,      1,      1,      1, /* 0x22 '"' */
    R16(1), R16(1), 1,      1,      1,      1,      1,      1,      1,      1,
    1,      1,      1,      1,      0,      1,      1,      1, /* 0x5c '\\' */
    R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1),
#undef R16
};

/* At the opening quote: the raw bytes between the quotes; *esc when they hold
 * an escape (the value is then not the raw bytes). json.c's rules. */
static bool string_any(struct scan *s, struct str *out, bool *esc)
{
    const unsigned char *q = ++s->p;
    *esc = false;
    for (;;) {
        while (q < s->end && plain[*q])
            q++;
        if (q >= s->end || *q < 0x20)
            return false;
        if (*q == '"')
            break;
        *esc = true;
        if (s->end - q < 2)
            return false;
        unsigned char e = q[1];
        q += 2;
        if (e && strchr("\"\\/bfnrt", e))
            continue;
        uint32_t cp, lo;
        if (e != 'u' || s->end - q < 4 || !hex4(q, &cp))
            return false;
        q += 4;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (s->end - q < 6 || q[0] != '\\' || q[1] != 'u' || !hex4(q + 2, &lo) || lo < 0xdc00 ||
                lo > 0xdfff)
                return false;
            q += 6;
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            return false;
        }
    }
    out->p = (const char *)s->p;
    out->n = (size_t)(q - s->p);
    s->p = q + 1;
    return true;
}

/* string_any() for the usual string (no escape) without a call: claim
 * names and short values make up most of a payload. */
static inline bool string(struct scan *s, struct str *out, bool *esc)
{
    const unsigned char *q = s->p + 1;
    while (q < s->end && plain[*q])
        q++;
    if (q < s->end && *q == '"') {
        *esc = false;
        out->p = (const char *)s->p + 1;
        out->n = (size_t)(q - s->p - 1);
        s->p = q + 1;
        return true;
    }
    return string_any(s, out, esc);
}

/* json.c's dec_number, to the same double. The usual claim (exp, nbf, iat:
 * a plain integer) is read in one pass: digits accumulate as they are
 * scanned, and only a fraction, an exponent or more than 15 digits take the
 * general path (strtod, as json.c). */
static bool number(struct scan *s, double *v)
{
    const unsigned char *p = s->p, *start = p;
    bool neg = p < s->end && *p == '-';
    if (neg)
        p++;
    if (p >= s->end)
        return false;
    const unsigned char *digits = p;
    int64_t i = 0;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        /* at most 16 digits accumulate (no overflow), the rest are only
         * scanned: more than 15 take strtod below */
        const unsigned char *lim = s->end - p > 16 ? p + 16 : s->end;
        for (unsigned d; p < lim && (d = (unsigned)*p - '0') <= 9; p++)
            i = i * 10 + (int64_t)d;
        while (p < s->end && (unsigned)*p - '0' <= 9)
            p++;
    } else {
        return false;
    }
    if (p >= s->end || (*p != '.' && *p != 'e' && *p != 'E')) {
        if (p - digits <= 15) {
            *v = neg ? (i ? -(double)i : -0.0) : (double)i;
            s->p = p;
            return true;
        }
    } else {
        if (*p == '.') {
            const unsigned char *f = ++p;
            while (p < s->end && *p >= '0' && *p <= '9')
                p++;
            if (p == f)
                return false;
        }
        if (p < s->end && (*p == 'e' || *p == 'E')) {
            p++;
            if (p < s->end && (*p == '+' || *p == '-'))
                p++;
            const unsigned char *x = p;
            while (p < s->end && *p >= '0' && *p <= '9')
                p++;
            if (p == x)
                return false;
        }
    }
    size_t n = (size_t)(p - start);
    char tmp[64];
    if (n >= sizeof(tmp))
        return false;
    memcpy(tmp, start, n);
    tmp[n] = '\0';
    *v = strtod(tmp, NULL);
    s->p = p;
    return true;
}

static bool literal(struct scan *s, const char *w, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0)
        return false;
    s->p += n;
    return true;
}

static bool value(struct scan *s);

/* At '{' or '['. */
static bool container(struct scan *s)
{
    bool obj = *s->p == '{';
    unsigned char close = obj ? '}' : ']';
    if (++s->depth > MAX_DEPTH)
        return false;
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return true;
    }
    for (;;) {
        if (obj) {
            struct str k;
            bool esc;
            ws(s);
            if (s->p >= s->end || *s->p != '"' || !string(s, &k, &esc))
                return false;
            ws(s);
            if (s->p >= s->end || *s->p != ':')
                return false;
            s->p++;
        }
        if (!value(s))
            return false;
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == close) {
            s->p++;
            s->depth--;
            return true;
        }
        return false;
    }
}

/* Skips one value, checking it. */
static bool value(struct scan *s)
{
    struct str t;
    bool esc;
    double d;
    ws(s);
    if (s->p >= s->end)
        return false;
    switch (*s->p) {
    case '{':
    case '[':
        return container(s);
    case '"':
        return string(s, &t, &esc);
    case 't':
        return literal(s, "true", 4);
    case 'f':
        return literal(s, "false", 5);
    case 'n':
        return literal(s, "null", 4);
    default:
        return number(s, &d);
    }
}

/* Claim names are short: a loop beats a memcmp call; iss values (URLs) are
 * not. */
static bool same(struct str a, const char *b, size_t n)
{
    if (a.n != n)
        return false;
    if (n > 8)
        return memcmp(a.p, b, n) == 0;
    for (size_t i = 0; i < n; i++)
        if (a.p[i] != b[i])
            return false;
    return true;
}

static bool listed(const struct str *list, int n, struct str v)
{
    for (int i = 0; i < n; i++)
        if (same(v, list[i].p, list[i].n))
            return true;
    return false;
}

/* ------------------------------------------------------------ the verify */

/* The header's alg bit (0: anything the full verify must judge). */
static unsigned header_alg(const unsigned char *h, size_t n)
{
    struct scan s = {h, h + n, 1};
    unsigned alg = 0;
    ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return 0;
    s.p++;
    ws(&s);
    if (s.p < s.end && *s.p == '}')
        return 0;
    for (;;) {
        struct str k, v;
        bool esc;
        ws(&s);
        if (s.p >= s.end || *s.p != '"' || !string(&s, &k, &esc) || esc || same(k, "crit", 4))
            return 0;
        ws(&s);
        if (s.p >= s.end || *s.p != ':')
            return 0;
        s.p++;
        ws(&s);
        if (same(k, "alg", 3)) {
            if (alg || s.p >= s.end || *s.p != '"' || !string(&s, &v, &esc) || esc)
                return 0;
            alg = same(v, "HS256", 5) ? 1 : same(v, "HS384", 5) ? 2 : same(v, "HS512", 5) ? 4 : 0;
            if (!alg)
                return 0;
        } else if (!value(&s)) {
            return 0;
        }
        ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        if (s.p < s.end && *s.p == '}')
            break;
        return 0;
    }
    s.p++;
    ws(&s);
    return s.p == s.end ? alg : 0;
}

enum { SEEN_EXP = 1, SEEN_NBF = 2, SEEN_ISS = 4, SEEN_AUD = 8 };

/* aud: a string or an array of strings, one of them listed. */
static bool aud_ok(const struct mg_jwt_hs *h, struct scan *s)
{
    struct str v;
    bool esc, hit = false;
    if (s->p < s->end && *s->p == '"')
        return string(s, &v, &esc) && !esc && listed(h->aud, h->naud, v);
    if (s->p >= s->end || *s->p != '[')
        return false;
    s->p++;
    for (;;) {
        ws(s);
        if (s->p >= s->end || *s->p != '"' || !string(s, &v, &esc) || esc)
            return false;
        hit = hit || listed(h->aud, h->naud, v);
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return hit;
        }
        return false;
    }
}

/* One top-level member's value, read when the verifier needs it. */
static bool member(const struct mg_jwt_hs *h, struct scan *s, struct str k, unsigned *seen,
                   struct mg_jwt_hs_out *out)
{
    unsigned bit = 0;
    if (k.n == 3) { /* most claim names are three letters: one compare each */
#define KEY3(a, b, c) ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16)
        uint32_t w = KEY3((unsigned char)k.p[0], (unsigned char)k.p[1], (unsigned char)k.p[2]);
        bit = w == KEY3('e', 'x', 'p')   ? SEEN_EXP
              : w == KEY3('n', 'b', 'f') ? SEEN_NBF
              : w == KEY3('i', 's', 's') ? SEEN_ISS
              : w == KEY3('a', 'u', 'd') ? SEEN_AUD
                                         : 0;
#undef KEY3
    }
    int name = -1;
    for (int i = 0; i < h->nnames; i++)
        if (same(k, h->names[i].p, h->names[i].n))
            name = i; /* names are distinct (a map's keys) */
    if (bit & *seen)
        return false; /* a duplicate: the last one wins in json.c; leave it to it */
    *seen |= bit;
    if (name >= 0 && out->claim[name].kind != 0)
        return false;
    const unsigned char *at = s->p;
    double d;
    struct str v;
    bool esc;
    if (bit == SEEN_EXP || bit == SEEN_NBF) {
        if (!number(s, &d))
            return false;
        *(bit == SEEN_EXP ? &out->exp : &out->nbf) = d;
    } else if (bit == SEEN_ISS && h->niss >= 0) {
        if (s->p >= s->end || *s->p != '"' || !string(s, &v, &esc) || esc ||
            !listed(h->iss, h->niss, v))
            return false;
    } else if (bit == SEEN_AUD && h->naud >= 0) {
        if (!aud_ok(h, s))
            return false;
    } else if (!value(s)) {
        return false;
    }
    if (name < 0)
        return true;
    /* claims_to_headers: the value again, as a string or a number */
    struct mg_jwt_claim_val *c = &out->claim[name];
    struct scan r = {at, s->end, 0};
    if (*at == '"') {
        if (!string(&r, &v, &esc) || esc)
            return false;
        c->p = v.p;
        c->len = (uint32_t)v.n;
        c->kind = 1;
    } else if (*at == '-' || (*at >= '0' && *at <= '9')) {
        if (!number(&r, &c->num))
            return false;
        c->kind = 2;
    } else {
        c->kind = 3; /* present, not copied (kind 3 reads as 0 in Lua) */
    }
    return true;
}

static bool claims(const struct mg_jwt_hs *h, const unsigned char *p, size_t n, double now,
                   struct mg_jwt_hs_out *out)
{
    struct scan s = {p, p + n, 1};
    unsigned seen = 0;
    ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return false;
    s.p++;
    ws(&s);
    if (s.p < s.end && *s.p == '}') {
        s.p++;
    } else {
        for (;;) {
            struct str k;
            bool esc;
            ws(&s);
            if (s.p >= s.end || *s.p != '"' || !string(&s, &k, &esc) || esc)
                return false;
            ws(&s);
            if (s.p >= s.end || *s.p != ':')
                return false;
            s.p++;
            ws(&s);
            if (!member(h, &s, k, &seen, out))
                return false;
            ws(&s);
            if (s.p < s.end && *s.p == ',') {
                s.p++;
                continue;
            }
            if (s.p < s.end && *s.p == '}') {
                s.p++;
                break;
            }
            return false;
        }
    }
    ws(&s);
    if (s.p != s.end)
        return false;
    /* jwt.lua check_claims' comparisons; NaN (absent) compares false */
    if (now > out->exp + h->leeway || now + h->leeway < out->nbf)
        return false;
    if ((h->niss >= 0 && !(seen & SEEN_ISS)) || (h->naud >= 0 && !(seen & SEEN_AUD)))
        return false;
    return true;
}

/* Constant time (CRYPTO_memcmp is a byte loop: ~230 instructions for 32). */
static bool same_mac(const unsigned char *a, const unsigned char *b, size_t n)
{
    uint64_t d = 0, x, y;
    for (size_t i = 0; i < n; i += 8) { /* n: 32, 48 or 64 */
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        d |= x ^ y;
    }
    return d == 0;
}

int mg_jwt_hs_verify(struct mg_jwt_hs *h, const char *tok, size_t len, double now,
                     struct mg_jwt_hs_out *out)
{
    if (!h || len > sizeof(scratch))
        return 0;
    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)))
        return 0;
    size_t hseg = (size_t)(d1 - tok);
    unsigned alg;
    unsigned char *pd = scratch;
    if (hseg == h->hlen && h->halg && memcmp(tok, h->htext, hseg) == 0) {
        alg = h->halg;
    } else {
        long hn = mg_lua_b64url_decode(tok, hseg, scratch);
        if (hn < 0)
            return 0;
        alg = header_alg(scratch, (size_t)hn);
        if (alg && hseg <= HEADER_MAX) {
            memcpy(h->htext, tok, hseg);
            h->hlen = (uint32_t)hseg;
            h->halg = alg;
        }
    }
    alg &= h->algs;
    if (!alg)
        return 0;
    long pn = mg_lua_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), pd);
    if (pn < 0)
        return 0;
    unsigned char *sd = pd + pn;
    long sn = mg_lua_b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - tok), sd);
    if (sn < 0)
        return 0;
    unsigned char mac[64];
    unsigned ml = mg_lua_hkey_mac(h->hk,
                                  alg == 1   ? 256
                                  : alg == 2 ? 384
                                             : 512,
                                  (const unsigned char *)tok, (size_t)(d2 - tok), mac);
    if ((size_t)sn != ml || !same_mac(mac, sd, ml))
        return 0;
    out->payload = (const char *)pd;
    out->payload_len = (uint32_t)pn;
    out->nnames = (uint32_t)h->nnames;
    out->exp = out->nbf = NAN;
    for (int i = 0; i < h->nnames; i++)
        out->claim[i].kind = 0;
    return claims(h, pd, (size_t)pn, now, out) ? 1 : 0;
}

/* ------------------------------------------------------------- Lua side */

/* A string or a list of strings at index i into list (n -1: nil). false: not
 * one the fast path takes. */
static bool read_list(lua_State *L, int i, struct str *list, int *n)
{
    *n = -1;
    if (lua_isnil(L, i))
        return true;
    if (lua_type(L, i) == LUA_TSTRING) {
        list[0].p = lua_tolstring(L, i, &list[0].n);
        *n = 1;
        return true;
    }
    if (!lua_istable(L, i))
        return false;
    int k = 0;
    for (;; k++) {
        lua_rawgeti(L, i, k + 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            break;
        }
        if (lua_type(L, -1) != LUA_TSTRING || k == MAX_LIST) {
            lua_pop(L, 1);
            return false;
        }
        list[k].p = lua_tolstring(L, -1, &list[k].n); /* the table keeps it */
        lua_pop(L, 1);
    }
    *n = k;
    return true;
}

static size_t copy_strs(struct str *list, int n, char *text, size_t at)
{
    for (int i = 0; i < n; i++) {
        if (text)
            memcpy(text + at, list[i].p, list[i].n);
        list[i].p = text ? text + at : NULL;
        at += list[i].n;
    }
    return at;
}

/* jwt_hs_spec(hkey, algs, leeway, iss, aud, names) -> spec, pointer | nil
 * (the fast path does not apply: the caller keeps the full verify). */
static int l_spec(lua_State *L)
{
    struct mg_jwt_hs tmp = {0};
    tmp.hk = mg_lua_hkey_at(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    tmp.leeway = luaL_optnumber(L, 3, 0);
    for (int i = 1;; i++) {
        lua_rawgeti(L, 2, i);
        const char *a = lua_tostring(L, -1);
        lua_pop(L, 1);
        if (!a)
            break;
        tmp.algs |= strcmp(a, "HS256") == 0   ? 1
                    : strcmp(a, "HS384") == 0 ? 2
                    : strcmp(a, "HS512") == 0 ? 4
                                              : 0;
    }
    if (!tmp.hk || !tmp.algs || !read_list(L, 4, tmp.iss, &tmp.niss) ||
        !read_list(L, 5, tmp.aud, &tmp.naud) || !read_list(L, 6, tmp.names, &tmp.nnames) ||
        tmp.nnames > MG_JWT_HS_NAMES || isnan(tmp.leeway)) {
        lua_pushnil(L);
        return 1;
    }
    if (tmp.nnames < 0)
        tmp.nnames = 0;
    struct str save[3][MAX_LIST];
    memcpy(save[0], tmp.iss, sizeof(tmp.iss));
    memcpy(save[1], tmp.aud, sizeof(tmp.aud));
    memcpy(save[2], tmp.names, sizeof(tmp.names));
    size_t bytes = copy_strs(tmp.iss, tmp.niss, NULL, 0);
    bytes = copy_strs(tmp.aud, tmp.naud, NULL, bytes);
    bytes = copy_strs(tmp.names, tmp.nnames, NULL, bytes);
    struct mg_jwt_hs *h = lua_newuserdata(L, sizeof(*h) + bytes + 1);
    *h = tmp;
    memcpy(h->iss, save[0], sizeof(h->iss));
    memcpy(h->aud, save[1], sizeof(h->aud));
    memcpy(h->names, save[2], sizeof(h->names));
    size_t at = copy_strs(h->iss, h->niss, h->text, 0);
    at = copy_strs(h->aud, h->naud, h->text, at);
    copy_strs(h->names, h->nnames, h->text, at);
    /* the key lives as long as the spec */
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_setfenv(L, -2);
    lua_pushlightuserdata(L, h);
    return 2;
}

void mg_lua_jwt_hs_push(lua_State *L)
{
    lua_pushcfunction(L, l_spec);
    lua_setfield(L, -2, "jwt_hs_spec");
}
