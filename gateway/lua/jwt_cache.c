/*
 * The verified-token cache of gw.jwt's request verifiers (jwt_auth): a client
 * sends the same token on every request of its lifetime, so once a token's
 * signature, alg and iss/aud passed, the next requests with the same bytes only
 * re-check exp and nbf against the clock (as Envoy's jwt_authn does with its
 * jwt_cache_config). A hit costs a hash and a compare of the token, ~1k
 * instructions instead of the HMAC's four SHA-256 blocks (~9.5k) or ECDSA's
 * ~900k, and no Lua garbage.
 *
 * Correctness: the cache belongs to one verifier (one key, alg list, iss, aud,
 * leeway), so a cached result holds for as long as the verifier's key does;
 * a key change (a JWKS refresh) flushes it. Only successes are stored; a
 * token matches only on all its bytes (compared in constant time), and its
 * set is chosen by a hash seeded per cache from RAND_bytes, so neither a
 * crafted token nor its timing reaches another client's entry.
 *
 * Layout: 4-way set associative, LRU within a set; bounded work per lookup
 * whatever the traffic. Lua owns the userdata (freed by __gc); the hot path
 * is reached over the FFI (struct mg_jwt_cache_api, jwt.lua's cdef), the
 * rest as lua_CFunctions in native.crypto.
 */
#include "lua/jwt_cache.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "lua/ctx-t.h"
#include "lua/jwt_hs.h"

#define CACHE_MT    "moongate.jwt_cache"
#define WAYS        4
#define MAX_ENTRIES (1u << 20)

struct entry {
    uint64_t hash;   /* 0: empty */
    double exp, nbf; /* NaN: claim absent */
    uint32_t len, used;
    char *tok; /* malloc'ed, cap bytes */
    uint32_t cap;
};

struct mg_jwt_cache {
    uint32_t sets; /* a power of two */
    uint32_t tick;
    uint64_t seed;
    uint64_t hits, misses;
    struct entry e[];
};

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Word at a time (a token is ~200-800 bytes); never 0, which marks empty. */
static uint64_t token_hash(uint64_t seed, const unsigned char *p, size_t n)
{
    uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ull);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        h = (h ^ load64(p + i)) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    uint64_t t = 0;
    memcpy(&t, p + i, n - i);
    h = (h ^ t) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return h ? h : 1;
}

/* Constant time in n. */
static bool same_bytes(const unsigned char *a, const unsigned char *b, size_t n)
{
    uint64_t d = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        d |= load64(a + i) ^ load64(b + i);
    for (; i < n; i++)
        d |= (uint64_t)(a[i] ^ b[i]);
    return d == 0;
}

static bool is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* The token's bounds in a header value: the whole value, or with `bearer`
 * the `Bearer <token>` form (case-insensitive scheme, then the token, trailing
 * space allowed). The token is not scanned here: a cached token is known to
 * be one run of non-space; any other is checked by has_space() first. */
static bool token_span(const struct mg_lua_str *v, int bearer, size_t *off, size_t *len)
{
    const unsigned char *p = (const unsigned char *)v->p;
    size_t n = v->len, i = 0;
    if (!p)
        return false;
    if (bearer) {
        static const char scheme[] = "bearer";
        if (n < 7)
            return false;
        for (; i < 6; i++)
            if ((p[i] | 0x20) != (unsigned char)scheme[i])
                return false;
        if (!is_space(p[i]))
            return false;
        while (i < n && is_space(p[i]))
            i++;
        while (n > i && is_space(p[n - 1]))
            n--;
    }
    if (n == i)
        return false;
    *off = i;
    *len = n - i;
    return true;
}

/* Eight bytes at a time: only a word with a byte below 0x21 (which every
 * space is) is looked at byte by byte. A miss scans the whole token, so this
 * is ~2k instructions less per new token than a byte loop. */
static bool has_space(const unsigned char *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = load64(p + i);
        if (((w - ones * 0x21) & ~w & highs) == 0)
            continue;
        for (size_t j = i; j < i + 8; j++)
            if (is_space(p[j]))
                return true;
    }
    for (; i < n; i++)
        if (is_space(p[i]))
            return true;
    return false;
}

/* The hash covers the length and the token's last 64 bytes (the signature:
 * distinct for distinct tokens); the compare covers every byte. */
static uint64_t tail_hash(uint64_t seed, const unsigned char *p, size_t n)
{
    size_t k = n < 64 ? n : 64;
    return token_hash(seed ^ n, p + n - k, k);
}

static int lookup(struct mg_jwt_cache *c, const struct mg_lua_str *value, int bearer, double now,
                  double leeway, uint32_t *span, struct mg_jwt_hs *spec, struct mg_jwt_hs_out *out)
{
    size_t off, len;
    if (!token_span(value, bearer, &off, &len))
        return MG_JWT_CACHE_NO_TOKEN;
    span[0] = (uint32_t)off;
    span[1] = (uint32_t)len;
    const unsigned char *tok = (const unsigned char *)value->p + off;
    if (c && len <= MG_JWT_CACHE_MAX_TOKEN) {
        uint64_t h = tail_hash(c->seed, tok, len);
        struct entry *set = &c->e[(h & (c->sets - 1)) * WAYS];
        for (int w = 0; w < WAYS; w++) {
            struct entry *e = &set[w];
            if (e->hash != h || e->len != len ||
                !same_bytes((const unsigned char *)e->tok, tok, len))
                continue;
            /* the comparisons the slow path makes (jwt.lua check_claims);
             * NaN (no claim) compares false */
            if (now > e->exp + leeway) {
                e->hash = 0; /* never valid again */
                return MG_JWT_CACHE_EXPIRED;
            }
            if (now + leeway < e->nbf)
                return MG_JWT_CACHE_NOT_YET;
            e->used = ++c->tick;
            c->hits++;
            return (int)(e - c->e);
        }
        c->misses++;
    }
    /* A token the HMAC fast path accepts is base64url and dots only, so it
     * has no space: the scan below is for the others (~500 instructions
     * saved per new token), before the full verify. */
    if (spec && mg_jwt_hs_verify(spec, (const char *)tok, len, now, out) == 1)
        return MG_JWT_CACHE_VERIFIED;
    /* a bearer token is one run of non-space (jwt_auth's contract) */
    return bearer && has_space(tok, len) ? MG_JWT_CACHE_NO_TOKEN : MG_JWT_CACHE_MISS;
}

static int insert(struct mg_jwt_cache *c, const char *tok, size_t len, double exp, double nbf)
{
    if (!c || len == 0 || len > MG_JWT_CACHE_MAX_TOKEN)
        return -1;
    uint64_t h = tail_hash(c->seed, (const unsigned char *)tok, len);
    struct entry *set = &c->e[(h & (c->sets - 1)) * WAYS], *victim = &set[0];
    for (int w = 0; w < WAYS; w++) {
        struct entry *e = &set[w];
        if (e->hash == 0 || (e->hash == h && e->len == len && memcmp(e->tok, tok, len) == 0)) {
            victim = e;
            break;
        }
        if (e->used < victim->used)
            victim = e;
    }
    if (victim->cap < len) {
        uint32_t cap = len < 256 ? 256 : (uint32_t)len;
        char *p = realloc(victim->tok, cap);
        if (!p)
            return -1;
        victim->tok = p;
        victim->cap = cap;
    }
    memcpy(victim->tok, tok, len);
    victim->len = (uint32_t)len;
    victim->hash = h;
    victim->exp = exp;
    victim->nbf = nbf;
    victim->used = ++c->tick;
    return (int)(victim - c->e);
}

const struct mg_jwt_cache_api mg_jwt_cache_api = {
    .size = sizeof(struct mg_jwt_cache_api),
    .lookup = lookup,
    .insert = insert,
    .hs_verify = mg_jwt_hs_verify,
};

struct mg_jwt_cache *mg_jwt_cache_new(uint32_t entries)
{
    uint32_t sets = 1;
    if (entries > MAX_ENTRIES)
        entries = MAX_ENTRIES;
    while (sets * WAYS < entries)
        sets <<= 1;
    struct mg_jwt_cache *c = calloc(1, sizeof(*c) + (size_t)sets * WAYS * sizeof(struct entry));
    if (!c)
        return NULL;
    c->sets = sets;
    if (RAND_bytes((unsigned char *)&c->seed, sizeof(c->seed)) != 1)
        c->seed = (uint64_t)(uintptr_t)c * 0x9e3779b97f4a7c15ull; /* still unknown to clients */
    return c;
}

void mg_jwt_cache_flush(struct mg_jwt_cache *c)
{
    for (uint32_t i = 0; i < c->sets * WAYS; i++)
        c->e[i].hash = 0;
}

void mg_jwt_cache_free(struct mg_jwt_cache *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->sets * WAYS; i++)
        free(c->e[i].tok);
    free(c);
}

/* ------------------------------------------------------------- Lua side */

static struct mg_jwt_cache **checked(lua_State *L)
{
    return luaL_checkudata(L, 1, CACHE_MT);
}

/* jwt_cache(entries) -> cache (a userdata the FFI functions take as their
 * first argument: LuaJIT passes a userdata's payload address, which is the
 * struct pointer below). */
static int l_new(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 1)
        return luaL_argerror(L, 1, "entries must be at least 1");
    struct mg_jwt_cache **u = lua_newuserdata(L, sizeof(*u));
    *u = NULL;
    luaL_getmetatable(L, CACHE_MT);
    lua_setmetatable(L, -2);
    *u = mg_jwt_cache_new((uint32_t)(n > MAX_ENTRIES ? MAX_ENTRIES : n));
    if (!*u)
        return luaL_error(L, "not enough memory");
    /* the FFI wants the struct itself: hand Lua its address too */
    lua_pushlightuserdata(L, *u);
    return 2;
}

static int l_gc(lua_State *L)
{
    struct mg_jwt_cache **u = checked(L);
    mg_jwt_cache_free(*u);
    *u = NULL;
    return 0;
}

static int l_flush(lua_State *L)
{
    struct mg_jwt_cache **u = checked(L);
    if (*u)
        mg_jwt_cache_flush(*u);
    return 0;
}

/* stats(cache) -> hits, misses, entries */
static int l_stats(lua_State *L)
{
    struct mg_jwt_cache **u = checked(L);
    lua_pushnumber(L, *u ? (lua_Number)(*u)->hits : 0);
    lua_pushnumber(L, *u ? (lua_Number)(*u)->misses : 0);
    lua_pushnumber(L, *u ? (lua_Number)(*u)->sets * WAYS : 0);
    return 3;
}

void mg_lua_jwt_cache_push(lua_State *L)
{
    if (luaL_newmetatable(L, CACHE_MT)) {
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_new);
    lua_setfield(L, -2, "jwt_cache");
    lua_pushcfunction(L, l_flush);
    lua_setfield(L, -2, "jwt_cache_flush");
    lua_pushcfunction(L, l_stats);
    lua_setfield(L, -2, "jwt_cache_stats");
    lua_pushlightuserdata(L, (void *)&mg_jwt_cache_api);
    lua_setfield(L, -2, "jwt_cache_api");
}
