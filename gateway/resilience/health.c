/*
 * Active health checks (see health.h): one prober per checked target, driven
 * by one timer and one connection (net/transport.h: plain TCP, or TLS over it
 * when the upstream has tls.enabled, as the pool's connections are).
 *
 * A prober cycles IDLE -> CONNECT -> RESPONSE -> CLOSING -> IDLE. Its timer is
 * the next-probe timer while IDLE and the probe's deadline (covering connect,
 * the TLS handshake and the response) while CONNECT or RESPONSE, so
 * `advance`-style dispatch happens in on_timer by state. The connection exists
 * only from CONNECT to the end of CLOSING; the next probe is scheduled from its
 * on_closed, so a probe never overlaps the previous one and the TCP handle can
 * be initialised again.
 *
 * Invariant: only finish() ends a probe, exactly once (it moves to CLOSING), and
 * it is the only place that counts results and flips the registry flag. libuv
 * callbacks that arrive for an ended probe (cancelled connect/write, a read
 * racing the close) find state CLOSING or h->stopping and do nothing.
 *
 * Ownership: struct mg_health owns the prober array, each prober's request text
 * and TLS name, and one reference on the config snapshot (upstream/target
 * pointers and the TLS contexts are the snapshot's). A TLS stream frees itself
 * after its on_closed. `handles` counts open handles; after mg_health_stop the last close
 * callback frees everything, never the frame that called uv_close.
 */
#include "resilience/health.h"

#include <llhttp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/log.h"
#include "net/tcp.h"
#include "net/tls.h"
#include "resilience/registry.h"
#include "tls/context.h"

#define HEALTH_READ_BUF   1024 /* one read at a time per prober */
#define HEALTH_MAX_HEAD   8192 /* bytes up to the end of the final head */
#define HEALTH_REASON_LEN 128

enum health_state {
    HS_IDLE,     /* no connection; timer armed for the next probe (unless stopping) */
    HS_CONNECT,  /* tcp open, connect (then TLS handshake) pending; timer = deadline */
    HS_RESPONSE, /* connected, request written or in flight, reading; timer = deadline */
    HS_CLOSING,  /* result counted; connection close pending; timer stopped */
};

struct health_target {
    struct mg_health *h;
    const struct mg_upstream_conf *up;   /* in h->cfg */
    const struct mg_target_conf *target; /* in h->cfg */
    struct mg_target_stats *stats;       /* registry entry; outlives us */
    enum health_state state;
    uv_timer_t timer;        /* next probe (IDLE) or deadline (probing) */
    struct mg_tcp tcp;       /* valid from CONNECT to the end of CLOSING */
    struct mg_transport *tr; /* &tcp.t, or the TLS stream over it */
    uv_connect_t connect;
    uv_write_t write;
    uv_buf_t wbuf;   /* the write's buffer: a TLS stream may encrypt it later */
    char *tls_name;  /* SNI and the name verified (upstream tls), or NULL; owned */
    llhttp_t parser; /* reset per probe */
    char *request;   /* the constant request text, owned */
    size_t request_len;
    uint64_t started_ms;          /* uv_now at the probe's start */
    size_t head_bytes;            /* response bytes parsed in this probe, <= MAX_HEAD */
    int status;                   /* final status once the head is parsed, else 0 */
    uint32_t successes, failures; /* consecutive, saturating */
    char rbuf[HEALTH_READ_BUF];
};

struct mg_health {
    uv_loop_t *loop;
    struct mg_config *cfg;         /* one reference, dropped when freed */
    struct health_target *targets; /* [ntargets]; handles are embedded */
    size_t ntargets;
    unsigned handles; /* open handles; freed at 0 once stopping */
    bool stopping;
    mg_health_probe_cb on_probe;
    void *probe_ud;
    uint64_t rand_state; /* splitmix64, only for the stagger */
};

static void on_timer(uv_timer_t *timer);
static void on_closed(struct mg_transport *tr);

/* ---- results ---------------------------------------------------------- */

static void count_success(struct health_target *t)
{
    t->failures = 0;
    if (t->successes < UINT32_MAX)
        t->successes++;
    if (atomic_load(&t->stats->unhealthy) && t->successes >= t->up->health_check.healthy_after) {
        atomic_store(&t->stats->unhealthy, 0);
        mg_info("health check: upstream %s target %s is up", t->up->name, t->target->address.text);
    }
}

static void count_failure(struct health_target *t, const char *reason)
{
    t->successes = 0;
    if (t->failures < UINT32_MAX)
        t->failures++;
    mg_debug("health check: upstream %s target %s failed: %s", t->up->name, t->target->address.text,
             reason);
    if (!atomic_load(&t->stats->unhealthy) && t->failures >= t->up->health_check.unhealthy_after) {
        atomic_store(&t->stats->unhealthy, 1);
        mg_warn("health check: upstream %s target %s is down: %s", t->up->name,
                t->target->address.text, reason);
    }
}

/* Ends the probe: closes its connection, counts the result, tells the observer.
 * The observer runs last because it may call mg_health_stop. */
static void finish(struct health_target *t, bool ok, const char *reason)
{
    struct mg_health *h = t->h;

    MG_ASSERT(t->state == HS_CONNECT || t->state == HS_RESPONSE);
    uv_timer_stop(&t->timer);
    t->state = HS_CLOSING;
    mg_transport_close(t->tr);
    if (ok)
        count_success(t);
    else
        count_failure(t, reason);
    if (h->on_probe)
        h->on_probe(h->probe_ud, t->up, t->target, ok, reason);
}

static void finish_uv_error(struct health_target *t, const char *what, int err)
{
    char reason[HEALTH_REASON_LEN];

    snprintf(reason, sizeof reason, "%s: %s", what, uv_strerror(err));
    finish(t, false, reason);
}

/* ---- probe steps ------------------------------------------------------ */

/* Final (non-1xx) head complete: remember the status and stop parsing. */
static int on_headers_complete(llhttp_t *p)
{
    struct health_target *t = p->data;
    int status = llhttp_get_status_code(p);

    /* Interim responses are followed by the real one (RFC 9110 15.2); 101 is
     * final and not a success. llhttp parses 1xx as bodiless, then goes on. */
    if (status >= 100 && status < 200 && status != 101)
        return 0;
    t->status = status;
    return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_headers_complete = on_headers_complete,
};

static void on_alloc(struct mg_transport *tr, uv_buf_t *buf)
{
    struct health_target *t = tr->owner;

    /* One fixed buffer: a probe reads only a response head. */
    buf->base = t->rbuf;
    buf->len = sizeof t->rbuf;
}

/* Feeds response bytes to llhttp, at most HEALTH_MAX_HEAD in all (interim 1xx
 * heads included), and ends the probe once the final head is in, is bad, or
 * does not fit. The deadline bounds a slow drip; the cap bounds a flood. */
static void parse(struct health_target *t, const char *data, size_t len)
{
    char reason[HEALTH_REASON_LEN];
    size_t room = HEALTH_MAX_HEAD - t->head_bytes;
    size_t feed = len < room ? len : room;
    llhttp_errno_t err = llhttp_execute(&t->parser, data, feed);

    t->head_bytes += feed;
    if (err == HPE_PAUSED) {
        bool ok = t->status >= 200 && t->status < 400;
        snprintf(reason, sizeof reason, "status %d", t->status);
        finish(t, ok, reason);
    } else if (err != HPE_OK) {
        snprintf(reason, sizeof reason, "malformed response: %s",
                 llhttp_get_error_reason(&t->parser));
        finish(t, false, reason);
    } else if (t->head_bytes == HEALTH_MAX_HEAD) {
        finish(t, false, "response head too large");
    }
}

static void on_read(struct mg_transport *tr, ssize_t nread)
{
    struct health_target *t = tr->owner;

    if (t->state != HS_RESPONSE || t->h->stopping)
        return;
    if (nread == UV_EOF)
        finish(t, false, "connection closed before the response head");
    else if (nread < 0)
        finish_uv_error(t, "read", (int)nread);
    else if (nread > 0)
        parse(t, t->rbuf, (size_t)nread);
}

static void on_write(uv_write_t *req, int status)
{
    struct health_target *t = req->data;

    /* A failed write after the response arrived (or a cancelled one) is moot. */
    if (status < 0 && t->state == HS_RESPONSE && !t->h->stopping)
        finish_uv_error(t, "write", status);
}

/* The connection (and its TLS handshake) is up: the request, then reading. */
static void send_request(struct health_target *t)
{
    t->state = HS_RESPONSE;
    t->wbuf = uv_buf_init(t->request, (unsigned)t->request_len);
    int rc = t->tr->ops->write(t->tr, &t->write, &t->wbuf, 1, on_write);
    if (rc == 0)
        rc = mg_transport_read_start(t->tr);
    if (rc < 0)
        finish_uv_error(t, "write", rc);
}

static void use_transport(struct health_target *t, struct mg_transport *tr)
{
    t->tr = tr;
    tr->owner = t;
    tr->on_alloc = on_alloc;
    tr->on_read = on_read;
    tr->on_closed = on_closed;
}

static void on_tls_ready(struct mg_transport *tr, int status)
{
    struct health_target *t = tr->owner;

    if (t->state != HS_CONNECT || t->h->stopping)
        return;
    if (status < 0)
        finish_uv_error(t, "TLS handshake", status);
    else
        send_request(t);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct health_target *t = req->data;

    if (t->state != HS_CONNECT || t->h->stopping)
        return; /* cancelled by the deadline or by stop */
    if (status < 0) {
        finish_uv_error(t, "connect", status);
        return;
    }
    const struct mg_upstream_tls_conf *tc = &t->up->tls;
    if (!tc->enabled) {
        send_request(t);
        return;
    }
    /* The probe speaks to the target as the pool does (same context, name
     * and verification), so a certificate the proxy would refuse fails the
     * check too. No session is resumed: each probe tests a full handshake. */
    use_transport(
        t, mg_tls_client(&t->tcp, mg_tls_ssl_ctx(tc->ctx), t->tls_name, tc->verify, NULL, t));
    mg_tls_client_start(t->tr, on_tls_ready);
}

static void on_deadline(struct health_target *t)
{
    char reason[HEALTH_REASON_LEN];

    snprintf(reason, sizeof reason, "timed out %s after %llums",
             t->state == HS_CONNECT ? "connecting" : "waiting for the response",
             (unsigned long long)t->up->health_check.timeout_ms);
    finish(t, false, reason);
}

/* Opens the connection and arms the deadline. A synchronous failure counts as
 * a failed probe like any other. */
static void start_probe(struct health_target *t)
{
    struct mg_health *h = t->h;
    const struct mg_address *a = &t->target->address;

    t->started_ms = uv_now(h->loop);
    t->status = 0;
    t->head_bytes = 0;
    llhttp_init(&t->parser, HTTP_RESPONSE, &parser_settings);
    t->parser.data = t;
    /* AF_UNSPEC: no socket yet, cannot fail */
    MG_ASSERT(mg_tcp_init(h->loop, &t->tcp, t) == 0);
    use_transport(t, &t->tcp.t);
    h->handles++;
    t->connect.data = t;
    t->write.data = t;
    t->state = HS_CONNECT;
    uv_timer_start(&t->timer, on_timer, t->up->health_check.timeout_ms, 0);
    int rc = mg_tcp_connect(&t->tcp, &t->connect, (const struct sockaddr *)&a->addr, on_connect);
    if (rc < 0)
        finish_uv_error(t, "connect", rc);
}

static void on_timer(uv_timer_t *timer)
{
    struct health_target *t = timer->data;

    switch (t->state) {
    case HS_IDLE:
        start_probe(t);
        break;
    case HS_CONNECT:
    case HS_RESPONSE:
        on_deadline(t);
        break;
    case HS_CLOSING:
        MG_ASSERT(!"timer fired while closing"); /* finish() stopped it */
    }
}

/* ---- lifetime --------------------------------------------------------- */

static void release(struct mg_health *h)
{
    for (size_t i = 0; i < h->ntargets; i++) {
        free(h->targets[i].request);
        free(h->targets[i].tls_name);
    }
    free(h->targets);
    mg_config_unref(h->cfg);
    free(h);
}

static void handle_closed(struct mg_health *h)
{
    MG_ASSERT(h->handles > 0);
    if (--h->handles == 0 && h->stopping)
        release(h);
}

/* The probe's connection is gone: schedule the next one `interval` after this
 * one started (at once if it took longer), so the period stays `interval`. */
static void on_closed(struct mg_transport *tr)
{
    struct health_target *t = tr->owner;
    struct mg_health *h = t->h;

    t->tr = NULL;
    t->state = HS_IDLE;
    if (!h->stopping) {
        uint64_t next = t->started_ms + t->up->health_check.interval_ms;
        uint64_t now = uv_now(h->loop);
        uv_timer_start(&t->timer, on_timer, next > now ? next - now : 0, 0);
    }
    handle_closed(h);
}

static void on_timer_close(uv_handle_t *handle)
{
    struct health_target *t = handle->data;

    handle_closed(t->h);
}

static uint64_t next_random(struct mg_health *h)
{
    uint64_t z = (h->rand_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static char *build_request(const struct mg_upstream_conf *up, const struct mg_target_conf *tc,
                           size_t *len)
{
    static const char fmt[] = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: moongate-health\r\n"
                              "Connection: close\r\n\r\n";
    int n = snprintf(NULL, 0, fmt, up->health_check.path, tc->address.text);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;

    if (s == NULL)
        mg_fatal("out of memory (health check request)");
    snprintf(s, (size_t)n + 1, fmt, up->health_check.path, tc->address.text);
    *len = (size_t)n;
    return s;
}

static bool already_checked(struct mg_health *h, struct mg_target_stats *stats)
{
    /* Two entries for one address share one registry flag: probe it once. */
    for (size_t i = 0; i < h->ntargets; i++) {
        if (h->targets[i].stats == stats)
            return true;
    }
    return false;
}

static void add_target(struct mg_health *h, const struct mg_upstream_conf *up,
                       const struct mg_target_conf *tc)
{
    struct mg_target_stats *stats = mg_registry_target(up->name, tc->address.text);

    if (already_checked(h, stats))
        return;
    struct health_target *t = &h->targets[h->ntargets++];
    t->h = h;
    t->up = up;
    t->target = tc;
    t->stats = stats;
    t->state = HS_IDLE;
    t->request = build_request(up, tc, &t->request_len);
    if (up->tls.enabled)
        t->tls_name = mg_tls_upstream_name(
            &up->tls, tc->name ? &(struct mg_address){.text = (char *)tc->name} : &tc->address);
    MG_ASSERT(uv_timer_init(h->loop, &t->timer) == 0);
    h->handles++;
    t->timer.data = t;
    uint64_t spread = up->health_check.interval_ms / 10;
    uv_timer_start(&t->timer, on_timer, next_random(h) % (spread + 1), 0);
}

/* Counts checked targets; clears the flag of unchecked ones (see health.h). */
static size_t count_checked(struct mg_config *cfg)
{
    size_t n = 0;

    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const struct mg_upstream_conf *up = &cfg->upstreams[i];
        if (up->health_check.enabled) {
            n += up->ntargets;
            continue;
        }
        for (size_t j = 0; j < up->ntargets; j++)
            atomic_store(&mg_registry_target(up->name, up->targets[j].address.text)->unhealthy, 0);
    }
    return n;
}

struct mg_health *mg_health_start(uv_loop_t *loop, struct mg_config *cfg)
{
    size_t n = count_checked(cfg);

    if (n == 0)
        return NULL;
    struct mg_health *h = calloc(1, sizeof *h);
    if (h == NULL || (h->targets = calloc(n, sizeof *h->targets)) == NULL)
        mg_fatal("out of memory (health checks)");
    h->loop = loop;
    h->cfg = cfg;
    mg_config_ref(cfg);
    h->rand_state = uv_hrtime() ^ (uintptr_t)h;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const struct mg_upstream_conf *up = &cfg->upstreams[i];
        for (size_t j = 0; up->health_check.enabled && j < up->ntargets; j++)
            add_target(h, up, &up->targets[j]);
    }
    return h;
}

void mg_health_on_probe(struct mg_health *h, mg_health_probe_cb cb, void *ud)
{
    h->on_probe = cb;
    h->probe_ud = ud;
}

void mg_health_stop(struct mg_health *h)
{
    if (h == NULL || h->stopping)
        return;
    h->stopping = true;
    for (size_t i = 0; i < h->ntargets; i++) {
        struct health_target *t = &h->targets[i];
        uv_close((uv_handle_t *)&t->timer, on_timer_close);
        /* Closing cancels a pending connect, handshake or write (callbacks
         * get UV_ECANCELED, or nothing, and return on h->stopping). A CLOSING
         * connection is already on its way out. */
        if (t->state == HS_CONNECT || t->state == HS_RESPONSE) {
            t->state = HS_CLOSING;
            mg_transport_close(t->tr);
        }
    }
}
