/*
 * The verified-token cache of gw.jwt's request verifiers (jwt_cache.c).
 * The hot path is an FFI table (lua/moongate/jwt.lua declares the same
 * struct); like ctx.h's functions these never raise and never see a
 * lua_State.
 */
#ifndef MG_LUA_JWT_CACHE_H
#define MG_LUA_JWT_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lua_State;
struct mg_lua_str;
struct mg_jwt_cache;
struct mg_jwt_hs;
struct mg_jwt_hs_out;

/* Longer tokens are verified every time, never stored. */
#define MG_JWT_CACHE_MAX_TOKEN 8192

/* lookup() results below 0; 0 and above: the index of the hit. */
enum {
    MG_JWT_CACHE_MISS = -1,     /* verify the token (span holds its bounds) */
    MG_JWT_CACHE_NO_TOKEN = -2, /* empty or not `Bearer <token>` */
    MG_JWT_CACHE_EXPIRED = -3,  /* a cached token past exp + leeway */
    MG_JWT_CACHE_NOT_YET = -4,  /* a cached token before nbf - leeway */
    MG_JWT_CACHE_VERIFIED = -5, /* not cached, valid by the HMAC fast path (out filled) */
};

/* Field order is part of jwt.lua's cdef. */
struct mg_jwt_cache_api {
    uint32_t size;
    /* The token in a header value (`bearer`: the "Bearer <token>" form) into
     * span = {offset, length}, then looked up; c may be NULL (no cache). A
     * token not cached is then checked by the HMAC fast path when spec is not
     * NULL (mg_jwt_hs_verify into out): one call for a new token. */
    int (*lookup)(struct mg_jwt_cache *c, const struct mg_lua_str *value, int bearer, double now,
                  double leeway, uint32_t *span, struct mg_jwt_hs *spec, struct mg_jwt_hs_out *out);
    /* Stores a verified token; exp and nbf NaN when absent. The entry's index,
     * or -1 (too long, no memory). */
    int (*insert)(struct mg_jwt_cache *c, const char *tok, size_t len, double exp, double nbf);
    /* jwt_hs.h's mg_jwt_hs_verify: a miss's HMAC verify in one call. */
    int (*hs_verify)(struct mg_jwt_hs *spec, const char *tok, size_t len, double now,
                     struct mg_jwt_hs_out *out);
};

extern const struct mg_jwt_cache_api mg_jwt_cache_api;

/* At least `entries` entries (rounded up to a power of two, 4 at least). */
struct mg_jwt_cache *mg_jwt_cache_new(uint32_t entries);
void mg_jwt_cache_flush(struct mg_jwt_cache *c);
void mg_jwt_cache_free(struct mg_jwt_cache *c);

/* Adds jwt_cache(n), jwt_cache_flush(c), jwt_cache_stats(c) and
 * jwt_cache_api to the table on top of L's stack (native.crypto). */
void mg_lua_jwt_cache_push(struct lua_State *L);

#endif
