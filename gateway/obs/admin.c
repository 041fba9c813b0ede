/*
 * Admin listener (see admin.h): one thread, one uv loop, a few connections.
 *
 * Each connection owns a fixed read buffer and an llhttp parser in strict mode.
 * on_message_complete pauses the parser, so exactly one request is answered at
 * a time: reading stops, the response is built and written, and when the write
 * completes the parser resumes on the bytes that followed (pipelining) before
 * reading again. That bounds memory per connection to one buffer and one
 * response.
 *
 * Ownership: the admin owns the loop, the listener, the connections and one
 * reference on the published config and metrics generation. `pub_mu` guards the
 * published pair, since the main thread swaps it while the admin thread reads:
 * a request takes its own references under the lock and renders without it.
 *
 * Shutdown: mg_admin_stop sets `stopping` and wakes the loop through `async`;
 * on_async closes every handle, uv_run returns, the thread ends and is joined.
 * A connection is freed in the close callback of its last handle (tcp, timer).
 */
#include "obs/admin.h"
#include "obs/admin_auth.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <llhttp.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include "config/config.h"
#include "core/log.h"
#include "http/writer.h"
#include "obs/accesslog.h"
#include "obs/dashboard.h"
#include "obs/live.h"
#include "obs/metrics.h"
#include "obs/rejected.h"
#include "obs/textbuf.h"
#include "resilience/breaker.h"

#ifndef MG_VERSION
#define MG_VERSION "dev"
#endif

#define ADMIN_BUF_SIZE 8192 /* read buffer */
#define ADMIN_MAX_HEAD 8192 /* request line + headers */
#define ADMIN_MAX_BODY 8192
#define ADMIN_MAX_URL  1024
/* Its own budget, apart from the clients' max_connections; when it is spent
 * the oldest idle connection makes room, so idle ones never starve /healthz. */
#define ADMIN_MAX_CONNS 64
#define ADMIN_MAX_AUTH  512
#define ADMIN_IDLE_MS   30000
#define ADMIN_BACKLOG   128

struct admin_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* idle timeout */
    struct mg_admin *a;
    struct admin_conn *next, *prev;
    unsigned handles; /* open handles; freed at 0 */
    bool closing;
    bool responding; /* a response is being written; reading is stopped */
    bool keep_alive; /* of the request being answered */
    llhttp_t parser;
    size_t len;        /* unparsed bytes at buf[0..len) while paused */
    size_t head_bytes; /* url + header bytes of the current message (approx.) */
    size_t body_bytes;
    int too_large; /* 0, or 431/413 when a callback stopped the parser */
    char url[ADMIN_MAX_URL];
    size_t url_len;
    bool url_too_long;
    /* Authorization field of the current request (admin_auth.h). */
    char hname[16];
    size_t hname_len;
    bool in_auth, auth_seen;
    char auth[ADMIN_MAX_AUTH];
    size_t auth_len;
    char buf[ADMIN_BUF_SIZE];
};

struct admin_write {
    uv_write_t req;
    struct admin_conn *c;
    bool close_after;
    struct mg_textbuf head;
    struct mg_textbuf body;
};

struct mg_admin {
    uv_loop_t loop;
    uv_tcp_t server;
    uv_async_t async;
    uv_thread_t thread;
    atomic_bool stopping;
    atomic_bool ready; /* GET /ready: the workers serve and no drain has begun */
    struct admin_conn *conns;
    unsigned nconns;
    struct mg_obs_hooks hooks;
    struct mg_accesslog *accesslog;

    uv_mutex_t pub_mu; /* cfg and metrics */
    struct mg_config *cfg;
    struct mg_metrics *metrics;

    struct mg_live *live; /* the dashboard's history, sampled by `sampler` */
    uv_timer_t sampler;   /* every MG_LIVE_INTERVAL_MS, on the admin thread */
};

static llhttp_settings_t settings;
static uv_once_t settings_once = UV_ONCE_INIT;

/* ------------------------------------------------------------- /status */

static void json_key(struct mg_textbuf *b, const char *key)
{
    mg_textbuf_json_str(b, key, strlen(key));
    mg_textbuf_putc(b, ':');
}

static void json_cstr(struct mg_textbuf *b, const char *s)
{
    if (s == NULL)
        mg_textbuf_puts(b, "null");
    else
        mg_textbuf_json_str(b, s, strlen(s));
}

static void json_str_array(struct mg_textbuf *b, char *const *v, size_t n)
{
    mg_textbuf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            mg_textbuf_putc(b, ',');
        json_cstr(b, v[i]);
    }
    mg_textbuf_putc(b, ']');
}

static void json_double(struct mg_textbuf *b, double v)
{
    if (!isfinite(v))
        v = 0;
    mg_textbuf_printf(b, "%.6g", v);
}

static void json_route(struct mg_textbuf *b, const struct mg_route_conf *rt)
{
    mg_textbuf_putc(b, '{');
    json_key(b, "name");
    json_cstr(b, rt->name);
    mg_textbuf_puts(b, ",\"match\":{\"hosts\":");
    json_str_array(b, rt->hosts, rt->nhosts);
    mg_textbuf_puts(b, ",\"paths\":");
    json_str_array(b, rt->paths, rt->npaths);
    mg_textbuf_puts(b, ",\"methods\":[");
    bool first = true;
    for (unsigned bit = 0; bit < 64; bit++) {
        if (!(rt->methods_mask & ((uint64_t)1 << bit)))
            continue;
        if (!first)
            mg_textbuf_putc(b, ',');
        json_cstr(b, llhttp_method_name((llhttp_method_t)bit));
        first = false;
    }
    mg_textbuf_puts(b, "]},\"upstream\":");
    json_cstr(b, rt->upstream ? rt->upstream->name : NULL);
    mg_textbuf_puts(b, ",\"strip_prefix\":");
    mg_textbuf_puts(b, rt->strip_prefix ? "true" : "false");
    mg_textbuf_puts(b, ",\"timeout\":");
    mg_textbuf_seconds(b, rt->timeout_ms * 1000000u, 3);
    mg_textbuf_puts(b, ",\"balancer\":");
    json_cstr(b, rt->balancer.name);
    mg_textbuf_puts(b, ",\"plugins\":[");
    for (size_t p = 0; p < rt->nplugins; p++) {
        if (p)
            mg_textbuf_putc(b, ',');
        json_cstr(b, rt->plugins[p].name);
    }
    mg_textbuf_puts(b, "],\"idempotency\":");
    mg_textbuf_puts(b, rt->idempotency.enabled ? "true" : "false");
    mg_textbuf_putc(b, '}');
}

static const char *health_name(enum mg_target_health h)
{
    switch (h) {
    case MG_HEALTH_HEALTHY:
        return "healthy";
    case MG_HEALTH_UNHEALTHY:
        return "unhealthy";
    case MG_HEALTH_UNKNOWN:
        break;
    }
    return "unknown";
}

/* ,"discovery":{...} for an upstream whose targets follow DNS. */
static void json_discovery(struct mg_textbuf *b, const struct mg_config *cfg, size_t u,
                           const struct mg_obs_hooks *hooks)
{
    const struct mg_upstream_conf *up = &cfg->upstreams[u];
    struct mg_upstream_snapshot s = {0};

    if (!up->dynamic)
        return;
    if (hooks && hooks->upstream_stats)
        hooks->upstream_stats(hooks->ud, cfg, u, &s);
    mg_textbuf_puts(b, ",\"discovery\":{\"type\":");
    json_cstr(b, up->discovery.type == MG_DISCOVERY_SRV ? "srv" : "host");
    if (up->discovery.type == MG_DISCOVERY_SRV) {
        mg_textbuf_puts(b, ",\"name\":");
        json_cstr(b, up->discovery.name);
    }
    mg_textbuf_printf(b, ",\"resolutions\":{\"success\":%" PRIu64 ",\"failure\":%" PRIu64 "}",
                      s.dns_ok, s.dns_failed);
    mg_textbuf_puts(b, ",\"last_resolution\":");
    if (s.dns_last_unix_ms) {
        mg_textbuf_putc(b, '"');
        mg_textbuf_rfc3339_ms(b, (int64_t)s.dns_last_unix_ms);
        mg_textbuf_printf(b, "\",\"last_result\":\"%s\"", s.dns_last_ok ? "success" : "failure");
    } else {
        mg_textbuf_puts(b, "null");
    }
    mg_textbuf_putc(b, '}');
}

static void json_upstream(struct mg_textbuf *b, const struct mg_config *cfg, size_t u,
                          const struct mg_obs_hooks *hooks)
{
    const struct mg_upstream_conf *up = &cfg->upstreams[u];

    mg_textbuf_putc(b, '{');
    json_key(b, "name");
    json_cstr(b, up->name);
    mg_textbuf_puts(b, ",\"health_check\":");
    mg_textbuf_puts(b, up->health_check.enabled ? "true" : "false");
    mg_textbuf_puts(b, ",\"targets\":[");
    for (size_t t = 0; t < up->ntargets; t++) {
        struct mg_target_snapshot s = {.circuit = MG_CIRCUIT_CLOSED, .health = MG_HEALTH_UNKNOWN};
        if (hooks && hooks->target_stats)
            hooks->target_stats(hooks->ud, cfg, u, t, &s);
        if (t)
            mg_textbuf_putc(b, ',');
        mg_textbuf_puts(b, "{\"address\":");
        json_cstr(b, up->targets[t].address.text);
        mg_textbuf_printf(b, ",\"weight\":%" PRIu32 ",\"circuit\":", up->targets[t].weight);
        json_cstr(b, mg_breaker_state_name(s.circuit));
        mg_textbuf_printf(b, ",\"in_flight\":%" PRIu32 ",\"ewma\":", s.in_flight);
        json_double(b, s.ewma);
        mg_textbuf_puts(b, ",\"health\":");
        json_cstr(b, health_name(s.health));
        mg_textbuf_printf(b, ",\"failures\":%" PRIu64, s.failures);
        if (up->targets[t].source) {
            mg_textbuf_puts(b, ",\"source\":");
            json_cstr(b, up->targets[t].source);
        }
        mg_textbuf_putc(b, '}');
    }
    mg_textbuf_putc(b, ']');
    json_discovery(b, cfg, u, hooks);
    mg_textbuf_putc(b, '}');
}

void mg_admin_render_status(const struct mg_config *cfg, const struct mg_obs_hooks *hooks,
                            struct mg_textbuf *b)
{
    mg_textbuf_puts(b, "{\"moongate\":");
    json_cstr(b, MG_VERSION);
    mg_textbuf_printf(b, ",\"config\":{\"version\":%" PRIu64 ",\"path\":", cfg->version);
    json_cstr(b, cfg->path);
    mg_textbuf_puts(b, ",\"loaded_at\":\"");
    mg_textbuf_rfc3339_ms(b, (int64_t)cfg->loaded_at * 1000);
    mg_textbuf_printf(b, "\",\"loaded_at_unix\":%lld},\"routes\":[", (long long)cfg->loaded_at);
    for (size_t r = 0; r < cfg->nroutes; r++) {
        if (r)
            mg_textbuf_putc(b, ',');
        json_route(b, &cfg->routes[r]);
    }
    mg_textbuf_puts(b, "],\"upstreams\":[");
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        if (u)
            mg_textbuf_putc(b, ',');
        json_upstream(b, cfg, u, hooks);
    }
    mg_textbuf_putc(b, ']');
    mg_metrics_redis_status(hooks, b); /* ,"redis":{...} when a Redis store is in use */
    if (hooks && hooks->plugins_jit) {
        mg_textbuf_puts(b, ",\"plugins_jit\":");
        hooks->plugins_jit(hooks->ud, b);
    }
    mg_textbuf_puts(b, "}\n");
}

/* ------------------------------------------------------------ responses */

static void conn_close(struct admin_conn *c);
static void process(struct admin_conn *c);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_write(uv_write_t *req, int status)
{
    struct admin_write *w = req->data;
    struct admin_conn *c = w->c;
    bool close_after = w->close_after;

    mg_textbuf_free(&w->head);
    mg_textbuf_free(&w->body);
    free(w);
    if (c->closing)
        return;
    if (status < 0 || close_after) {
        conn_close(c);
        return;
    }
    c->responding = false;
    uv_timer_again(&c->timer);
    llhttp_resume(&c->parser);
    process(c);
    if (!c->responding && !c->closing)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* Sends status + body (taken from `body`, which is left empty). With
 * `close_after` the connection closes once it is written. `allow`, if not NULL,
 * is the value of an Allow field (405). */
static void respond(struct admin_conn *c, int status, const char *ctype, struct mg_textbuf *body,
                    bool head_only, bool close_after, const char *allow)
{
    struct admin_write *w = calloc(1, sizeof(*w));
    uv_buf_t bufs[2];

    if (w == NULL)
        mg_fatal("out of memory (admin response)");
    w->c = c;
    w->close_after = close_after || !c->keep_alive;
    w->req.data = w;
    w->body = *body;
    *body = (struct mg_textbuf)MG_TEXTBUF_INIT;
    /* The admin has always said keep-alive to HTTP/1.1 clients too: harmless. */
    struct mg_http_tail tail = {
        .framing = MG_HTTP_FRAME_LENGTH,
        .length = w->body.len,
        .conn = w->close_after ? MG_HTTP_CONN_CLOSE : MG_HTTP_CONN_KEEP_ALIVE,
    };
    struct mg_slice type = {ctype, strlen(ctype)};
    struct mg_slice allowed = {allow, allow ? strlen(allow) : 0};
    size_t cap = MG_HTTP_STATUS_LINE_SIZE(MG_HTTP_REASON_MAX) + MG_HTTP_FIELD_SIZE(12, type.len) +
                 MG_HTTP_FIELD_SIZE(13, 8) + MG_HTTP_FIELD_SIZE(16, allowed.len) +
                 mg_http_tail_max(&tail);
    mg_textbuf_reserve(&w->head, cap);
    char *o = w->head.p;
    o = mg_http_put_status(o, status);
    o = mg_http_put_field(o, MG_SLICE_LIT("Content-Type"), type);
    o = mg_http_put_field(o, MG_SLICE_LIT("Cache-Control"), MG_SLICE_LIT("no-store"));
    if (allow && status == 401)
        o = mg_http_put_field(o, MG_SLICE_LIT("WWW-Authenticate"), allowed);
    else if (allow)
        o = mg_http_put_field(o, MG_SLICE_LIT("Allow"), allowed);
    o = mg_http_put_tail(o, &tail);
    w->head.len = (size_t)(o - w->head.p);
    MG_ASSERT(w->head.len <= cap);
    *o = '\0';
    bufs[0] = uv_buf_init(w->head.p, (unsigned)w->head.len);
    bufs[1] = uv_buf_init(w->body.p, head_only ? 0 : (unsigned)w->body.len);
    c->responding = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, bufs[1].len ? 2 : 1, on_write);
    if (rc < 0) {
        mg_textbuf_free(&w->head);
        mg_textbuf_free(&w->body);
        free(w);
        conn_close(c);
    }
}

static void respond_error(struct admin_conn *c, int status, const char *error, bool head_only,
                          bool close_after, const char *allow)
{
    struct mg_textbuf body = MG_TEXTBUF_INIT;

    mg_textbuf_printf(&body, "{\"error\":\"%s\",\"status\":%d}\n", error, status);
    respond(c, status, "application/json", &body, head_only, close_after, allow);
}

/* Takes references on the published pair. */
static void acquire(struct mg_admin *a, struct mg_config **cfg, struct mg_metrics **m)
{
    uv_mutex_lock(&a->pub_mu);
    *cfg = a->cfg;
    *m = a->metrics;
    mg_config_ref(*cfg);
    if (*m)
        mg_metrics_ref(*m);
    uv_mutex_unlock(&a->pub_mu);
}

static void render_metrics(struct mg_admin *a, struct mg_textbuf *body)
{
    struct mg_config *cfg;
    struct mg_metrics *m;

    acquire(a, &cfg, &m);
    if (m)
        mg_metrics_render(m, &a->hooks, body);
    mg_textbuf_puts(body, "# HELP moongate_config_version Version of the configuration in use "
                          "(increases with each successful load).\n"
                          "# TYPE moongate_config_version gauge\n");
    mg_textbuf_printf(body, "moongate_config_version %" PRIu64 "\n", cfg->version);
    mg_textbuf_puts(body, "# HELP moongate_config_loaded_timestamp_seconds Unix time the "
                          "configuration in use was loaded.\n"
                          "# TYPE moongate_config_loaded_timestamp_seconds gauge\n");
    mg_textbuf_printf(body, "moongate_config_loaded_timestamp_seconds %lld\n",
                      (long long)cfg->loaded_at);
    if (a->accesslog) {
        uint64_t lines, dropped;
        mg_accesslog_stats(a->accesslog, &lines, &dropped);
        mg_textbuf_printf(body,
                          "# HELP moongate_access_log_lines_total Access log lines queued.\n"
                          "# TYPE moongate_access_log_lines_total counter\n"
                          "moongate_access_log_lines_total %" PRIu64 "\n"
                          "# HELP moongate_access_log_dropped_total Access log lines dropped "
                          "because the writer could not keep up or a write failed.\n"
                          "# TYPE moongate_access_log_dropped_total counter\n"
                          "moongate_access_log_dropped_total %" PRIu64 "\n",
                          lines, dropped);
    }
    mg_rejected_render(body);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static int64_t unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The live document; `query` is the URL after '?', or NULL ("since=N"). */
static void render_live(struct mg_admin *a, const char *query, struct mg_textbuf *body)
{
    struct mg_config *cfg;
    struct mg_metrics *m;
    const char *p = query ? strstr(query, "since=") : NULL;
    uint64_t since = p ? strtoull(p + 6, NULL, 10) : 0;

    acquire(a, &cfg, &m);
    mg_live_render(a->live, cfg, &a->hooks, since, unix_ms(), body);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

/* The published config's admin token, when there is one, is required for
 * every path but the probes'. */
static bool authorized(struct mg_admin *a, struct admin_conn *c, size_t plen)
{
    bool ok;

    if (mg_admin_auth_exempt(c->url, plen) && !c->url_too_long)
        return true;
    uv_mutex_lock(&a->pub_mu);
    ok = mg_admin_auth_ok(a->cfg->admin_token, c->auth_seen ? c->auth : NULL, c->auth_len);
    uv_mutex_unlock(&a->pub_mu);
    return ok;
}

static void handle_request(struct admin_conn *c)
{
    struct mg_admin *a = c->a;
    int method = llhttp_get_method(&c->parser);
    bool head = method == HTTP_HEAD;
    size_t plen = strcspn(c->url, "?");
    struct mg_textbuf body = MG_TEXTBUF_INIT;
    enum { P_NONE, P_METRICS, P_STATUS, P_HEALTHZ, P_READY, P_LIVE, P_DASHBOARD } path = P_NONE;

    c->keep_alive = llhttp_should_keep_alive(&c->parser) && !c->parser.upgrade;
    if (c->url_too_long)
        path = P_NONE;
    else if (plen == 8 && memcmp(c->url, "/metrics", 8) == 0)
        path = P_METRICS;
    else if (plen == 7 && memcmp(c->url, "/status", 7) == 0)
        path = P_STATUS;
    else if (plen == 8 && memcmp(c->url, "/healthz", 8) == 0)
        path = P_HEALTHZ;
    else if (plen == 6 && memcmp(c->url, "/ready", 6) == 0)
        path = P_READY;
    else if (plen == 12 && memcmp(c->url, "/status/live", 12) == 0)
        path = P_LIVE;
    else if ((plen == 1 && c->url[0] == '/') ||
             (plen == 10 && memcmp(c->url, "/dashboard", 10) == 0))
        path = P_DASHBOARD;

    if (!authorized(a, c, plen)) {
        respond_error(c, 401, "unauthorized", head, false, "Bearer realm=\"moongate admin\"");
        return;
    }
    if (path == P_NONE) {
        respond_error(c, 404, "not_found", head, false, NULL);
        return;
    }
    if (method != HTTP_GET && !head) {
        respond_error(c, 405, "method_not_allowed", false, false, "GET, HEAD");
        return;
    }
    switch (path) {
    case P_METRICS:
        render_metrics(a, &body);
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", &body, head, false, NULL);
        break;
    case P_STATUS: {
        struct mg_config *cfg;
        struct mg_metrics *m;
        acquire(a, &cfg, &m);
        mg_admin_render_status(cfg, &a->hooks, &body);
        mg_metrics_unref(m);
        mg_config_unref(cfg);
        respond(c, 200, "application/json", &body, head, false, NULL);
        break;
    }
    case P_HEALTHZ:
        mg_textbuf_puts(&body, "ok\n");
        respond(c, 200, "text/plain; charset=utf-8", &body, head, false, NULL);
        break;
    case P_READY: {
        bool ready = atomic_load(&a->ready);
        mg_textbuf_puts(&body, ready ? "ready\n" : "not ready\n");
        respond(c, ready ? 200 : 503, "text/plain; charset=utf-8", &body, head, false, NULL);
        break;
    }
    case P_LIVE:
        render_live(a, c->url[plen] == '?' ? c->url + plen + 1 : NULL, &body);
        respond(c, 200, "application/json", &body, head, false, NULL);
        break;
    case P_DASHBOARD:
        mg_textbuf_append(&body, (const char *)mg_dashboard_html, mg_dashboard_html_len);
        respond(c, 200, "text/html; charset=utf-8", &body, head, false, NULL);
        break;
    case P_NONE:
        break;
    }
}

/* ---------------------------------------------------------- connections */

static int on_message_begin(llhttp_t *p)
{
    struct admin_conn *c = p->data;

    c->url_len = 0;
    c->url[0] = '\0';
    c->url_too_long = false;
    c->head_bytes = c->body_bytes = 0;
    c->too_large = 0;
    c->hname_len = c->auth_len = 0;
    c->in_auth = c->auth_seen = false;
    return 0;
}

/* Counts head bytes; stops the parser (HPE_USER) past the limit. */
static int count_head(struct admin_conn *c, size_t len)
{
    c->head_bytes += len;
    if (c->head_bytes <= ADMIN_MAX_HEAD)
        return 0;
    c->too_large = 431;
    return -1;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = p->data;

    if (count_head(c, len) < 0)
        return -1;
    if (c->url_len + len >= sizeof(c->url)) {
        c->url_too_long = true;
        return 0;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = p->data;
    size_t n = len < sizeof(c->hname) - c->hname_len ? len : sizeof(c->hname) - c->hname_len;

    memcpy(c->hname + c->hname_len, at, n);
    c->hname_len += len; /* may exceed the buffer: then it is not Authorization */
    return count_head(c, len);
}

static int on_header_field_complete(llhttp_t *p)
{
    struct admin_conn *c = p->data;

    c->in_auth = c->hname_len == 13 && strncasecmp(c->hname, "authorization", 13) == 0;
    if (c->in_auth) {
        c->auth_len = 0; /* a repeated field: the last one counts */
        c->auth_seen = true;
    }
    c->hname_len = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = p->data;

    if (c->in_auth) {
        size_t room = sizeof(c->auth) - 1 - c->auth_len;
        size_t n = len < room ? len : room;
        memcpy(c->auth + c->auth_len, at, n);
        c->auth_len += n;
        c->auth[c->auth_len] = '\0';
    }
    return count_head(c, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    struct admin_conn *c = p->data;

    c->in_auth = false;
    return count_head(c, 4); /* ": " and CRLF */
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = p->data;

    c->body_bytes += len;
    if (c->body_bytes <= ADMIN_MAX_BODY)
        return 0;
    c->too_large = 413;
    return -1;
}

static int on_message_complete(llhttp_t *p)
{
    return HPE_PAUSED; /* answer this one before parsing the next */
}

static void init_settings(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
}

/* Parses buf[0..len): answers at most one request, then waits for its write. */
static void process(struct admin_conn *c)
{
    size_t len = c->len;
    enum llhttp_errno e;

    if (len == 0)
        return;
    e = llhttp_execute(&c->parser, c->buf, len);
    if (e == HPE_PAUSED) {
        size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - c->buf);
        memmove(c->buf, c->buf + used, len - used);
        c->len = len - used;
        handle_request(c);
        return;
    }
    c->len = 0;
    if (e == HPE_OK)
        return;
    c->keep_alive = false;
    if (c->too_large == 431)
        respond_error(c, 431, "header_too_large", false, true, NULL);
    else if (c->too_large == 413)
        respond_error(c, 413, "body_too_large", false, true, NULL);
    else
        respond_error(c, 400, "bad_request", false, true, NULL);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct admin_conn *c = h->data;

    *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct admin_conn *c = s->data;

    if (nread < 0) {
        conn_close(c); /* EOF or error; a response in progress is abandoned */
        return;
    }
    if (nread == 0 || c->responding)
        return;
    c->len += (size_t)nread;
    uv_timer_again(&c->timer);
    process(c);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct admin_conn *c = h->data;

    if (--c->handles == 0)
        free(c);
}

static void conn_close(struct admin_conn *c)
{
    struct mg_admin *a = c->a;

    if (c->closing)
        return;
    c->closing = true;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    a->nconns--;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_idle(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_plain_close(uv_handle_t *h)
{
    free(h);
}

/* Makes room for a new connection: the oldest one not being answered (the
 * list is newest first); a slow or idle client loses its place, a probe never
 * waits for it. */
static void close_oldest_idle(struct mg_admin *a)
{
    struct admin_conn *idle = NULL;

    for (struct admin_conn *c = a->conns; c != NULL; c = c->next)
        if (!c->responding && !c->closing)
            idle = c;
    if (idle != NULL)
        conn_close(idle);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct mg_admin *a = server->data;
    struct admin_conn *c;

    if (status < 0)
        return;
    if (a->nconns >= ADMIN_MAX_CONNS)
        close_oldest_idle(a);
    if (a->nconns >= ADMIN_MAX_CONNS) {
        uv_tcp_t *t = malloc(sizeof(*t));
        if (t == NULL)
            return;
        uv_tcp_init(&a->loop, t);
        if (uv_accept(server, (uv_stream_t *)t) == 0)
            mg_warn("admin: more than %d connections busy, refusing one", ADMIN_MAX_CONNS);
        uv_close((uv_handle_t *)t, on_plain_close);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        mg_fatal("out of memory (admin connection)");
    c->a = a;
    uv_tcp_init(&a->loop, &c->tcp);
    uv_timer_init(&a->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    c->parser.data = c;
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    a->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_idle, ADMIN_IDLE_MS, ADMIN_IDLE_MS);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ------------------------------------------------------------- lifecycle */

/* The dashboard's history: summing the shards here, on the admin thread, is
 * what keeps it off the request path. */
static void on_sample(uv_timer_t *t)
{
    struct mg_admin *a = t->data;
    struct mg_config *cfg;
    struct mg_metrics *m;

    acquire(a, &cfg, &m);
    mg_live_sample(a->live, cfg, m, &a->hooks, unix_ms());
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void on_async(uv_async_t *h)
{
    struct mg_admin *a = h->data;

    if (!atomic_load(&a->stopping))
        return;
    while (a->conns)
        conn_close(a->conns);
    uv_close((uv_handle_t *)&a->sampler, NULL);
    uv_close((uv_handle_t *)&a->server, NULL);
    uv_close((uv_handle_t *)&a->async, NULL);
}

static void admin_thread(void *arg)
{
    struct mg_admin *a = arg;

    /* Named so that its CPU time can be read apart (top -H, /proc/PID/task). */
    pthread_setname_np(pthread_self(), "mg-admin");
    uv_run(&a->loop, UV_RUN_DEFAULT);
}

static void admin_free(struct mg_admin *a)
{
    mg_live_free(a->live);
    mg_metrics_unref(a->metrics);
    mg_config_unref(a->cfg);
    uv_mutex_destroy(&a->pub_mu);
    free(a);
}

struct mg_admin *mg_admin_start(const struct mg_address *addr, const struct mg_admin_source *src,
                                char *err, size_t errlen)
{
    struct mg_admin *a = calloc(1, sizeof(*a));
    int rc;

    if (a == NULL)
        mg_fatal("out of memory (admin)");
    uv_once(&settings_once, init_settings);
    if (uv_mutex_init(&a->pub_mu) != 0)
        mg_fatal("cannot create the admin mutex");
    atomic_init(&a->stopping, false);
    a->hooks = src->hooks;
    a->accesslog = src->accesslog;
    a->cfg = src->cfg;
    mg_config_ref(a->cfg);
    a->metrics = src->metrics;
    if (a->metrics)
        mg_metrics_ref(a->metrics);
    a->live = mg_live_new();
    mg_live_reload(a->live, true, a->cfg->version, NULL, unix_ms());

    rc = uv_loop_init(&a->loop);
    if (rc < 0)
        goto fail_loop;
    uv_tcp_init(&a->loop, &a->server);
    a->server.data = a;
    rc = uv_tcp_bind(&a->server, (const struct sockaddr *)&addr->addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->server, ADMIN_BACKLOG, on_connection);
    if (rc < 0)
        goto fail_bind;
    uv_async_init(&a->loop, &a->async, on_async);
    a->async.data = a;
    uv_timer_init(&a->loop, &a->sampler);
    a->sampler.data = a;
    uv_timer_start(&a->sampler, on_sample, 0, MG_LIVE_INTERVAL_MS);
    rc = uv_thread_create(&a->thread, admin_thread, a);
    if (rc < 0) {
        uv_close((uv_handle_t *)&a->sampler, NULL);
        uv_close((uv_handle_t *)&a->async, NULL);
        goto fail_bind;
    }
    return a;

fail_bind:
    uv_close((uv_handle_t *)&a->server, NULL);
    uv_run(&a->loop, UV_RUN_DEFAULT);
    uv_loop_close(&a->loop);
fail_loop:
    if (errlen)
        snprintf(err, errlen, "admin.listen %s: %s", addr->text ? addr->text : "?",
                 uv_strerror(rc));
    admin_free(a);
    return NULL;
}

/* Two snapshots of one load of the file: service discovery derived one from
 * the other's base (new targets), which is not a reload. */
static bool same_file(const struct mg_config *a, const struct mg_config *b)
{
    const struct mg_config *fa = a->base ? a->base : a, *fb = b && b->base ? b->base : b;
    return fa == fb;
}

void mg_admin_publish(struct mg_admin *a, struct mg_config *cfg, struct mg_metrics *metrics)
{
    struct mg_config *old_cfg;
    struct mg_metrics *old_m;

    mg_config_ref(cfg);
    if (metrics)
        mg_metrics_ref(metrics);
    uv_mutex_lock(&a->pub_mu);
    old_cfg = a->cfg;
    old_m = a->metrics;
    a->cfg = cfg;
    a->metrics = metrics;
    uv_mutex_unlock(&a->pub_mu);
    bool reloaded = cfg != old_cfg && !same_file(cfg, old_cfg); /* before old_cfg may go */
    mg_metrics_unref(old_m);
    mg_config_unref(old_cfg);
    if (reloaded)
        mg_live_reload(a->live, true, cfg->version, NULL, unix_ms());
}

void mg_admin_set_ready(struct mg_admin *a, bool ready)
{
    if (a)
        atomic_store(&a->ready, ready);
}

void mg_admin_reload_failed(struct mg_admin *a, const char *error)
{
    if (a)
        mg_live_reload(a->live, false, 0, error, unix_ms());
}

int mg_admin_local_address(struct mg_admin *a, struct sockaddr_storage *out)
{
    int len = (int)sizeof(*out);

    /* getsockname on the listener fd: safe from another thread, as the handle's
     * fd does not change until mg_admin_stop. */
    return uv_tcp_getsockname(&a->server, (struct sockaddr *)out, &len);
}

void mg_admin_stop(struct mg_admin *a)
{
    if (a == NULL)
        return;
    atomic_store(&a->stopping, true);
    uv_async_send(&a->async);
    uv_thread_join(&a->thread);
    if (uv_loop_close(&a->loop) != 0)
        mg_error("admin: loop closed with handles still open");
    admin_free(a);
}
