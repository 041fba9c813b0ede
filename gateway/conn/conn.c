/*
 * Client connections (see conn.h). The read buffer comes from the loop
 * context's free list when the first byte can arrive and goes back while the connection is
 * idle; writes into the upstream that point into it pin it, so it is neither
 * compacted nor given back while they are in flight.
 *
 * On a listener with proxy_protocol, the connection reads the PROXY header
 * itself before its codec hears of any byte (and before TLS starts: the
 * header precedes the ClientHello); the header's source becomes client_ip.
 * A connection without a valid header within client.header_timeout is closed.
 */
#include "conn/conn.h"

#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>

#include "config/config-t.h"
#include "config/config.h"
#include "net/cidr.h"
#include "net/proxyproto.h"
#include "net/tls.h"
#include "tls/context.h"
#include "core/log.h"
#include "loopctx.h"
#include "obs/metrics.h"
#include "obs/rejected.h"

/* client.max_connections holds for the whole process, across workers. */
static atomic_uint client_connections;

static struct mg_metrics *metrics(struct mg_conn *c)
{
    return c->ctx->rt->metrics;
}

static enum mg_conn_state gauge_state(const struct mg_conn *c)
{
    return c->active ? MG_CONN_STATE_ACTIVE : MG_CONN_STATE_IDLE;
}

static void maybe_free(struct mg_conn *c)
{
    if (c->handles_open || c->in.pins || c->out.pending)
        return;
    mg_wq_discard(&c->out);
    if (c->in.buf)
        mg_loopctx_buf_put(c->ctx, c->in.buf);
    c->in.buf = NULL;
    if (c->tls_config)
        mg_config_unref(c->tls_config);
    if (c->tls_metrics)
        mg_metrics_unref(c->tls_metrics);
    struct mg_loopctx *ctx = c->ctx;
    const struct mg_conn_ops *first = c->first_ops;
    c->ops->on_free(c);
    if (first)
        first->on_free(c); /* the owner of c's memory goes last */
    ctx->ops->conn_closed(ctx);
}

void mg_conn_handle_closed(struct mg_conn *c)
{
    c->handles_open--;
    maybe_free(c);
}

static void on_transport_closed(struct mg_transport *t)
{
    mg_conn_handle_closed(t->owner);
}

static void on_timer_closed(uv_handle_t *h)
{
    mg_conn_handle_closed(h->data);
}

static void on_alloc(struct mg_transport *t, uv_buf_t *buf)
{
    struct mg_conn *c = t->owner;
    if (!c->in.buf) {
        c->in.buf = mg_loopctx_buf_get(c->ctx);
        c->in.start = c->in.end = 0;
    }
    mg_rbuf_room(&c->in, buf);
}

static void proxy_read(struct mg_conn *c);

static void on_read(struct mg_transport *t, ssize_t nread)
{
    struct mg_conn *c = t->owner;
    if (nread < 0) {
        c->eof = true;
        if (nread != UV_EOF)
            mg_debug("client read: %s", uv_strerror((int)nread));
    } else {
        c->in.end += (size_t)nread;
    }
    if (c->proxy_wait)
        proxy_read(c);
    else
        c->ops->on_read(c);
}

static void on_written(struct mg_wq *q, int status)
{
    struct mg_conn *c = q->owner;
    if (c->closing) {
        maybe_free(c);
        return;
    }
    if (status < 0) {
        mg_debug("client write failed: %s", uv_strerror(status));
        mg_conn_close(c);
        return;
    }
    c->ops->on_written(c, status);
}

static void on_unpinned(struct mg_rbuf *b)
{
    struct mg_conn *c = (struct mg_conn *)((char *)b - offsetof(struct mg_conn, in));
    if (c->closing)
        maybe_free(c);
    else
        c->ops->on_unpinned(c);
}

static void on_timer(struct mg_deadline *d)
{
    struct mg_conn *c = d->timer.data;
    if (c->proxy_wait) {
        mg_debug("client %s: no PROXY header in time", c->client_ip);
        mg_rejected_count(MG_REJECT_PROXY_PROTOCOL);
        mg_conn_close(c);
        return;
    }
    c->ops->on_timer(c);
}

/* The TLS stream's news of its handshake: counted on the generation (and the
 * listener index) of the accept, then that generation is let go. */
static void on_handshake(struct mg_transport *t, int status)
{
    struct mg_conn *c = t->owner;
    const struct mg_tls_info *info = mg_tls_info(t);
    enum mg_tls_handshake_result r = status == UV_ETIMEDOUT  ? MG_TLS_HS_TIMEOUT
                                     : status < 0            ? MG_TLS_HS_FAILED
                                     : info && info->resumed ? MG_TLS_HS_RESUMED
                                                             : MG_TLS_HS_OK;
    if (c->tls_metrics && c->tls_listener >= 0)
        mg_metrics_tls_handshake(c->tls_metrics, (unsigned)c->ctx->id, (size_t)c->tls_listener, r,
                                 uv_hrtime() - c->tls_start_ns);
    if (c->tls_metrics)
        mg_metrics_unref(c->tls_metrics);
    c->tls_metrics = NULL;
}

static void use_transport(struct mg_conn *c, struct mg_transport *t)
{
    c->tr = t;
    t->owner = c;
    t->on_alloc = on_alloc;
    t->on_read = on_read;
    t->on_closed = on_transport_closed;
    c->out.tr = t;
}

static void start_tls(struct mg_conn *c)
{
    const struct mg_listen_conf *lc = c->lc;
    use_transport(
        c, mg_tls_server(&c->tcp, mg_tls_ssl_ctx(lc->tls->ctx), lc->tls->handshake_timeout_ms, c));
    c->tls_metrics = metrics(c);
    if (c->tls_metrics) {
        mg_metrics_ref(c->tls_metrics);
        c->tls_listener = mg_metrics_listener_index(c->tls_metrics, lc->address.text);
        c->tls_start_ns = uv_hrtime();
        mg_tls_on_handshake(c->tr, on_handshake);
    }
}

/* With trusted_proxies set, only those may speak PROXY to the gateway: a
 * header from anyone else would let them choose their address. */
static bool proxy_peer_trusted(struct mg_conn *c)
{
    const struct mg_forwarded_conf *f = &c->ctx->rt->cfg->forwarded;
    struct mg_ip ip;
    if (!f->ntrusted_proxies)
        return true;
    return mg_ip_parse(c->client_ip, strlen(c->client_ip), &ip) &&
           mg_cidr_match(f->trusted_proxies, f->ntrusted_proxies, &ip);
}

/* Bytes of a connection awaiting its PROXY header: once the header is whole,
 * its source becomes client_ip and what follows it goes to TLS or the codec. */
static void proxy_read(struct mg_conn *c)
{
    struct mg_proxy_header h;
    size_t n = c->in.end - c->in.start;
    enum mg_proxy_verdict v = n ? mg_proxy_parse(c->in.buf + c->in.start, n, &h) : MG_PROXY_MORE;
    if (v == MG_PROXY_MORE && !c->eof)
        return;
    if (v != MG_PROXY_OK) {
        if (n)
            mg_debug("client %s: refused, no valid PROXY header", c->client_ip);
        mg_rejected_count(MG_REJECT_PROXY_PROTOCOL);
        mg_conn_close(c);
        return;
    }
    c->proxy_wait = false;
    c->in.start += h.len;
    if (h.has_addr)
        mg_proxy_addr_text(&h.src, c->client_ip, sizeof c->client_ip);
    if (c->lc->tls) {
        /* The rest is the ClientHello's start: it goes to the TLS stream,
         * which reads the socket from now on. */
        mg_transport_read_stop(&c->tcp.t);
        c->reading = false;
        start_tls(c);
        mg_tls_server_feed(c->tr, c->in.buf + c->in.start, c->in.end - c->in.start);
        c->in.start = c->in.end = 0;
        if (c->eof) {
            mg_conn_close(c);
            return;
        }
        mg_conn_update_reading(c, true);
        return;
    }
    if (c->in.start < c->in.end || c->eof)
        c->ops->on_read(c);
}

static bool refused(struct mg_loopctx *ctx, unsigned open_before)
{
    if (ctx->draining) {
        mg_rejected_count(MG_REJECT_DRAINING);
        return true;
    }
    if (open_before >= ctx->rt->cfg->client.max_connections) {
        mg_rejected_count(MG_REJECT_MAX_CONNECTIONS);
        return true;
    }
    return false;
}

int mg_conn_accept(struct mg_conn *c, struct mg_loopctx *ctx, int fd,
                   const struct mg_listen_conf *lc, const struct mg_conn_ops *ops)
{
    c->ctx = ctx;
    c->ops = ops;
    mg_tcp_init(&ctx->loop, &c->tcp, c);
    mg_wq_init(&c->out, &c->tcp.t, &ctx->free_wreqs, on_written, c);
    use_transport(c, &c->tcp.t);
    c->in.on_unpinned = on_unpinned;
    mg_deadline_init(&ctx->loop, &c->timer, on_timer, c);
    c->handles_open += 2;
    c->next = ctx->conns;
    if (ctx->conns)
        ctx->conns->prev = c;
    ctx->conns = c;
    ctx->nconns++;
    unsigned open_before = atomic_fetch_add_explicit(&client_connections, 1, memory_order_relaxed);
    if (mg_tcp_accept(fd, &c->tcp) != 0 || refused(ctx, open_before)) {
        mg_conn_close(c);
        return -1;
    }
    mg_metrics_conn(metrics(c), (unsigned)ctx->id, MG_CONN_SIDE_CLIENT, MG_CONN_STATE_IDLE, 1);
    c->counted = true;
    c->tcp.t.ops->peer_ip(&c->tcp.t, c->client_ip, sizeof c->client_ip);
    if (lc && (lc->tls || lc->proxy_protocol)) {
        /* The listener's settings (TLS contexts) belong to this snapshot: hold
         * it while the connection lives (a handshake may outlast a reload). */
        c->tls_config = ctx->rt->cfg;
        mg_config_ref(c->tls_config);
        c->lc = lc;
        c->secure = lc->tls != NULL;
    }
    if (lc && lc->proxy_protocol) {
        if (!proxy_peer_trusted(c)) {
            mg_debug("client %s: refused, PROXY from outside trusted_proxies", c->client_ip);
            mg_rejected_count(MG_REJECT_PROXY_PROTOCOL);
            mg_conn_close(c);
            return -1;
        }
        c->proxy_wait = true;
        mg_deadline_set(&c->timer, ctx->rt->cfg->client.header_timeout_ms);
    } else if (lc && lc->tls) {
        start_tls(c);
    }
    return 0;
}

bool mg_conn_secure(const struct mg_conn *c)
{
    return c->secure;
}

bool mg_conn_has_room(const struct mg_conn *c)
{
    return mg_rbuf_has_room(&c->in);
}

void mg_conn_update_reading(struct mg_conn *c, bool want)
{
    if (c->closing)
        return;
    want = want && !c->eof && mg_conn_has_room(c);
    if (want == c->reading)
        return;
    c->reading = want;
    if (want)
        mg_transport_read_start(c->tr);
    else
        mg_transport_read_stop(c->tr);
}

bool mg_conn_flush(struct mg_conn *c)
{
    if (!c->out.out)
        return false;
    int rc = mg_wq_flush(&c->out);
    if (rc < 0) {
        mg_debug("client write failed: %s", uv_strerror(rc));
        mg_conn_close(c);
        return false;
    }
    return rc == 1;
}

void mg_conn_set_active(struct mg_conn *c, bool active)
{
    if (c->active == active)
        return;
    mg_metrics_conn_move(metrics(c), (unsigned)c->ctx->id, MG_CONN_SIDE_CLIENT, gauge_state(c),
                         active ? MG_CONN_STATE_ACTIVE : MG_CONN_STATE_IDLE);
    c->active = active;
}

void mg_conn_shed(struct mg_conn *c)
{
    if (c->in.start != c->in.end || c->in.pins || !c->in.buf)
        return;
    mg_loopctx_buf_put(c->ctx, c->in.buf);
    c->in.buf = NULL;
    c->in.start = c->in.end = 0;
}

void mg_conn_close(struct mg_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    c->ops->on_close(c);
    if (c->first_ops)
        c->first_ops->on_close(c);
    if (c->counted)
        mg_metrics_conn(metrics(c), (unsigned)c->ctx->id, MG_CONN_SIDE_CLIENT, gauge_state(c), -1);
    mg_wq_discard(&c->out);
    struct mg_loopctx *ctx = c->ctx;
    if (c->prev)
        c->prev->next = c->next;
    else
        ctx->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ctx->nconns--;
    atomic_fetch_sub_explicit(&client_connections, 1, memory_order_relaxed);
    mg_transport_close(c->tr);
    uv_close(mg_deadline_handle(&c->timer), on_timer_closed);
}

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

enum mg_conn_proto mg_conn_sniff(const struct mg_conn *c)
{
    if (mg_conn_secure(c))
        return mg_tls_alpn_h2(c->tr) ? MG_CONN_PROTO_H2 : MG_CONN_PROTO_H1;
    size_t have = c->in.buf ? c->in.end - c->in.start : 0;
    size_t want = sizeof h2_preface - 1;
    size_t n = have < want ? have : want;
    if (n && memcmp(c->in.buf + c->in.start, h2_preface, n) != 0)
        return MG_CONN_PROTO_H1;
    if (n == want)
        return MG_CONN_PROTO_H2;
    return c->eof ? MG_CONN_PROTO_H1 : MG_CONN_PROTO_UNKNOWN;
}

void mg_conn_take_over(struct mg_conn *c, const struct mg_conn_ops *ops, void *codec)
{
    if (!c->first_ops)
        c->first_ops = c->ops;
    c->ops = ops;
    c->codec = codec;
}

void mg_conn_give_back(struct mg_conn *c)
{
    if (c->first_ops)
        c->ops = c->first_ops;
    c->first_ops = NULL;
    c->codec = NULL;
}

void mg_conn_drain(struct mg_loopctx *ctx)
{
    uint64_t due = uv_now(&ctx->loop) + MG_CONN_DRAIN_IDLE_MS;
    for (struct mg_conn *c = ctx->conns; c; c = c->next)
        if (c->ops->idle(c) && (!c->timer.due || c->timer.due > due))
            mg_deadline_set(&c->timer, MG_CONN_DRAIN_IDLE_MS);
}

uint64_t mg_conn_keepalive_ms(const struct mg_conn *c, uint64_t keepalive_ms)
{
    return c->ctx->draining && keepalive_ms > MG_CONN_DRAIN_IDLE_MS ? MG_CONN_DRAIN_IDLE_MS
                                                                    : keepalive_ms;
}

bool mg_conn_unread(const struct mg_conn *c)
{
    int n = 0, fd = mg_tcp_fd(&c->tcp);
    return fd >= 0 && ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

void mg_conn_drain_expired(struct mg_loopctx *ctx)
{
    struct mg_conn *c = ctx->conns;
    while (c) {
        struct mg_conn *next = c->next; /* the codec may close c */
        if (c->ops->on_drain_timeout && !c->closing)
            c->ops->on_drain_timeout(c);
        c = next;
    }
}

void mg_conn_close_all(struct mg_loopctx *ctx)
{
    while (ctx->conns)
        mg_conn_close(ctx->conns);
}
