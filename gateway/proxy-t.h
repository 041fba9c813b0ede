/*
 * Private to the proxy (proxy.c, proxy_idem.c): the client connection, the
 * exchange it carries and its states, and the few proxy.c functions the
 * idempotency phase (proxy_idem.c) calls back into.
 */
#ifndef MG_PROXY_T_H
#define MG_PROXY_T_H

#include <llhttp.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include "balancer-t.h"
#include "core/arena.h"
#include "core/deadline.h"
#include "core/errors.h"
#include "http/body.h"
#include "http/headscan.h"
#include "http/message.h"
#include "lua/vm.h"
#include "proxy_idem.h"
#include "resilience/registry-t.h"

#define MG_MAX_HEADERS       100
#define MG_MAX_RESPONSE_HEAD (64 * 1024)
#define MG_WREQ_MAX_BUFS     24
#define MG_REQUEST_ID_MAX    200
/* Request bodies up to this size are kept so a failed try can be repeated. */
#define MG_RETRY_BODY_MAX (64 * 1024)

enum { MG_NEXT = 0, MG_AGAIN = 1 };

/* One uv_write: a list of buffers that may point into the arena (heads) and into
 * one pinned read buffer (bodies), plus room for chunk-size lines. */
struct mg_wreq {
    uv_write_t req;
    struct mg_wreq *next_free;
    struct mg_conn *conn;     /* the exchange's connection */
    struct mg_upconn *dst_up; /* destination when writing upstream, else NULL */
    struct mg_upconn *pin_up; /* upstream read buffer referenced, or NULL */
    bool pins_conn;           /* client read buffer referenced */
    unsigned nbufs, nscratch;
    uv_buf_t bufs[MG_WREQ_MAX_BUFS];
    char scratch[MG_WREQ_MAX_BUFS / 3 + 1][20];
};

enum { MG_UPT_NONE, MG_UPT_SEND, MG_UPT_READ };

/* The states of an exchange; advance() is the only function that changes them. */
enum mg_x_state {
    MG_X_IDLE,    /* no request byte yet; arena empty; keep-alive timer runs */
    MG_X_HEAD,    /* request head arriving: scanned and copied into x->head */
    MG_X_BUFFER,  /* idempotency: the body is read into x->body_copy and hashed */
    MG_X_LOOKUP,  /* idempotency: waiting for the store's answer about the key */
    MG_X_QUEUED,  /* routed; waiting in the upstream's bulkhead queue (c->wait runs) */
    MG_X_CONNECT, /* bulkhead slot held; x->up, if set, is connecting */
    MG_X_BACKOFF, /* a try failed and a retry waits for its backoff (c->wait runs) */
    MG_X_FORWARD, /* x->up connected: request flows up, response flows down */
    MG_X_TUNNEL,  /* 101 Switching Protocols: raw bytes both ways until a close */
    MG_X_COMMIT,  /* idempotency: response queued but its end held back until the
                     store has kept (or released) the key, so a client that has the
                     whole response and retries always meets the stored record */
    MG_X_FINISH,  /* response fully queued; waits for client writes, then next or close */
};

struct mg_exchange {
    enum mg_x_state state;
    struct mg_arena arena;
    struct mg_runtime *rt; /* the config it started on; held from head to end */

    /* Request head, copied from the read buffer; slices below point into it. */
    char *head;
    size_t headlen, headcap;
    struct mg_headscan scan;
    struct mg_slice url, path;
    struct mg_headers req_hdrs;
    int method;
    bool head_parsed; /* method, version and headers are known */
    uint8_t http_minor;
    uint64_t req_content_length;
    bool req_chunked;    /* request body is chunked */
    bool req_has_length; /* a Content-Length field (its value may be 0) */
    bool req_keepalive;  /* client asked to keep the connection */
    bool req_upgrade;    /* Upgrade requested (WebSocket) */
    bool req_expect_continue;
    bool req_done; /* request message fully parsed */
    bool continue_sent;
    uint64_t req_body_bytes;
    struct mg_body req_body; /* request body framing, decoded by the gateway */
    int host_idx, rid_idx, xff_idx;
    struct mg_slice authority; /* absolute-form target's host: overrides Host */
    char request_id[MG_REQUEST_ID_MAX + 1];

    const struct mg_route_conf *route;
    size_t prefix_len;
    /* Resilience (DESIGN.md section 5). */
    bool slot_held;        /* one bulkhead slot, kept across retries */
    uint32_t attempts;     /* tries started */
    struct mg_tried tried; /* targets tried, for retries to avoid */
    bool attempt_open;     /* counted in the target's in-flight */
    bool attempt_reported; /* the breaker heard this try's outcome */
    uint32_t probe;        /* breaker half-open ticket of this try */
    uint64_t attempt_start_ns;
    uint32_t retry_after_s; /* for 503 answers */
    char *body_copy;        /* the request body, kept for retries while small */
    size_t body_copy_len, body_copy_cap;
    bool body_copy_ok; /* body_copy holds the whole body so far */
    struct mg_target_rt *target;
    struct mg_upconn *up; /* leased upstream connection, or NULL */
    bool up_ready;        /* connected and request head queued */
    bool up_eof;          /* tunnel: the upstream closed its side */

    /* Response head from the upstream, copied; slices point into it. */
    char *resp_head;
    size_t resp_headlen, resp_headcap;
    bool resp_head_done;
    struct mg_slice reason;
    struct mg_headers resp_hdrs;
    int status;
    bool resp_started;        /* bytes of the final response reached the client queue */
    bool resp_flushed;        /* ... and were handed to the socket: no taking back */
    bool resp_done;           /* the final response is fully queued */
    bool resp_chunk_out;      /* we chunk-encode the body to the client */
    bool resp_keepalive;      /* the upstream's connection options allow reuse */
    bool resp_upgrade;        /* a 101 with Upgrade (llhttp's view) */
    bool resp_has_length;     /* a Content-Length field */
    uint64_t resp_length;     /* its value */
    struct mg_body resp_body; /* response body framing, decoded by the gateway */
    uint8_t up_timer;         /* MG_UPT_*: what the upstream timer guards now */
    uint32_t up_writes;       /* writes pending on the upstream socket */
    bool close_after;         /* close the client connection after this exchange */
    bool up_reusable;         /* the upstream connection may go back to its pool */
    enum mg_error error;
    /* Lua plugins (DESIGN.md section 6). */
    struct mg_lua_ctx lua; /* what plugins see and set; valid once lua_ready */
    bool lua_ready;
    /* Observability. */
    uint64_t started_ns; /* first byte of the request */
    uint64_t bytes_out;  /* queued to the client */
    int sent_status;     /* status of the final response sent, 0 = none */
    bool in_flight_counted;
    /* Idempotency-Key deduplication (proxy_idem.c). */
    struct mg_px_idem idem;
};

struct mg_conn {
    uv_tcp_t tcp;
    struct mg_deadline timer;    /* keep-alive, header and body timeouts */
    struct mg_deadline deadline; /* the route's overall deadline */
    uv_timer_t wait;             /* bulkhead queue timeout, retry backoff */
    struct mg_waiter waiter;     /* in the upstream's bulkhead queue (state QUEUED) */
    struct mg_worker *w;
    struct mg_conn *next, *prev; /* worker's connection list */
    char *buf;                   /* read buffer (MG_BUF_SIZE) or NULL when idle */
    size_t start, end;           /* unparsed bytes are buf[start..end) */
    uint32_t pins;               /* upstream writes pointing into buf */
    uint32_t writes;             /* writes pending on the client socket */
    unsigned handles_open;
    bool reading, closing, eof;
    bool flushed_now;                    /* a write completed synchronously: states may move on */
    bool counted;                        /* in the connections gauge */
    llhttp_t parser;                     /* request parser, re-initialised per request */
    struct mg_wreq *out_client, *out_up; /* writes being assembled */
    char client_ip[64];
    struct mg_exchange x;
};

/* For proxy.c's upstream request head and bodies; response heads are written
 * by http/writer.h. */
#define PUT_LIT(o, s) (memcpy((o), (s), sizeof(s) - 1), (o) += sizeof(s) - 1)
#define PUT(o, p, n)  (memcpy((o), (p), (n)), (o) += (n))

/* proxy.c functions the idempotency phase (proxy_idem.c) calls. */
/* Appends p[0..n) to the arena buffer *buf (growing it by doubling, up to
 * limit). Returns 0, or -1 when it would pass limit (nothing appended). */
int mg_px_append(struct mg_arena *a, char **buf, size_t *len, size_t *cap, const char *p, size_t n,
                 size_t limit);
void mg_px_advance(struct mg_conn *c);
void mg_px_fail(struct mg_conn *c, enum mg_error err, const char *why);
/* Queues arena, static or record bytes for the client (nothing pinned). */
void mg_px_to_client(struct mg_conn *c, const void *p, size_t len);
/* Whether a plugin's header edits name this header. */
bool mg_px_header_edited(const struct mg_lua_edit *e, struct mg_slice name);
struct mg_metrics *mg_px_metrics(struct mg_conn *c);

#endif
