/*
 * A worker: one libuv loop on one thread, with its own listeners (SO_REUSEPORT),
 * its own upstream connection pools and its own buffer free lists. Nothing here is
 * shared with another worker, so nothing here takes a lock.
 */
#ifndef MG_WORKER_H
#define MG_WORKER_H

#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "config/config-t.h"

#define MG_BUF_SIZE (32 * 1024)

struct mg_upconn;
struct mg_conn;
struct mg_wreq;

/* Per-worker runtime state of one target: its idle connection pool. */
struct mg_target_rt {
    const struct mg_target_conf *conf;
    struct mg_upconn *idle;    /* LIFO list of idle pooled connections */
    uint32_t nidle;
    uint32_t pool_limit;       /* the upstream's `keepalive` */
    int32_t rr_current;        /* smooth weighted round robin state */
    uint32_t active;           /* exchanges using this target now */
};

struct mg_upstream_rt {
    const struct mg_upstream_conf *conf;
    struct mg_target_rt *targets; /* conf->ntargets entries */
};

struct mg_listener {
    uv_tcp_t tcp;
    struct mg_worker *w;
};

struct mg_worker {
    int id;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup;         /* other threads ask this worker to stop */
    atomic_int stop_requested; /* 1: graceful stop, 2: immediate */
    struct mg_config *cfg;     /* one reference held */
    struct mg_upstream_rt *ups; /* cfg->nupstreams entries */
    struct mg_listener *listeners;
    size_t nlisteners;
    bool draining;
    uv_timer_t drain_timer;

    uint32_t nconns;           /* client connections open */
    struct mg_conn *conns;     /* all client connections (for drain) */
    uint64_t conn_serial;      /* upstream connection numbering, for logs */
    uint64_t rand_state;       /* xorshift state for request ids */

    void *free_bufs;           /* free list of MG_BUF_SIZE read buffers */
    uint32_t nfree_bufs;
    struct mg_wreq *free_wreqs;
};

/* Creates the worker's loop and listeners (fds shared in from main when given).
 * Returns 0 or a negative UV_E* after logging the reason. */
int mg_worker_init(struct mg_worker *w, int id, struct mg_config *cfg);
/* Runs the loop until the worker has stopped; frees everything it owns. */
void mg_worker_run(struct mg_worker *w);
/* Thread-safe: asks the worker to drain (graceful) or to stop at once. */
void mg_worker_request_stop(struct mg_worker *w, bool immediate);

char *mg_worker_buf_get(struct mg_worker *w);
void mg_worker_buf_put(struct mg_worker *w, char *buf);
struct mg_target_rt *mg_worker_target(struct mg_worker *w, const struct mg_upstream_conf *u,
                                      size_t target_index);
/* Called by the connection code when a client connection is gone, so a draining
 * worker can finish. */
void mg_worker_conn_closed(struct mg_worker *w);

#endif
