/*
 * Upstream connections and pools (see pool.h).
 *
 * Invariants: a connection is in its target's idle list iff owner == NULL and
 * !closing. Reads go to the proxy only while owner != NULL; an idle connection
 * that becomes readable (data or EOF) is closed, since a pooled HTTP/1.1
 * connection has nothing to say. Memory is freed in the last close callback, or
 * by the last unpin, whichever comes later.
 */
#include "upstream/pool.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "net/tls.h"
#include "obs/metrics.h"
#include "runtime-t.h"
#include "tls/context.h"

static void pool_put(struct mg_upconn *u);

/* moongate_connections{side="upstream"}: leased is active, pooled is idle. */
static void count(struct mg_upconn *u, int state_from, int state_to)
{
    struct mg_metrics *m = u->ctx->rt ? u->ctx->rt->metrics : NULL;
    unsigned w = (unsigned)u->ctx->id;
    if (state_from >= 0)
        mg_metrics_conn(m, w, MG_CONN_SIDE_UPSTREAM, (enum mg_conn_state)state_from, -1);
    if (state_to >= 0)
        mg_metrics_conn(m, w, MG_CONN_SIDE_UPSTREAM, (enum mg_conn_state)state_to, 1);
}

static void maybe_free(struct mg_upconn *u)
{
    if (u->handles_open || u->in.pins || u->out.pending)
        return;
    mg_wq_discard(&u->out);
    if (u->in.buf)
        mg_loopctx_buf_put(u->ctx, u->in.buf);
    free(u);
}

static void on_close(uv_handle_t *h)
{
    struct mg_upconn *u = h->data;
    u->handles_open--;
    maybe_free(u);
}

static void on_transport_closed(struct mg_transport *t)
{
    struct mg_upconn *u = t->owner;
    u->handles_open--;
    maybe_free(u);
}

static void unlink_idle(struct mg_upconn *u)
{
    struct mg_upconn **pp = &u->target->idle;
    while (*pp && *pp != u)
        pp = &(*pp)->next_idle;
    if (*pp) {
        *pp = u->next_idle;
        u->target->nidle--;
    }
    u->next_idle = NULL;
}

/* A parked connection is in no pool list and no exchange holds its target's
 * owner (the runtime) any more: it holds that owner itself until it joins the
 * pool or closes; a reload may retire the owner meanwhile. */
static void park(struct mg_upconn *u)
{
    u->parked = true;
    mg_hold_take(u->target->owner);
}

static struct mg_hold *unpark(struct mg_upconn *u)
{
    if (!u->parked)
        return NULL;
    u->parked = false;
    return u->target->owner;
}

void mg_upconn_close(struct mg_upconn *u)
{
    if (u->closing)
        return;
    struct mg_hold *held = unpark(u);
    u->closing = true;
    if (u->counted_as >= 0)
        count(u, u->counted_as, -1);
    u->counted_as = -1;
    if (!u->owner)
        unlink_idle(u);
    u->owner = NULL;
    mg_transport_close(u->tr);
    uv_close(mg_deadline_handle(&u->timer), on_close);
    if (held)
        mg_hold_drop(held);
}

static void on_alloc(struct mg_transport *t, uv_buf_t *buf)
{
    struct mg_upconn *u = t->owner;
    if (!u->in.buf) {
        u->in.buf = mg_loopctx_buf_get(u->ctx);
        u->in.start = u->in.end = 0;
    }
    mg_rbuf_room(&u->in, buf);
}

static void on_read(struct mg_transport *t, ssize_t nread)
{
    struct mg_upconn *u = t->owner;
    if (!u->owner) {
        /* Idle in the pool: the upstream closed it or sent garbage. */
        mg_upconn_close(u);
        return;
    }
    if (nread > 0)
        u->in.end += (size_t)nread;
    u->ops->on_read(u, nread);
}

void mg_upconn_set_reading(struct mg_upconn *u, bool on)
{
    if (u->closing || on == u->reading)
        return;
    u->reading = on;
    if (on)
        mg_transport_read_start(u->tr);
    else
        mg_transport_read_stop(u->tr);
}

static void on_timer(struct mg_deadline *d)
{
    struct mg_upconn *u = d->timer.data;
    if (u->owner) {
        u->ops->on_timeout(u);
        return;
    }
    /* A surplus connection whose pool has shrunk back within `keepalive` since
     * stays for the rest of the ordinary idle timeout. */
    uint64_t idle = uv_now(&u->ctx->loop) - u->idle_since;
    if (u->target->nidle <= u->target->pool_limit && idle < MG_UPSTREAM_IDLE_TIMEOUT_MS) {
        mg_upconn_set_timeout(u, MG_UPSTREAM_IDLE_TIMEOUT_MS - idle);
        return;
    }
    mg_upconn_close(u);
}

void mg_upconn_set_timeout(struct mg_upconn *u, uint64_t ms)
{
    if (u->closing)
        return;
    mg_deadline_set(&u->timer, ms);
}

static void on_tls_ready(struct mg_transport *t, int status)
{
    struct mg_upconn *u = t->owner;
    if (u->closing)
        return;
    u->connected = status == 0;
    u->ops->on_connect(u, status);
}

static void use_transport(struct mg_upconn *u, struct mg_transport *t);

static void on_connect(uv_connect_t *req, int status)
{
    struct mg_upconn *u = req->data;
    if (status == UV_ECANCELED || u->closing)
        return;
    if (status == 0 && u->target->tls) {
        /* The connect reported once the handshake is done: the pool's connect
         * timeout covers both. */
        const struct mg_upstream_tls_conf *tc = u->target->tls;
        use_transport(u, mg_tls_client(&u->tcp, mg_tls_ssl_ctx(tc->ctx), u->target->tls_name,
                                       tc->verify, u->target->tls_session, u));
        mg_tls_client_start(u->tr, on_tls_ready);
        return;
    }
    u->connected = status == 0;
    u->ops->on_connect(u, status);
}

static void on_unpinned(struct mg_rbuf *b);
static void on_written(struct mg_wq *q, int status);

static void use_transport(struct mg_upconn *u, struct mg_transport *t)
{
    u->tr = t;
    t->owner = u;
    t->on_alloc = on_alloc;
    t->on_read = on_read;
    t->on_closed = on_transport_closed;
    u->out.tr = t;
}

static int start_connect(struct mg_loopctx *ctx, struct mg_target_rt *target, struct mg_upconn *u,
                         uint64_t timeout_ms)
{
    int rc = mg_tcp_init(&ctx->loop, &u->tcp, u);
    if (rc)
        return rc;
    mg_wq_init(&u->out, &u->tcp.t, &ctx->free_wreqs, on_written, u);
    use_transport(u, &u->tcp.t);
    u->in.on_unpinned = on_unpinned;
    mg_deadline_init(&ctx->loop, &u->timer, on_timer, u);
    u->handles_open = 2;
    u->connect_req.data = u;
    rc = mg_tcp_connect(&u->tcp, &u->connect_req,
                        (const struct sockaddr *)&target->conf->address.addr, on_connect);
    if (rc) {
        /* The handles exist: close them; the caller must not free u. */
        u->owner = NULL;
        u->closing = true;
        mg_transport_close(u->tr);
        uv_close(mg_deadline_handle(&u->timer), on_close);
        return rc;
    }
    mg_upconn_set_timeout(u, timeout_ms);
    count(u, -1, MG_CONN_STATE_ACTIVE);
    u->counted_as = MG_CONN_STATE_ACTIVE;
    return 0;
}

int mg_upconn_acquire(struct mg_loopctx *ctx, struct mg_target_rt *target, void *owner,
                      const struct mg_upconn_ops *ops, uint64_t connect_timeout_ms,
                      struct mg_upconn **out, bool *reused)
{
    struct mg_upconn *u = target->idle;
    if (u) {
        target->idle = u->next_idle;
        target->nidle--;
        u->next_idle = NULL;
        u->owner = owner;
        u->ops = ops;
        count(u, MG_CONN_STATE_IDLE, MG_CONN_STATE_ACTIVE);
        u->counted_as = MG_CONN_STATE_ACTIVE;
        /* Reading stays on: toggling it would cost epoll_ctl calls per request. */
        mg_upconn_set_timeout(u, 0);
        *out = u;
        *reused = true;
        return 0;
    }
    u = calloc(1, sizeof *u);
    if (!u)
        mg_fatal("out of memory (upstream connection)");
    u->ctx = ctx;
    u->target = target;
    u->owner = owner;
    u->ops = ops;
    u->serial = ++ctx->conn_serial;
    u->counted_as = -1;
    int rc = start_connect(ctx, target, u, connect_timeout_ms);
    if (rc) {
        if (!u->handles_open)
            free(u);
        return rc;
    }
    *out = u;
    *reused = false;
    return 0;
}

/* Keeps the connection's TLS session for the target's next connection. */
static void keep_session(struct mg_upconn *u)
{
    if (!u->target->tls)
        return;
    SSL_SESSION *sess = mg_tls_get1_session(u->tr);
    if (!sess)
        return;
    SSL_SESSION_free(u->target->tls_session);
    u->target->tls_session = sess;
}

void mg_upconn_release(struct mg_upconn *u)
{
    if (u->closing)
        return;
    keep_session(u);
    struct mg_target_rt *t = u->target;
    u->owner = NULL;
    if (u->in.start != u->in.end || !mg_wq_idle(&u->out) || t->pool_limit == 0 ||
        u->ctx->draining || t->owner->retired) {
        mg_upconn_close(u);
        return;
    }
    if (u->in.pins) {
        /* A client write still points into our buffer: join the pool once it is done. */
        park(u);
        return;
    }
    pool_put(u);
}

static void pool_put(struct mg_upconn *u)
{
    struct mg_target_rt *t = u->target;
    u->in.start = u->in.end = 0;
    count(u, u->counted_as, MG_CONN_STATE_IDLE);
    u->counted_as = MG_CONN_STATE_IDLE;
    u->next_idle = t->idle;
    t->idle = u;
    t->nidle++;
    u->idle_since = uv_now(&u->ctx->loop);
    mg_upconn_set_timeout(u, t->nidle > t->pool_limit ? MG_UPSTREAM_SURPLUS_IDLE_MS
                                                      : MG_UPSTREAM_IDLE_TIMEOUT_MS);
    mg_upconn_set_reading(u, true);
}

static void unpark_to_pool(struct mg_upconn *u)
{
    struct mg_hold *owner = unpark(u);
    if (owner->retired || u->ctx->draining)
        mg_upconn_close(u); /* the retired runtime closed its pools already */
    else
        pool_put(u);
    mg_hold_drop(owner);
}

static void on_unpinned(struct mg_rbuf *b)
{
    struct mg_upconn *u = (struct mg_upconn *)((char *)b - offsetof(struct mg_upconn, in));
    if (u->closing)
        maybe_free(u);
    else if (u->owner)
        u->ops->on_unpinned(u);
    else if (u->parked)
        unpark_to_pool(u);
}

static void on_written(struct mg_wq *q, int status)
{
    struct mg_upconn *u = q->owner;
    if (u->closing)
        maybe_free(u);
    else if (u->owner)
        u->ops->on_written(u, status);
}

void mg_upconn_close_idle(struct mg_target_rt *t)
{
    while (t->idle)
        mg_upconn_close(t->idle);
}

void mg_upconn_move_idle(struct mg_target_rt *from, struct mg_target_rt *to)
{
    while (from->idle && to->nidle < to->pool_limit) {
        struct mg_upconn *u = from->idle;
        from->idle = u->next_idle;
        from->nidle--;
        u->target = to;
        u->next_idle = to->idle;
        to->idle = u;
        to->nidle++;
    }
}
