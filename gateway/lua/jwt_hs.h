/*
 * The HS256/384/512 request path of gw.jwt in one call (jwt_hs.c): a token
 * split, base64url-decoded into a per-thread buffer, its HMAC checked with a
 * prepared key (crypto.c), and only the claims the verifier needs read from
 * the payload, with no Lua value built. Reached over the FFI
 * (struct mg_jwt_cache_api: jwt_auth's requests through lookup, which calls
 * it for a token not in the cache; gw.jwt.verifier through hs_verify;
 * jwt.lua's cdef); never raises.
 */
#ifndef MG_LUA_JWT_HS_H
#define MG_LUA_JWT_HS_H

#include <stddef.h>
#include <stdint.h>

struct lua_State;
struct mg_jwt_hs;

/* claims_to_headers names a verifier extracts at most. */
#define MG_JWT_HS_NAMES 8

/* Field order is part of jwt.lua's cdef. */
struct mg_jwt_claim_val {
    const char *p; /* kind 1: the string's bytes (in the per-thread buffer) */
    double num;    /* kind 2 */
    uint32_t len;
    int32_t kind; /* 0: absent or neither string nor number */
};

struct mg_jwt_hs_out {
    const char *payload; /* the decoded payload JSON, valid until the next call */
    uint32_t payload_len, nnames;
    double exp, nbf; /* NaN when absent */
    struct mg_jwt_claim_val claim[MG_JWT_HS_NAMES];
};

/* 1: the token is valid (signature, alg, exp, nbf, iss, aud) and out is
 * filled; 0: anything else, including a bad token: the caller runs the full
 * verify, which names the reason (one code path for every message). */
int mg_jwt_hs_verify(struct mg_jwt_hs *spec, const char *tok, size_t len, double now,
                     struct mg_jwt_hs_out *out);

/* crypto.c: the prepared HMAC key at index i (NULL if it is not one) and a
 * MAC with it (bits 256, 384, 512; returns the MAC length). */
const void *mg_lua_hkey_at(struct lua_State *L, int i);
unsigned mg_lua_hkey_mac(const void *hk, int bits, const unsigned char *d, size_t n,
                         unsigned char *mac);

/* Adds jwt_hs_spec(hkey, algs, leeway, iss, aud, names) -> spec, pointer |
 * nil to the table on top of L's stack (native.crypto). */
void mg_lua_jwt_hs_push(struct lua_State *L);

#endif
