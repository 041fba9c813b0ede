/*
 * Workers (see worker.h). Each worker owns a loop, its listening sockets (one per
 * `listen` address, SO_REUSEPORT so the kernel spreads connections over workers),
 * its upstream pools and its buffer free lists. The main thread only signals a
 * worker through its uv_async handle.
 */
#include "worker.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config.h"
#include "core/log.h"
#include "idempotency/store.h"
#include "idempotency/store_memory.h"
#include "idempotency/store_redis.h"
#include "conn/conn.h"
#include "conn/h1server.h"
#include "conn/h2server.h"
#include "exchange/exchange.h"
#include "lua/metrics_hook.h"
#include "lua/task.h"
#include "lua/vm.h"
#include "obs/metrics.h"
#include "obs/rejected.h"
#include "process/upgrade.h"
#include "resilience/admission.h"
#include "resilience/health.h"
#include "resilience/registry.h"
#include "runtime.h"
#include "upstream/pool.h"

/* After drain_timeout: time for the 504s to be written before the final cut. */
#define MG_DRAIN_ANSWER_MS 200
/* Expired idempotency records are also dropped lazily; the sweep returns their
 * memory when no request touches them. Bounded per tick so the table lock is
 * never held long. */
#define MG_IDEM_SWEEP_MS  1000
#define MG_IDEM_SWEEP_MAX 4096

static struct mg_idem_memtable *idem_table;

void mg_workers_set_idem_table(struct mg_idem_memtable *t)
{
    idem_table = t;
}

/* Connections taken per wake-up, so one busy listener cannot starve the loop. */
#define MG_ACCEPT_BATCH 64
/* Pause after EMFILE/ENFILE: closing connections free fds meanwhile. */
#define MG_ACCEPT_BACKOFF_MS 100

static void on_readable(uv_poll_t *p, int status, int events);

static void on_backoff_over(uv_timer_t *t)
{
    struct mg_listener *l = t->data;
    uv_poll_start(&l->poll, UV_READABLE, on_readable);
}

/* At most one line a second for the whole process, however many workers hit it. */
static void log_fd_exhaustion(int err)
{
    static atomic_ullong last_ms, pending;
    atomic_fetch_add_explicit(&pending, 1, memory_order_relaxed);
    unsigned long long now = uv_hrtime() / 1000000, last = atomic_load(&last_ms);
    if (now - last < 1000 || !atomic_compare_exchange_strong(&last_ms, &last, now))
        return;
    mg_warn("accept: %s: pausing accept for %d ms (%llu times since the last report); "
            "raise the open-file limit or lower client.max_connections",
            strerror(err), MG_ACCEPT_BACKOFF_MS, atomic_exchange(&pending, 0));
}

static void pause_accepting(struct mg_listener *l, int err)
{
    mg_rejected_count(MG_REJECT_FD_LIMIT);
    log_fd_exhaustion(err);
    uv_poll_stop(&l->poll);
    uv_timer_start(&l->backoff, on_backoff_over, MG_ACCEPT_BACKOFF_MS, 0);
}

static void on_readable(uv_poll_t *p, int status, int events)
{
    struct mg_listener *l = p->data;
    if (status < 0) {
        mg_warn("listener: %s", uv_strerror(status));
        return;
    }
    for (int i = 0; i < MG_ACCEPT_BATCH; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            struct mg_conn *c = mg_h1s_accept(&l->w->ctx, fd, l->conf, &mg_exchange_hooks);
            if (c && l->conf->http2)
                mg_h2s_offer(c, &mg_exchange_hooks); /* h2 if the first bytes say so */
            continue;
        }
        switch (errno) {
        case EAGAIN:
            return;
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
            continue; /* that connection is gone; the next may be fine */
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            pause_accepting(l, errno);
            return;
        default:
            mg_warn("accept: %s", strerror(errno));
            return;
        }
    }
}

static void on_listener_handle_closed(uv_handle_t *h)
{
    struct mg_listener *l = h->data;
    if (--l->handles_open == 0)
        free(l);
}

static void listener_close(struct mg_listener *l)
{
    uv_close((uv_handle_t *)&l->poll, on_listener_handle_closed);
    uv_close((uv_handle_t *)&l->backoff, on_listener_handle_closed);
    close(l->fd); /* the poll no longer watches it: its queue goes now */
}

/* libuv 1.44 has no UV_TCP_REUSEPORT: make the socket ourselves. Returns the
 * listening fd or a negative errno. */
static int listen_socket(const struct mg_address *a)
{
    int fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (a->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&a->addr, a->addrlen) != 0 || listen(fd, 4096) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* Polls `fd`, a listening socket bound to `a`, from w's loop (owned from here). */
static int add_listener(struct mg_worker *w, const struct mg_address *a, int fd)
{
    struct mg_listener *l = calloc(1, sizeof *l);
    if (!l)
        mg_fatal("out of memory (listener)");
    l->fd = fd;
    l->w = w;
    l->addr = a->addr;
    l->addrlen = a->addrlen;
    int rc = uv_poll_init_socket(&w->ctx.loop, &l->poll, fd);
    if (rc) {
        close(fd);
        free(l);
        return rc;
    }
    uv_timer_init(&w->ctx.loop, &l->backoff);
    l->poll.data = l->backoff.data = l;
    l->handles_open = 2;
    rc = uv_poll_start(&l->poll, UV_READABLE, on_readable);
    if (rc) {
        listener_close(l);
        return rc;
    }
    l->next = w->listeners;
    w->listeners = l;
    return 0;
}

static int open_listener(struct mg_worker *w, const struct mg_address *a)
{
    int fd = mg_upgrade_take_listener(a); /* the old binary's socket, queue and all */
    if (fd < 0)
        fd = listen_socket(a);
    if (fd < 0)
        return uv_translate_sys_error(-fd);
    return add_listener(w, a, fd);
}

static void close_listeners(struct mg_worker *w, bool all)
{
    struct mg_listener **pp = &w->listeners;
    while (*pp) {
        struct mg_listener *l = *pp;
        if (all || !l->keep) {
            *pp = l->next;
            listener_close(l);
        } else {
            pp = &l->next;
        }
    }
}

static struct mg_listener *find_listener(struct mg_worker *w, const struct mg_address *a)
{
    for (struct mg_listener *l = w->listeners; l; l = l->next)
        if (l->addrlen == a->addrlen && memcmp(&l->addr, &a->addr, a->addrlen) == 0)
            return l;
    return NULL;
}

static const struct mg_listen_conf *find_conf(const struct mg_config *cfg,
                                              const struct mg_listener *l)
{
    for (size_t i = 0; i < cfg->nlisten; i++) {
        const struct mg_address *a = &cfg->listen[i].address;
        if (l->addrlen == a->addrlen && memcmp(&l->addr, &a->addr, a->addrlen) == 0)
            return &cfg->listen[i];
    }
    return NULL;
}

/* Opens what the snapshot adds and closes what it removes. A listener whose address
 * stays is kept as is (every one of them: after an upgrade to fewer workers a
 * worker may poll several sockets of one address): closing a SO_REUSEPORT
 * socket drops its accept queue. */
static int reconcile_listeners(struct mg_worker *w, const struct mg_config *cfg)
{
    int failures = 0;
    for (struct mg_listener *l = w->listeners; l; l = l->next) {
        l->conf = find_conf(cfg, l); /* its TLS settings may have changed */
        l->keep = l->conf != NULL;
    }
    for (size_t i = 0; i < cfg->nlisten; i++) {
        if (find_listener(w, &cfg->listen[i].address))
            continue;
        int rc = open_listener(w, &cfg->listen[i].address);
        if (rc) {
            mg_error("cannot listen on %s: %s", cfg->listen[i].address.text, uv_strerror(rc));
            failures++;
        } else {
            w->listeners->keep = true;
            w->listeners->conf = &cfg->listen[i];
        }
    }
    close_listeners(w, false);
    return failures ? UV_EADDRINUSE : 0;
}

/* One worker probes for the whole process: the results are process-wide flags.
 * The old checker stops first, so none of its late probes can flip a flag. */
static void restart_health_checks(struct mg_worker *w)
{
    if (w->ctx.id != 0)
        return;
    mg_health_stop(w->health);
    w->health = w->ctx.draining ? NULL : mg_health_start(&w->ctx.loop, w->ctx.rt->cfg);
}

static void generation_free(struct mg_generation *g)
{
    mg_lua_free(g->lua);
    mg_lua_metrics_free(g->lua_metrics);
    mg_config_unref(g->cfg);
    if (g->metrics)
        mg_metrics_unref(g->metrics);
    free(g);
}

static void apply_config(struct mg_worker *w, struct mg_generation *g)
{
    struct mg_config *cfg = g->cfg;
    if (w->ctx.draining) {
        generation_free(g);
        return;
    }
    reconcile_listeners(w, cfg);
    struct mg_runtime *old = w->ctx.rt;
    w->ctx.rt = mg_runtime_new(&w->ctx, cfg, g->metrics, g->lua, g->lua_metrics);
    if (w->ctx.id == 0 && idem_table)
        mg_idem_memtable_set_budget(idem_table, cfg->idempotency_memory);
    g->lua = NULL; /* the runtime owns them now */
    g->lua_metrics = NULL;
    generation_free(g); /* the runtime holds its own references */
    mg_runtime_carry_over(old, w->ctx.rt);
    mg_runtime_retire(old);
    restart_health_checks(w);
    mg_debug("worker %d: now on config version %" PRIu64, w->ctx.id, cfg->version);
}

static void on_drain_timer(uv_timer_t *t);

/* Draining: the loop stops once the last client connection is gone; until
 * then drain_timeout runs. */
static void check_drained(struct mg_worker *w)
{
    if (!w->ctx.draining)
        return;
    if (w->ctx.nconns == 0)
        uv_stop(&w->ctx.loop);
    else if (!uv_is_active((uv_handle_t *)&w->drain_timer))
        uv_timer_start(&w->drain_timer, on_drain_timer, w->ctx.rt->cfg->drain_timeout_ms, 0);
}

static void on_conn_closed(struct mg_loopctx *ctx)
{
    check_drained((struct mg_worker *)((char *)ctx - offsetof(struct mg_worker, ctx)));
}

static const struct mg_loopctx_ops loopctx_ops = {
    .conn_closed = on_conn_closed,
};

static void start_drain(struct mg_worker *w)
{
    w->ctx.draining = true;
    restart_health_checks(w);
    close_listeners(w, true);
    mg_runtime_close_idle(w->ctx.rt);
    mg_conn_drain(&w->ctx); /* idle keep-alive connections: see MG_CONN_DRAIN_IDLE_MS */
    check_drained(w);
}

static void on_wakeup(uv_async_t *a)
{
    struct mg_worker *w = a->data;
    struct mg_generation *g = atomic_exchange(&w->pending, NULL);
    if (g)
        apply_config(w, g);
    mg_admission_drain((unsigned)w->ctx.id);
    int req = atomic_load(&w->stop_requested);
    if (req == 0)
        return;
    if (req == 2) {
        mg_conn_close_all(&w->ctx);
        uv_stop(&w->ctx.loop);
        return;
    }
    if (!w->ctx.draining)
        start_drain(w);
}

/* drain_timeout over: first the requests still waiting for an upstream are
 * answered (504, Connection: close), MG_DRAIN_ANSWER_MS later the rest is cut. */
static void on_drain_timer(uv_timer_t *t)
{
    struct mg_worker *w = t->data;
    if (!w->drain_expired) {
        w->drain_expired = true;
        mg_warn("worker %d: drain timeout, answering and closing %u connections", w->ctx.id,
                w->ctx.nconns);
        mg_conn_drain_expired(&w->ctx);
        uv_timer_start(&w->drain_timer, on_drain_timer, MG_DRAIN_ANSWER_MS, 0);
        return;
    }
    mg_conn_close_all(&w->ctx);
    uv_stop(&w->ctx.loop);
}

static void on_idem_sweep(uv_timer_t *t)
{
    (void)t;
    mg_idem_memtable_sweep(idem_table, MG_IDEM_SWEEP_MAX);
}

int mg_worker_init(struct mg_worker *w, int id, struct mg_config *cfg, struct mg_metrics *metrics,
                   struct mg_lua *lua, struct mg_lua_metrics *lua_metrics)
{
    memset(w, 0, sizeof *w);
    int rc = mg_loopctx_init(&w->ctx, id, &loopctx_ops);
    if (rc)
        mg_fatal("cannot create an event loop: %s", uv_strerror(rc));
    uv_async_init(&w->ctx.loop, &w->wakeup, on_wakeup);
    w->wakeup.data = w;
    uv_timer_init(&w->ctx.loop, &w->drain_timer);
    w->drain_timer.data = w;
    uv_unref((uv_handle_t *)&w->drain_timer);
    w->ctx.rt = mg_runtime_new(&w->ctx, cfg, metrics, lua, lua_metrics);
    restart_health_checks(w);
    uv_timer_init(&w->ctx.loop, &w->idem_sweep);
    w->idem_sweep.data = w;
    if (idem_table) {
        w->ctx.idem_memory = mg_idem_memory_open(idem_table, &w->ctx.loop);
        if (id == 0) {
            uv_timer_start(&w->idem_sweep, on_idem_sweep, MG_IDEM_SWEEP_MS, MG_IDEM_SWEEP_MS);
            uv_unref((uv_handle_t *)&w->idem_sweep);
        }
    }
    return reconcile_listeners(w, cfg);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void mg_worker_run(struct mg_worker *w)
{
    uv_run(&w->ctx.loop, UV_RUN_DEFAULT);
    /* Stopped: close what is left and let close callbacks free the connections.
     * The wakeup handle stays open (unreferenced) until mg_worker_destroy, so the
     * main thread may still signal this worker without touching a closed handle. */
    mg_conn_close_all(&w->ctx);
    close_listeners(w, true);
    mg_runtime_close_idle(w->ctx.rt);
    mg_lua_stop(w->ctx.rt->lua); /* plugin timers and waits, while the loop still runs */
    mg_health_stop(w->health);
    w->health = NULL;
    /* Exchanges are closed (their store operations cancelled): the stores may go
     * while the loop still runs their handle closes. */
    mg_idem_client_close(w->ctx.idem_memory);
    w->ctx.idem_memory = NULL;
    mg_idem_client_close(w->ctx.rt->idem_redis);
    w->ctx.rt->idem_redis = NULL;
    uv_close((uv_handle_t *)&w->idem_sweep, NULL);
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    uv_unref((uv_handle_t *)&w->wakeup);
    uv_run(&w->ctx.loop, UV_RUN_DEFAULT);
}

void mg_worker_destroy(struct mg_worker *w)
{
    uv_close((uv_handle_t *)&w->wakeup, NULL);
    uv_run(&w->ctx.loop, UV_RUN_DEFAULT);
    uv_walk(&w->ctx.loop, close_walk, NULL);
    uv_run(&w->ctx.loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->ctx.loop);
    struct mg_generation *pending = atomic_exchange(&w->pending, NULL);
    if (pending)
        generation_free(pending);
    mg_runtime_release(&w->ctx, w->ctx.rt);
    w->ctx.rt = NULL;
    mg_loopctx_clear(&w->ctx);
}

void mg_worker_request_stop(struct mg_worker *w, bool immediate)
{
    atomic_store(&w->stop_requested, immediate ? 2 : 1);
    uv_async_send(&w->wakeup);
}

void mg_worker_publish_config(struct mg_worker *w, struct mg_config *cfg,
                              struct mg_metrics *metrics, struct mg_lua *lua,
                              struct mg_lua_metrics *lua_metrics)
{
    struct mg_generation *g = malloc(sizeof *g);
    if (!g)
        mg_fatal("out of memory (generation)");
    mg_config_ref(cfg);
    if (metrics)
        mg_metrics_ref(metrics);
    *g = (struct mg_generation){cfg, metrics, lua, lua_metrics};
    struct mg_generation *stale = atomic_exchange(&w->pending, g);
    if (stale)
        generation_free(stale); /* never applied: superseded by a newer one */
    uv_async_send(&w->wakeup);
}

void mg_workers_adopt_inherited(struct mg_worker *workers, size_t n, const struct mg_config *cfg)
{
    size_t k = 0;
    for (size_t i = 0; i < cfg->nlisten && n; i++) {
        const struct mg_address *a = &cfg->listen[i].address;
        int fd;
        while ((fd = mg_upgrade_take_listener(a)) >= 0) {
            struct mg_worker *w = &workers[k++ % n];
            if (add_listener(w, a, fd) != 0) {
                mg_warn("upgrade: cannot poll an inherited socket of %s", a->text);
                continue;
            }
            w->listeners->keep = true;
            w->listeners->conf = &cfg->listen[i];
        }
    }
}

size_t mg_worker_listener_fds(struct mg_worker *w, int *out, size_t cap)
{
    size_t n = 0;
    for (struct mg_listener *l = w->listeners; l && n < cap; l = l->next)
        out[n++] = l->fd;
    return n;
}

static struct mg_worker *all_workers;
static size_t nall_workers;

static void wake_worker(unsigned id)
{
    mg_worker_wake((int)id);
}

void mg_workers_register(struct mg_worker *workers, size_t n)
{
    all_workers = workers;
    nall_workers = n;
    mg_admission_set_waker(wake_worker);
}

void mg_worker_wake(int id)
{
    if (id >= 0 && (size_t)id < nall_workers)
        uv_async_send(&all_workers[id].wakeup);
}
