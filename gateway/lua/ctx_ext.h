/*
 * The wider plugin API of DESIGN.md section 10.4 (lua/moongate/ext.lua is its
 * Lua twin): every value of a header, added headers, routing control from the
 * access phase, a balancer's refusal, and the native modules (crypto.c,
 * json.c) the `gw` table builds on.
 *
 * Kept apart from ctx.h's table so that the two grow independently: Lua finds
 * this one in package.loaded["moongate.native"], set by mg_lua_ext_open()
 * before the runner loads. Same conventions as ctx.h (STYLE 10): plain C
 * types, out-parameters, enum mg_ffi_rc, never raise.
 */
#ifndef MG_LUA_CTX_EXT_H
#define MG_LUA_CTX_EXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lua/ctx-t.h"

struct mg_lua;
struct lua_State;

/* ctx:respond() raises this light userdata (after filling the respond slot)
 * so that nothing after it in the phase runs; the runtime's protected call
 * treats it as the phase's normal end, not an error. */
extern const char mg_lua_respond_sentinel;

/* Handed to Lua as a light userdata; field order is part of ext.lua's cdef. */
struct mg_ffi_ext_api {
    uint32_t size;
    int (*headers)(struct mg_lua *, uint32_t, int resp, const char *, size_t, struct mg_lua_str *,
                   size_t cap, size_t *total);
    int (*add_header)(struct mg_lua *, uint32_t, int resp, const char *, size_t, const char *,
                      size_t);
    int (*set_path)(struct mg_lua *, uint32_t, const char *, size_t);
    int (*set_query)(struct mg_lua *, uint32_t, const char *, size_t); /* NULL: no query */
    int (*set_upstream)(struct mg_lua *, uint32_t, const char *, size_t);
    int (*balance_refuse)(struct mg_lua *, uint32_t, int status);
    int (*body)(struct mg_lua *, uint32_t, struct mg_lua_str *out);
    int (*set_body)(struct mg_lua *, uint32_t, const char *, size_t);
    /* enum mg_http_target_fault of a path (`path_only`) or path?query: why
     * set_path or gw.http.request refuses it (same rules as the codecs). */
    int (*target_fault)(const char *, size_t, int path_only);
};

extern const struct mg_ffi_ext_api mg_ffi_ext_api;

/* Registers package.loaded["moongate.native"] = {api, respond_sentinel, crypto,
 * json, load_module} in L. Inside a protected call (it allocates). */
void mg_lua_ext_open(struct lua_State *L, struct mg_lua *vm);

/* Native modules (lua_CFunction tables), pushed on L's stack. */
void mg_lua_crypto_push(struct lua_State *L);
void mg_lua_json_push(struct lua_State *L);

/* base64url text (padding optional, unused bits zero) into out, which holds
 * n / 4 * 3 + 3 bytes: the byte count, or -1 (crypto.c). */
long mg_lua_b64url_decode(const char *s, size_t n, unsigned char *out);

#endif
