/*
 * The per-request context that the proxy hands to the Lua plugin runtime
 * (DESIGN.md section 6: the `ctx` of plugins).
 *
 * Ownership: the proxy owns the struct (it lives in the exchange) and every
 * input pointer in it; inputs are slices that must stay valid while a phase
 * runs (mg_lua_run / mg_lua_balance), never longer. Outputs (header edits, the
 * respond slot) are allocated by the runtime from `arena`, the exchange's
 * arena, so they live exactly as long as the request and cost no malloc on
 * the hot path. Fields under "private" belong to the runtime.
 *
 * Lifecycle: mg_lua_ctx_init() once per request before its first phase, fill
 * the inputs, run phases, then mg_lua_ctx_done() on the VM the request started
 * on (this returns the request's ctx.vars to the VM's pool).
 */
#ifndef MG_LUA_CTX_T_H
#define MG_LUA_CTX_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mg_arena;
struct mg_upstream_conf;
struct mg_lua;

/* A byte slice; p == NULL means "absent" (a Lua nil), which differs from "". */
struct mg_lua_str {
    const char *p;
    size_t len;
};

struct mg_lua_header {
    struct mg_lua_str name, value;
};

/* One header edit. A set or a removal (append false) replaces every earlier
 * edit of that name (compared case-insensitively); ctx:add_header() appends an
 * edit with append true (Set-Cookie: repeated names survive). Apply a list as:
 * drop every original header whose name has an edit with append false, then
 * append the edits whose value.p != NULL, in list order.
 * Names are tokens and values have no CR, LF or NUL (checked when set); the
 * framing and hop-by-hop headers (Content-Length, Transfer-Encoding,
 * Connection, Keep-Alive, TE, Trailer, Upgrade, Proxy-Connection) are refused. */
struct mg_lua_edit {
    struct mg_lua_edit *next;
    struct mg_lua_str name;
    struct mg_lua_str value; /* p == NULL: remove the header */
    bool append;             /* added beside the originals (never with value.p NULL) */
};

/* Filled by ctx:respond(status, body, headers) in the access phase. */
struct mg_lua_respond {
    int status;                  /* 0: no plugin responded; else 200..599 */
    struct mg_lua_str body;      /* p == NULL: no body */
    struct mg_lua_edit *headers; /* as given (value.p never NULL); no Content-Length:
                                    the proxy frames the body itself */
};

struct mg_lua_ctx {
    /* ---- inputs: the request, set before the first phase ---- */
    struct mg_lua_str method;                /* "GET" */
    struct mg_lua_str path;                  /* as received, without the query */
    struct mg_lua_str query;                 /* after '?', p == NULL when there is no '?' */
    struct mg_lua_str client_ip;             /* textual peer address */
    struct mg_lua_str route;                 /* route name from the config */
    struct mg_lua_str request_id;            /* the id the gateway sends upstream and returns */
    struct mg_lua_str protocol;              /* "http/1.0", "http/1.1" or "h2" */
    const struct mg_lua_header *req_headers; /* as received (hop-by-hop may be included) */
    size_t n_req_headers;
    /* Bytes from one header to the next in req_headers / resp_headers; 0 means
     * sizeof(struct mg_lua_header). Lets the proxy hand its own header array
     * (a struct that starts with the same two slices) without a copy. */
    uint16_t req_header_stride, resp_header_stride;
    /* ctx.tls: p == NULL for tls_protocol means a plain connection (ctx.tls is
     * nil); the others may be absent on a TLS one (no SNI, no client cert). */
    struct mg_lua_str tls_protocol, tls_cipher, tls_sni, tls_client_subject;

    /* ---- inputs: set before the response and log phases ---- */
    int status; /* response: upstream status; log: status sent; 0: none */
    const struct mg_lua_header *resp_headers;
    size_t n_resp_headers;
    struct mg_lua_str upstream_address; /* the target that answered; p == NULL: none */
    double latency;                     /* seconds (response: to the upstream head; log: whole
                                           request); < 0: unknown (Lua nil) */

    /* ---- lazy inputs ---- */
    /* When set, the runtime calls fill(ctx, fill_data) once, before the first
     * FFI function reads or edits the request, and clears it; the request
     * inputs above may stay unset until then. A phase that never looks at the
     * request (an empty plugin, most balancers) then costs no set-up. */
    void (*fill)(struct mg_lua_ctx *ctx, void *data);
    void *fill_data;

    /* ---- output memory: the exchange's arena (must be set before any phase) ---- */
    struct mg_arena *arena;

    /* ---- outputs ---- */
    struct mg_lua_edit *req_edits;  /* apply when building the upstream head */
    struct mg_lua_edit *resp_edits; /* apply to whatever response is sent */
    struct mg_lua_respond respond;  /* status != 0 after MG_LUA_RESPONDED */
    /* Routing control (access phase; ctx_ext.c). new_path.p == NULL: unchanged;
     * query_set: new_query replaces the query (p == NULL: none). */
    struct mg_lua_str new_path, new_query;
    bool query_set;
    const struct mg_upstream_conf *upstream; /* ctx:set_upstream(); NULL: the route's */
    int balance_refused;                     /* balance returned nil, STATUS */
    /* Request body (P.body): `body` is the buffered body, set by the proxy
     * before the access phase (p == NULL: not buffered); ctx:set_body() puts
     * the replacement in new_body (body_set). */
    struct mg_lua_str body, new_body;
    bool body_set;
    uint32_t filtered_bytes; /* body_filter output kept in the arena (capped) */

    /* ---- private to the runtime ---- */
    struct mg_lua *vm;   /* the VM this request is bound to (NULL: none yet) */
    uint32_t slot;       /* its ctx object / ctx.vars in that VM; 0: none */
    uint32_t edit_bytes; /* bytes copied into edits, capped per request */
};

#endif
