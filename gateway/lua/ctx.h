/*
 * The FFI functions behind `ctx`, `targets` and `gw` (paired with
 * lua/moongate/ctx.lua, which declares them in one ffi.cdef).
 *
 * STYLE convention 10: they take plain C types, write into out-parameters the
 * caller provides, return an enum mg_ffi_rc, never raise and never see a
 * lua_State. The Lua side validates arguments and turns codes into errors.
 *
 * They reach Lua as a table of function pointers (struct mg_ffi_api) rather
 * than through ffi.C: the moongate binary does not export its symbols
 * (-rdynamic), and a table cannot silently bind to a wrong symbol. The table
 * starts with sizes and offsets that ctx.lua compares with its cdef at boot, so
 * a C struct changed without its Lua twin fails loudly, once, at load.
 *
 * Threads: the VM's thread only (they act on vm->cur), except mg_ffi_now and
 * mg_ffi_hash which are pure.
 */
#ifndef MG_LUA_CTX_H
#define MG_LUA_CTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lua/ctx-t.h"

struct mg_lua;

enum mg_ffi_rc {
    MG_FFI_OK = 0,
    MG_FFI_NOT_FOUND = 1,    /* absent: the Lua side returns nil */
    MG_FFI_BAD_CONTEXT = -1, /* no request phase is running, or not this ctx's */
    MG_FFI_BAD_PHASE = -2,   /* not available in the running phase */
    MG_FFI_BAD_NAME = -3,    /* a header name that is not an HTTP token */
    MG_FFI_BAD_VALUE = -4,   /* CR, LF or NUL in a header value; a bad status */
    MG_FFI_FORBIDDEN = -5,   /* a framing or hop-by-hop header */
    MG_FFI_TOO_LARGE = -6,   /* over the per-request budget (MG_LUA_EDIT_BYTES_MAX...) */
};

/* Fields for mg_ffi_ctx_str / mg_ffi_ctx_num. */
enum mg_ffi_field {
    MG_FFI_METHOD,
    MG_FFI_PATH,
    MG_FFI_QUERY,
    MG_FFI_CLIENT_IP,
    MG_FFI_ROUTE,
    MG_FFI_REQUEST_ID,
    MG_FFI_UPSTREAM_ADDRESS,
    MG_FFI_STATUS,
    MG_FFI_LATENCY,
    MG_FFI_TLS_PROTOCOL,
    MG_FFI_TLS_CIPHER,
    MG_FFI_TLS_SNI,
    MG_FFI_TLS_CLIENT_SUBJECT,
    MG_FFI_PROTOCOL,
};

/* Per-request budgets: bytes of header names and values copied into edits
 * (request + response + respond headers), and the respond body. */
#define MG_LUA_EDIT_BYTES_MAX   (64u * 1024)
#define MG_LUA_RESPOND_BODY_MAX (1024u * 1024)
#define MG_LUA_HEADER_NAME_MAX  256u

int mg_ffi_ctx_str(struct mg_lua *vm, uint32_t slot, int field, struct mg_lua_str *out);
int mg_ffi_ctx_num(struct mg_lua *vm, uint32_t slot, int field, double *out);
/* Header reads see the edits made so far: a set value, or NOT_FOUND after a
 * removal. The first header of that name otherwise. */
int mg_ffi_req_header_get(struct mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                          struct mg_lua_str *out);
/* value == NULL removes. Access and balance phases. */
int mg_ffi_req_header_set(struct mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                          const char *value, size_t vlen);
/* Response and log phases. */
int mg_ffi_resp_header_get(struct mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                           struct mg_lua_str *out);
/* Access, balance and response phases (then applies to any response sent). */
int mg_ffi_resp_header_set(struct mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                           const char *value, size_t vlen);
/* Access phase: replaces any earlier respond (status 200..599; body may be
 * NULL). Then mg_ffi_respond_header_add for each header. */
int mg_ffi_respond(struct mg_lua *vm, uint32_t slot, int status, const char *body, size_t blen);
int mg_ffi_respond_header_add(struct mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                              const char *value, size_t vlen);
/* The runner reports which plugin runs now (timing, error attribution). */
int mg_ffi_plugin_enter(struct mg_lua *vm, int plugin);
/* Log phase: a plugin failed but the chain goes on; logs and counts it. */
int mg_ffi_plugin_error(struct mg_lua *vm, int plugin, const char *msg, size_t len);
/* gw.log: level is enum mg_log_level; prefixed with the running plugin's name. */
int mg_ffi_log(struct mg_lua *vm, int level, const char *msg, size_t len);
/* The message of the runaway-guard error, for the running call's limit. */
int mg_ffi_guard_message(struct mg_lua *vm, char *buf, size_t cap);
/* gw.now(): wall clock, seconds since the epoch (microsecond resolution). */
double mg_ffi_now(void);
/* Monotonic milliseconds, the clock of mg_target_stats.ewma_at_ms (uv_now). */
double mg_ffi_clock_ms(void);
/* gw.hash(): XXH32 of the bytes. */
uint32_t mg_ffi_hash(const char *p, size_t len, uint32_t seed);
/* Where the VM keeps the start of the call in progress (monotonic ns, as
 * mg_lua_clock_ns()): Lua reads "now" for a balance call from there instead
 * of reading the clock again. */
const uint64_t *mg_ffi_call_start_ns(struct mg_lua *vm);
/* targets[i].ewma: the target's peak EWMA (struct mg_target_stats, never
 * NULL) decayed to now_ns (monotonic ns, the call's start), in seconds; 0
 * before the first sample. In C so the balancer's compiled trace makes one
 * call with no branches of its own. */
double mg_ffi_target_ewma(const void *stats, uint64_t now_ns);
int mg_ffi_header_check(const char *name, size_t nlen, const char *value, size_t vlen);
int mg_ffi_header_put(struct mg_lua *vm, uint32_t slot, int resp, int append, const char *name,
                      size_t nlen, const char *value, size_t vlen);

/* Handed to Lua as a light userdata; field order is part of the cdef. */
struct mg_ffi_api {
    uint32_t size;        /* sizeof(struct mg_ffi_api) */
    uint32_t str_size;    /* sizeof(struct mg_lua_str) */
    uint32_t target_size; /* struct mg_lua_target: size and offsets */
    uint32_t target_weight, target_available, target_stats;
    uint32_t stats_active;  /* struct mg_target_stats: offsets of the fields */
    uint32_t stats_ewma_ns; /*   the balancers read (never mirrored in Lua) */
    uint32_t stats_failures;
    uint32_t stats_ewma_at_ms;
    uint32_t ewma_tau_ms;   /* MG_EWMA_TAU_MS: the Lua side decays ewma to now */
    const void *zero_stats; /* read instead of a NULL stats pointer */
    int (*mg_ffi_ctx_str)(struct mg_lua *, uint32_t, int, struct mg_lua_str *);
    int (*mg_ffi_ctx_num)(struct mg_lua *, uint32_t, int, double *);
    int (*mg_ffi_req_header_get)(struct mg_lua *, uint32_t, const char *, size_t,
                                 struct mg_lua_str *);
    int (*mg_ffi_req_header_set)(struct mg_lua *, uint32_t, const char *, size_t, const char *,
                                 size_t);
    int (*mg_ffi_resp_header_get)(struct mg_lua *, uint32_t, const char *, size_t,
                                  struct mg_lua_str *);
    int (*mg_ffi_resp_header_set)(struct mg_lua *, uint32_t, const char *, size_t, const char *,
                                  size_t);
    int (*mg_ffi_respond)(struct mg_lua *, uint32_t, int, const char *, size_t);
    int (*mg_ffi_respond_header_add)(struct mg_lua *, uint32_t, const char *, size_t, const char *,
                                     size_t);
    int (*mg_ffi_plugin_enter)(struct mg_lua *, int);
    int (*mg_ffi_plugin_error)(struct mg_lua *, int, const char *, size_t);
    int (*mg_ffi_log)(struct mg_lua *, int, const char *, size_t);
    int (*mg_ffi_guard_message)(struct mg_lua *, char *, size_t);
    double (*mg_ffi_now)(void);
    double (*mg_ffi_clock_ms)(void);
    uint32_t (*mg_ffi_hash)(const char *, size_t, uint32_t);
    const uint64_t *(*mg_ffi_call_start_ns)(struct mg_lua *);
    double (*mg_ffi_target_ewma)(const void *, uint64_t);
    int (*mg_ffi_header_check)(const char *, size_t, const char *, size_t);
    int (*mg_ffi_header_put)(struct mg_lua *, uint32_t, int, int, const char *, size_t,
                             const char *, size_t);
};

/* The one table, filled at compile time. */
extern const struct mg_ffi_api mg_ffi_api;

/* For ctx_ext.c (the wider plugin API of DESIGN.md 10.4), with the same
 * checks as the functions above. resp: the response headers. Values as
 * ctx:headers() sees them; at most `cap` written, the count in *total. */
int mg_lua_ext_headers(struct mg_lua *vm, uint32_t slot, bool resp, const char *name, size_t nlen,
                       struct mg_lua_str *out, size_t cap, size_t *total);
/* Appends a value beside the others (request: access and balance phases;
 * response: also the response phase). */
int mg_lua_ext_add_header(struct mg_lua *vm, uint32_t slot, bool resp, const char *name,
                          size_t nlen, const char *value, size_t vlen);
/* The running request when `slot` names it and the phase is in the mask of
 * (1 << enum mg_lua_phase) bits; NULL otherwise. */
struct mg_lua_ctx *mg_lua_ext_current(struct mg_lua *vm, uint32_t slot, unsigned phase_mask);
/* Copies bytes into the request's arena ("" for n == 0, never NULL). */
struct mg_lua_str mg_lua_ext_copy(struct mg_lua_ctx *c, const char *p, size_t n);

/* Accounting shared with vm.c: closes the running plugin's timing at `now`
 * (counting an error if `error` or if it already reported one). */
void mg_lua_plugin_close(struct mg_lua *vm, uint64_t now_ns, bool error);

#endif
