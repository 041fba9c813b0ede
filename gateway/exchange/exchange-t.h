/*
 * The exchange: one request and its response, whatever codec carried the request
 * and whatever connection carries its tries. Types only; exchange.h has the
 * functions.
 *
 * Layers (docs/architecture.md): a connection (conn/) owns a transport and a
 * downstream codec (conn/h1server.c today, HTTP/2 later) that produces
 * exchanges; the exchange (exchange.c, the only code that assigns x->state)
 * owns its attempts (attempt.c), each of which leases an upstream connection
 * from a pool (upstream/pool.c) and speaks to it through an upstream codec
 * (upstream/h1client.c). The exchange calls down through two ops tables (the
 * downstream's and the upstream's); what happens below reaches it as events
 * (mg_exchange_event) or as the verdicts of the calls it makes.
 */
#ifndef MG_EXCHANGE_T_H
#define MG_EXCHANGE_T_H

#include <llhttp.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "upstream/balancer-t.h"
#include "core/arena.h"
#include "core/deadline.h"
#include "core/errors.h"
#include "exchange/idem-t.h"
#include "http/body.h"
#include "http/headscan.h"
#include "http/message.h"
#include "lua/ctx-t.h"
#include "lua/task-t.h"
#include "resilience/registry-t.h"

#define MG_MAX_RESPONSE_HEAD (64 * 1024)
#define MG_REQUEST_ID_MAX    200
/* Request bodies up to this size are kept so a failed try can be repeated. */
#define MG_RETRY_BODY_MAX (64 * 1024)

/* What a step or a helper tells the state machine. */
enum { MG_NEXT = 0, MG_AGAIN = 1 };

/* The states of an exchange; exchange.c is the only code that assigns them. */
enum mg_x_state {
    MG_X_IDLE,    /* no request byte yet; arena empty; keep-alive timer runs */
    MG_X_HEAD,    /* request head arriving: the codec scans and copies it */
    MG_X_PLUGIN,  /* an access-phase plugin waits for its I/O (x->lua_task) */
    MG_X_BUFFER,  /* idempotency: the body is read into x->body_copy and hashed */
    MG_X_LOOKUP,  /* idempotency: waiting for the store's answer about the key */
    MG_X_QUEUED,  /* routed; waiting in the upstream's bulkhead queue (x->wait runs) */
    MG_X_CONNECT, /* bulkhead slot held; the attempt, if open, is connecting */
    MG_X_BACKOFF, /* a try failed and a retry waits for its backoff (x->wait runs) */
    MG_X_FORWARD, /* the attempt's connection is ready: request up, response down */
    MG_X_TUNNEL,  /* 101 Switching Protocols: raw bytes both ways until a close */
    MG_X_COMMIT,  /* idempotency: response queued but its end held back until the
                     store has kept (or released) the key, so a client that has the
                     whole response and retries always meets the stored record */
    MG_X_FINISH,  /* response fully queued; waits for client writes, then next or close */
};

/* What the timer of an attempt's upstream connection guards now. */
enum { MG_UPT_NONE, MG_UPT_SEND, MG_UPT_READ };

struct mg_exchange;
struct mg_upconn;
struct mg_rbuf;
struct mg_loopctx;
struct mg_runtime;
struct mg_target_rt;
struct mg_upconn_ops;
struct mg_transport;

/* One try of an exchange against one target. An exchange owns its attempts;
 * today it runs one at a time, and hedging will make that a policy. */
struct mg_attempt {
    struct mg_exchange *x;
    struct mg_target_rt *target;
    struct mg_upconn *up;               /* leased connection, or NULL */
    const struct mg_upconn_ops *events; /* how the connection reports to the try */
    uint64_t start_ns;
    uint32_t probe;  /* breaker half-open ticket of this try */
    bool open;       /* counted in the target's in-flight */
    bool reported;   /* the breaker heard this try's outcome */
    bool ready;      /* connected and the request head queued */
    bool closed;     /* the upstream closed its side (or the connection broke) */
    int read_error;  /* what ended it: UV_EOF or another UV_E* */
    bool reading;    /* the connection is being read */
    uint8_t timer;   /* MG_UPT_*: what the connection's timer guards now */
    bool head_done;  /* the response head (the final one) is parsed */
    bool reusable;   /* the connection may go back to its pool */
    bool keepalive;  /* the upstream's connection options allow reuse */
    bool try_cut;    /* the armed timer is what is left of timeouts.per_try */
    llhttp_t parser; /* response heads (upstream/h1client.c) */
    struct mg_headscan scan;
    /* This try's response head as it arrives, in the exchange's arena: a
     * hedge and the first try may each have part of a head at once, so each
     * gathers its own; the complete one becomes x->resp_head. */
    char *head;
    size_t headlen, headcap;
    struct mg_body body; /* response body framing, decoded by the gateway */
};

/* Events from below (the downstream codec, timers, the store, the pool). */
enum mg_exchange_event {
    MG_XEV_RUN,            /* something moved (bytes in, a write done): run the steps */
    MG_XEV_CLIENT_TIMEOUT, /* the codec's head or body timer fired */
    MG_XEV_DRAIN_TIMEOUT,  /* the worker's drain_timeout ran out: answer, then close */
};

/* The downstream codec, as the exchange uses it. Every function takes the
 * exchange the codec made; none changes x->state. */
struct mg_downstream_ops {
    /* MG_NEXT once the request head is read, parsed and checked (x->error set
     * when it was refused), MG_AGAIN while more bytes are needed. */
    int (*read_head)(struct mg_exchange *x);
    /* Request bytes are waiting (a request has begun to arrive). */
    bool (*has_request)(struct mg_exchange *x);
    /* The next decoded request body bytes that arrived (mg_body_feed's result:
     * DATA with *d pinned by *pin, MORE, DONE, or an error). */
    enum mg_body_result (*read_body)(struct mg_exchange *x, struct mg_slice *d,
                                     struct mg_rbuf **pin);
    /* Tunnel: the raw client bytes that arrived (consumed), pinned by *pin. */
    struct mg_slice (*read_raw)(struct mg_exchange *x, struct mg_rbuf **pin);
    void (*send_continue)(struct mg_exchange *x);
    /* An upstream's informational response (x->status 102..199 but 101,
     * x->reason, x->resp_hdrs marked hop-by-hop) before the final one; the
     * codec passes it on when its client can take it. NULL: dropped. */
    void (*send_interim)(struct mg_exchange *x);
    /* The proxied response head (x->status, x->resp_hdrs, plugin edits), the
     * framing towards the client chosen from x->resp_kind. */
    void (*send_head)(struct mg_exchange *x, bool switching);
    void (*send_body)(struct mg_exchange *x, struct mg_slice d, struct mg_rbuf *pin);
    void (*send_end)(struct mg_exchange *x);
    void (*send_raw)(struct mg_exchange *x, struct mg_slice d, struct mg_rbuf *pin);
    /* A whole response the gateway makes: a JSON error, or one of `n` fields
     * and a body (plugin-made, replayed). */
    void (*send_error)(struct mg_exchange *x, enum mg_error err);
    void (*send_response)(struct mg_exchange *x, int status, const struct mg_header *fields,
                          uint32_t n, struct mg_slice body, bool via);
    /* Takes back a response queued but not yet handed to the transport: true
     * when no response is under way any more. */
    bool (*unsend)(struct mg_exchange *x);
    /* Sends what is queued; true when something was written at once (states
     * waiting on the client may move on). A failed write closes. */
    bool (*flush)(struct mg_exchange *x);
    /* Nothing is queued or in flight towards the client. */
    bool (*drained)(struct mg_exchange *x);
    /* The client closed its side (or the connection broke). */
    bool (*eof)(struct mg_exchange *x);
    /* No write in flight points into the client's read buffer. */
    bool (*unpinned)(struct mg_exchange *x);
    /* Reading from the client resumes or pauses as the exchange can take it. */
    void (*update_reading)(struct mg_exchange *x);
    /* The exchange is over and reset: wait for the next request. */
    void (*idle)(struct mg_exchange *x);
    /* Close the connection (a response cut short, a tunnel ended, no reuse). */
    void (*close)(struct mg_exchange *x);
};

/* The upstream side, as the exchange uses it: the pool and the HTTP/1 client
 * codec behind one table, so tests can put fakes there. */
struct mg_upstream_ops {
    /* Leases a connection for a: 0 with *ready (pooled) or connecting (the
     * attempt's on_connect follows), or a UV_E* (nothing follows). */
    int (*acquire)(struct mg_attempt *a, uint64_t connect_timeout_ms, bool *ready);
    /* Queues the request head and what is kept of the body (a retry's copy,
     * or the idempotency buffer); starts reading the response. */
    void (*start)(struct mg_attempt *a);
    void (*send_body)(struct mg_attempt *a, struct mg_slice d, struct mg_rbuf *pin);
    void (*send_end)(struct mg_attempt *a);
    void (*send_raw)(struct mg_attempt *a, struct mg_slice d, struct mg_rbuf *pin);
    /* 1 when queued bytes were all written at once, 0 when none were queued or
     * some are in flight, or a UV_E* when they could not be written. */
    int (*flush)(struct mg_attempt *a);
    /* The next thing the response holds (see enum mg_resp_event). */
    int (*read)(struct mg_attempt *a, struct mg_slice *d, struct mg_rbuf **pin);
    struct mg_slice (*read_raw)(struct mg_attempt *a, struct mg_rbuf **pin);
    /* Writes to the upstream in flight. */
    uint32_t (*writes)(struct mg_attempt *a);
    /* Nothing is queued or in flight towards the upstream. */
    bool (*drained)(struct mg_attempt *a);
    /* The read buffer has room (not full of bytes pinned by client writes). */
    bool (*has_room)(struct mg_attempt *a);
    void (*set_reading)(struct mg_attempt *a, bool on);
    void (*set_timeout)(struct mg_attempt *a, uint64_t ms);
    /* Ends the lease: back to the pool when `reuse` and the exchange ended
     * cleanly, else closed. */
    void (*release)(struct mg_attempt *a, bool reuse);
};

/* What upstream_ops.read found. */
enum mg_resp_event {
    MG_RESP_MORE,    /* all bytes consumed: wait for more */
    MG_RESP_INTERIM, /* a 1xx (not 101) head is in x until the next read */
    MG_RESP_HEAD,    /* a final head is in x (status, fields, x->resp_kind) */
    MG_RESP_DATA,    /* body bytes in *d, pinned by *pin */
    MG_RESP_END,     /* the response ended (a->reusable says if the connection may be kept) */
    MG_RESP_ERROR,   /* malformed: *d holds the reason (static text) */
};

struct mg_exchange {
    /* Kept across the requests of a connection (set by mg_exchange_init). */
    enum mg_x_state state;
    struct mg_arena arena;
    struct mg_loopctx *ctx; /* the loop it runs on (loopctx.h) */
    const struct mg_downstream_ops *down;
    const struct mg_upstream_ops *upstream;
    const char *client_ip;
    bool secure; /* the client speaks TLS (X-Forwarded-Proto: https) */
    bool h2;     /* the codec is HTTP/2 (ctx.protocol "h2") */
    /* The client's transport, set by the codec: what its TLS handshake found
     * (mg_tls_info) for plugins and the access log. NULL in unit tests. */
    const struct mg_transport *client;
    struct mg_deadline deadline;              /* the route's overall deadline */
    uv_timer_t wait;                          /* bulkhead queue timeout, retry backoff */
    struct mg_waiter waiter;                  /* in the upstream's bulkhead queue (state QUEUED) */
    unsigned handles_open;                    /* deadline + wait until their close callbacks ran */
    bool closing;                             /* the connection is going: touch nothing below */
    void (*on_closed)(struct mg_exchange *x); /* both handles closed: memory may go */

    /* One request: everything from here is zeroed when the exchange is reset. */
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
    bool req_done; /* request message fully read */
    bool continue_sent;
    uint64_t req_body_bytes;
    int host_idx, rid_idx;
    struct mg_slice authority; /* absolute-form target's host: overrides Host */
    /* The real client address from trusted X-Forwarded-For hops
     * (http/forwarded.h); "" when it is client_ip. Read it through
     * mg_x_client_ip. */
    char real_ip[48];
    char request_id[MG_REQUEST_ID_MAX + 1];

    const struct mg_route_conf *route;
    const struct mg_upstream_conf *ups; /* the route's, or the one ctx:set_upstream() chose */
    bool plug_body; /* MG_X_BUFFER reads the body for plugins (P.body), then access runs */
    bool filtering; /* P.body_filter rewrites the response body: sent chunked (or close) */
    size_t prefix_len;
    /* Resilience (DESIGN.md section 5). */
    bool slot_held;         /* one bulkhead slot, kept across retries */
    uint32_t attempts;      /* tries started */
    struct mg_tried tried;  /* targets tried, for retries to avoid */
    struct mg_attempt att;  /* the current try */
    uint32_t retry_after_s; /* for 503 answers */
    char *body_copy;        /* the request body, kept for retries while small */
    size_t body_copy_len, body_copy_cap;
    bool body_copy_ok; /* body_copy holds the whole body so far */

    /* Hedging (exchange/hedge.c; DESIGN.md section 10.7). */
    struct mg_attempt *hedge; /* a hedged try racing att, or NULL */
    uint8_t hedges;           /* hedges sent */
    bool hedge_timer;         /* x->wait runs the hedge delay */
    bool hedge_head;          /* the hedge won: its head, in x, awaits response_head */
    uint64_t raced_ns;        /* start of the try a hedge races (hedge.after: pNN samples) */

    /* Response head from the upstream, copied; slices point into it. */
    char *resp_head;
    size_t resp_headlen, resp_headcap;
    struct mg_slice reason;
    struct mg_headers resp_hdrs;
    int status;
    bool resp_upgrade;    /* a 101 with Upgrade (llhttp's view) */
    bool resp_has_length; /* a Content-Length field */
    uint64_t resp_length; /* its value */
    uint8_t resp_kind;    /* enum mg_body_kind of the response body */
    bool resp_started;    /* bytes of the final response reached the client queue */
    bool resp_done;       /* the final response is fully queued */
    bool close_after;     /* close the client connection after this exchange */
    enum mg_error error;
    /* Lua plugins (DESIGN.md section 6). */
    struct mg_lua_ctx lua; /* what plugins see and set; valid once lua_ready */
    bool lua_ready;
    unsigned plug_caps;          /* mg_lua_route_caps() of the route, set when routed */
    struct mg_lua_task lua_task; /* the access or log phase while a plugin waits */
    /* Observability. */
    uint64_t started_ns; /* first byte of the request */
    uint64_t bytes_out;  /* queued to the client */
    int sent_status;     /* status of the final response sent, 0 = none */
    bool in_flight_counted;
    /* Idempotency-Key deduplication (exchange/idem.c). */
    struct mg_x_idem idem;
};

/* How a downstream codec drives the exchanges it makes: handed to it by the
 * code that wires codecs to the exchange layer (worker.c), so the codec never
 * calls the layer above it by name. */
struct mg_exchange_hooks {
    /* Readies x (zeroed memory) to run on ctx's loop: its arena, timers and ops. */
    void (*init)(struct mg_exchange *x, struct mg_loopctx *ctx,
                 const struct mg_downstream_ops *down, const char *client_ip,
                 void (*on_closed)(struct mg_exchange *x));
    void (*event)(struct mg_exchange *x, enum mg_exchange_event ev);
    /* The connection is going: the exchange lets go of everything below it and
     * closes its timers; on_closed follows once they are closed. */
    void (*close)(struct mg_exchange *x);
    /* Frees the arena (after on_closed). */
    void (*destroy)(struct mg_exchange *x);
};

/* The client address of the request (DESIGN.md section 10.8): for plugins,
 * logs, `ip` keys and X-Forwarded-For replace. */
static inline const char *mg_x_client_ip(const struct mg_exchange *x)
{
    return x->real_ip[0] ? x->real_ip : x->client_ip;
}

/* The host the request names: the absolute-form authority, else Host. */
static inline struct mg_slice mg_x_request_host(const struct mg_exchange *x)
{
    if (x->authority.len)
        return x->authority;
    return x->host_idx >= 0 ? x->req_hdrs.v[x->host_idx].value : (struct mg_slice){NULL, 0};
}

#endif
