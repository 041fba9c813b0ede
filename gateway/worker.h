/*
 * A worker: one libuv loop on one thread, with its own listeners (SO_REUSEPORT),
 * its own upstream connection pools and its own buffer free lists. Nothing here is
 * shared with another worker, so nothing here takes a lock. The layers below it
 * (connections, exchanges, pools) know only its loop context (loopctx.h), which
 * the worker embeds, and tell the worker what it must hear through its ops.
 *
 * Configuration reload: the main thread hands each worker a new snapshot through
 * `pending_cfg` and wakes it. The worker builds a new runtime (pools, balancer
 * state) for it and retires the old one. Exchanges hold the runtime they started
 * on (a worker-local count, no atomics), so requests in flight finish on the
 * config they started with; the retired runtime and its snapshot reference are
 * freed when its last exchange ends.
 */
#ifndef MG_WORKER_H
#define MG_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config-t.h"
#include "loopctx.h"

struct mg_health;
struct mg_metrics;

/* What a reload hands each worker: the snapshot and its metrics generation. */
struct mg_generation {
    struct mg_config *cfg;
    struct mg_metrics *metrics;
    struct mg_lua *lua; /* made for this worker on the main thread (loading
                           plugins blocks on files), owned by the receiver */
    struct mg_lua_metrics *lua_metrics;
};
struct mg_lua_metrics;
struct mg_lua;
struct mg_idem_client;
struct mg_idem_memtable;
struct mg_lua_target;

/* A listening socket. Accepted with accept4 on readiness (uv_poll), not uv_listen:
 * on EMFILE/ENFILE accepting pauses for a moment and the kernel keeps the queue
 * (libuv's own accept loop spins or drops connections then). */
struct mg_listener {
    uv_poll_t poll;
    uv_timer_t backoff; /* accepting paused: out of file descriptors */
    int fd;
    int handles_open; /* poll and backoff: freed when both are closed */
    struct mg_worker *w;
    const struct mg_listen_conf *conf; /* in the current snapshot: TLS or plain */
    struct mg_listener *next;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool keep; /* scratch flag while reconciling with a new config */
};

struct mg_worker {
    struct mg_loopctx ctx; /* the loop and what the layers on it share (loopctx.h) */
    uv_thread_t thread;
    uv_async_t wakeup;                       /* other threads ask this worker to stop or reload */
    atomic_int stop_requested;               /* 1: graceful stop, 2: immediate */
    _Atomic(struct mg_generation *) pending; /* a snapshot to switch to (refs held) */
    struct mg_listener *listeners;
    struct mg_health *health; /* active health checks: worker 0 runs them */
    uv_timer_t idem_sweep;    /* worker 0: returns expired records' memory */
    bool drain_expired;       /* drain_timeout ran out: answering, then closing */
    uv_timer_t drain_timer;
};

/* Creates the worker's loop, runtime and listeners. Takes references to cfg and
 * metrics. Returns 0 or a negative UV_E* after logging the reason. */
int mg_worker_init(struct mg_worker *w, int id, struct mg_config *cfg, struct mg_metrics *metrics,
                   struct mg_lua *lua, struct mg_lua_metrics *lua_metrics);
/* Runs the loop until the worker has stopped and its connections are closed. */
void mg_worker_run(struct mg_worker *w);
/* After the worker's thread ended: frees the loop and everything the worker owns. */
void mg_worker_destroy(struct mg_worker *w);
/* Thread-safe: asks the worker to drain (graceful) or to stop at once. */
void mg_worker_request_stop(struct mg_worker *w, bool immediate);
/* Thread-safe: hands the worker a new snapshot and its metrics (takes its own
 * references). */
void mg_worker_publish_config(struct mg_worker *w, struct mg_config *cfg,
                              struct mg_metrics *metrics, struct mg_lua *lua,
                              struct mg_lua_metrics *lua_metrics);

/* The worker's listening fds (for a binary upgrade to hand over). Main thread,
 * with no reload being applied. */
size_t mg_worker_listener_fds(struct mg_worker *w, int *out, size_t cap);
/* After an upgrade, before the worker threads run: listening sockets the old
 * process passed beyond one per address and worker (it had more workers) are
 * polled too, spread over the workers, rather than closed: a SO_REUSEPORT
 * socket closed by both processes takes the connections queued on it along. */
void mg_workers_adopt_inherited(struct mg_worker *workers, size_t n, const struct mg_config *cfg);

/* The process's workers, so one can wake another (bulkhead hand-overs). Set once
 * before the worker threads start. */
void mg_workers_register(struct mg_worker *workers, size_t n);
/* The process's embedded idempotency store (store: memory). Set once before
 * the workers are initialised. */
void mg_workers_set_idem_table(struct mg_idem_memtable *t);
/* Thread-safe: wakes worker `id`, which then drains its bulkhead queues. */
void mg_worker_wake(int id);

#endif
