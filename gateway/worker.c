/*
 * Workers (see worker.h). Each worker owns a loop, its listening sockets (one per
 * `listen` address, SO_REUSEPORT so the kernel spreads connections over workers),
 * its upstream pools and its buffer free lists. The main thread only signals a
 * worker through its uv_async handle.
 */
#include "worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "proxy.h"
#include "upstream.h"

/* Buffers kept for reuse per worker; beyond this, idle memory goes back to libc. */
#define MG_MAX_FREE_BUFS 256

struct free_buf {
    struct free_buf *next;
};

char *mg_worker_buf_get(struct mg_worker *w)
{
    struct free_buf *b = w->free_bufs;
    if (b) {
        w->free_bufs = b->next;
        w->nfree_bufs--;
        return (char *)b;
    }
    char *p = malloc(MG_BUF_SIZE);
    if (!p)
        mg_fatal("out of memory (read buffer)");
    return p;
}

void mg_worker_buf_put(struct mg_worker *w, char *buf)
{
    if (w->nfree_bufs >= MG_MAX_FREE_BUFS) {
        free(buf);
        return;
    }
    struct free_buf *b = (struct free_buf *)buf;
    b->next = w->free_bufs;
    w->free_bufs = b;
    w->nfree_bufs++;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct mg_listener *l = server->data;
    if (status < 0) {
        mg_warn("accept: %s", uv_strerror(status));
        return;
    }
    mg_proxy_accept(l->w, server);
}

/* libuv 1.44 has no UV_TCP_REUSEPORT: make the socket ourselves. */
static int open_listener(struct mg_worker *w, struct mg_listener *l, const struct mg_address *a)
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
    uv_tcp_init(&w->loop, &l->tcp);
    l->tcp.data = l;
    l->w = w;
    int rc = uv_tcp_open(&l->tcp, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection);
    return rc;
}

static void on_wakeup(uv_async_t *a)
{
    struct mg_worker *w = a->data;
    int req = atomic_load(&w->stop_requested);
    if (req == 0)
        return;
    if (req == 2 || w->draining) {
        mg_proxy_close_all(w);
        uv_stop(&w->loop);
        return;
    }
    w->draining = true;
    for (size_t i = 0; i < w->nlisteners; i++)
        if (!uv_is_closing((uv_handle_t *)&w->listeners[i].tcp))
            uv_close((uv_handle_t *)&w->listeners[i].tcp, NULL);
    mg_upconn_close_idle(w);
    mg_proxy_drain(w);
    mg_worker_conn_closed(w);
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct mg_worker *w = t->data;
    mg_warn("worker %d: drain timeout, closing %u connections", w->id, w->nconns);
    mg_proxy_close_all(w);
    uv_stop(&w->loop);
}

void mg_worker_conn_closed(struct mg_worker *w)
{
    if (!w->draining)
        return;
    if (w->nconns == 0)
        uv_stop(&w->loop);
    else if (!uv_is_active((uv_handle_t *)&w->drain_timer))
        uv_timer_start(&w->drain_timer, on_drain_timeout, w->cfg->drain_timeout_ms, 0);
}

static void build_runtime(struct mg_worker *w)
{
    struct mg_config *cfg = w->cfg;
    w->ups = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof *w->ups);
    if (!w->ups)
        mg_fatal("out of memory (upstream runtime)");
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const struct mg_upstream_conf *uc = &cfg->upstreams[i];
        w->ups[i].conf = uc;
        w->ups[i].targets = calloc(uc->ntargets, sizeof *w->ups[i].targets);
        if (!w->ups[i].targets)
            mg_fatal("out of memory (target runtime)");
        for (size_t j = 0; j < uc->ntargets; j++) {
            w->ups[i].targets[j].conf = &uc->targets[j];
            w->ups[i].targets[j].pool_limit = uc->keepalive;
        }
    }
}

int mg_worker_init(struct mg_worker *w, int id, struct mg_config *cfg)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->cfg = cfg;
    if (getrandom(&w->rand_state, sizeof w->rand_state, 0) != sizeof w->rand_state ||
        w->rand_state == 0)
        w->rand_state = 0x9E3779B97F4A7C15ULL ^ (uint64_t)id;
    int rc = uv_loop_init(&w->loop);
    if (rc)
        return rc;
    uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    w->wakeup.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    uv_unref((uv_handle_t *)&w->drain_timer);
    build_runtime(w);
    w->listeners = calloc(cfg->nlisten, sizeof *w->listeners);
    if (!w->listeners)
        mg_fatal("out of memory (listeners)");
    for (size_t i = 0; i < cfg->nlisten; i++) {
        rc = open_listener(w, &w->listeners[i], &cfg->listen[i]);
        w->nlisteners = i + 1;
        if (rc) {
            mg_error("cannot listen on %s: %s", cfg->listen[i].text, uv_strerror(rc));
            return rc;
        }
    }
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void mg_worker_run(struct mg_worker *w)
{
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Stopped: close what is left and let close callbacks free the connections. */
    mg_proxy_close_all(w);
    mg_upconn_close_idle(w);
    uv_walk(&w->loop, close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    while (w->free_bufs) {
        struct free_buf *b = w->free_bufs;
        w->free_bufs = b->next;
        free(b);
    }
    mg_proxy_free_worker_cache(w);
    for (size_t i = 0; i < w->cfg->nupstreams; i++)
        free(w->ups[i].targets);
    free(w->ups);
    free(w->listeners);
}

void mg_worker_request_stop(struct mg_worker *w, bool immediate)
{
    atomic_store(&w->stop_requested, immediate ? 2 : 1);
    uv_async_send(&w->wakeup);
}
