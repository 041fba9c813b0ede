/*
 * Connections to upstream targets and the per-worker, per-target pools that keep
 * them alive between requests.
 *
 * An upstream connection is either idle in its target's pool (owner == NULL,
 * reading only to notice a close), leased to one owner (an exchange's attempt,
 * a plugin's gw.http.request call (lua/http_client.c); a health check or a
 * hedged try could lease one the same way), or closing. It owns its
 * transport, its read buffer and its write queue; the owner hears of it only
 * through the ops it gave at acquire. Pool and connection objects are malloc'd, never arena memory:
 * they outlive exchanges. The memory is freed only when the transport and the timer are closed, no
 * write points into the read buffer and no write of its own is in flight.
 */
#ifndef MG_UPSTREAM_POOL_H
#define MG_UPSTREAM_POOL_H

#include <stdbool.h>
#include <uv.h>

#include "core/deadline.h"
#include "net/tcp.h"
#include "loopctx.h"
#include "net/wq.h"

/* Idle pooled connections are closed after this long, as nginx's upstream
 * keepalive_timeout default; upstreams commonly close at 60-75 s. */
#define MG_UPSTREAM_IDLE_TIMEOUT_MS 55000
/* `keepalive` is how many idle connections a target's pool keeps for the idle
 * timeout. Under load more are idle for moments between two requests; closing
 * them at once would make every burst above `keepalive` concurrent requests pay
 * for new connections (measured: 14% of requests at 256 client connections).
 * Such surplus connections are pooled too, but close after this much idleness,
 * so the pool shrinks back to `keepalive` a second after a burst. */
#define MG_UPSTREAM_SURPLUS_IDLE_MS 1000

struct mg_upconn;

/* How a leased connection reports to whoever leased it: set at acquire, called
 * only while the lease lasts, never by name. Each may release or close u. */
struct mg_upconn_ops {
    void (*on_connect)(struct mg_upconn *u, int status); /* once, if not pooled */
    void (*on_read)(struct mg_upconn *u, ssize_t nread); /* bytes in u->in, or EOF/error */
    void (*on_timeout)(struct mg_upconn *u);             /* the owner's timer fired */
    void (*on_unpinned)(struct mg_upconn *u);            /* no write points into u->in now */
    void (*on_written)(struct mg_upconn *u, int status); /* a queued write completed */
};

struct mg_upconn {
    struct mg_tcp tcp;        /* the socket */
    struct mg_transport *tr;  /* what is spoken over it: &tcp.t, or a TLS stream */
    struct mg_rbuf in;        /* what the upstream sent */
    struct mg_wq out;         /* what goes to the upstream */
    struct mg_deadline timer; /* connect/read timeout while leased, idle timeout in pool */
    uv_connect_t connect_req;
    struct mg_loopctx *ctx; /* the loop's: read buffers, ids, the drain flag */
    struct mg_target_rt *target;
    void *owner;                     /* who leases it; NULL when idle */
    const struct mg_upconn_ops *ops; /* the owner's callbacks, with owner */
    struct mg_upconn *next_idle;
    uint64_t serial;
    uint64_t idle_since;   /* loop time it joined the pool */
    uint32_t requests;     /* exchanges served, for logs */
    unsigned handles_open; /* tcp + timer until their close callbacks ran */
    bool connected;
    bool closing;
    bool reading;
    bool parked;    /* released while pinned: joins the pool when unpinned */
    int counted_as; /* enum mg_conn_state in the connections gauge, -1 = none */
};

/* Leases a connection to `target` for `owner`, who hears of it through `ops`. A
 * pooled idle one is returned with *reused = true and is ready at once;
 * otherwise a connect starts and ops->on_connect fires later, exactly once,
 * unless the connection is closed first. Returns 0, or a negative UV_E* when the
 * connect could not even start (no callback then). */
int mg_upconn_acquire(struct mg_loopctx *ctx, struct mg_target_rt *target, void *owner,
                      const struct mg_upconn_ops *ops, uint64_t connect_timeout_ms,
                      struct mg_upconn **out, bool *reused);
/* Returns a leased connection to its pool (or closes it when it cannot be kept). */
void mg_upconn_release(struct mg_upconn *u);
/* Closes the connection; memory goes when handles are closed and pins are 0. */
void mg_upconn_close(struct mg_upconn *u);
/* Starts or stops reading; reads land in u->in and go to the owner. */
void mg_upconn_set_reading(struct mg_upconn *u, bool on);
/* Arms the connection's timer for the owner (0 stops it). */
void mg_upconn_set_timeout(struct mg_upconn *u, uint64_t ms);
/* Moves idle connections to the same address into a new runtime's pool (reload);
 * what does not fit stays in `from`. */
void mg_upconn_move_idle(struct mg_target_rt *from, struct mg_target_rt *to);
/* Closes every idle pooled connection of a target (drain, reload). */
void mg_upconn_close_idle(struct mg_target_rt *t);

#endif
