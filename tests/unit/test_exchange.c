/*
 * Unit tests of the exchange state machine (gateway/exchange/): retry verdicts,
 * the route deadline, breaker skips, the bulkhead queue hand-over, idempotent
 * replays and a client leaving mid-response.
 *
 * No sockets: the exchanges are driven through mg_exchange_hooks exactly as
 * conn/h1server.c drives them, by a FAKE downstream (struct fdown, embedding the
 * exchange: it parses request heads with llhttp into the arena as h1server's
 * read_head does, serves the body from its input buffer and records every
 * response it is asked to send) and a FAKE upstream (an mg_upstream_ops table
 * installed with mg_exchange_set_upstream: per acquire, a scripted behaviour,
 * and a record of the targets tried). Everything else is real: a uv loop with
 * a minimal worker, the runtime from mg_runtime_new, the registry, breakers,
 * bulkhead admission, retry budget and the memory idempotency store.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <llhttp.h>
#include <uv.h>

#include "config/config.h"
#include "core/log.h"
#include "exchange/exchange.h"
#include "http/fields.h"
#include "idempotency/store.h"
#include "idempotency/store_memory.h"
#include "obs/metrics.h"
#include "resilience/admission.h"
#include "resilience/breaker.h"
#include "resilience/bulkhead.h"
#include "resilience/registry.h"
#include "runtime.h"
#include "upstream/h1client.h"
#include "upstream/pool.h"
#include "loopctx.h"

#define ADDR_A "127.0.0.1:9001"
#define ADDR_B "127.0.0.1:9002"

/* ================================================================ environment */

#define MAX_DOWN 8

struct fdown;

struct env {
    struct mg_loopctx ctx;
    struct mg_config *cfg;
    struct mg_metrics *metrics;
    struct mg_idem_memtable *idem_table;
    struct fdown *downs[MAX_DOWN];
    int ndowns;
    unsigned wakes; /* admission asked to wake worker 0 */
};

static struct env E;

static void record_wake(unsigned worker)
{
    assert_int_equal(worker, 0);
    E.wakes++;
}

/* ================================================================ fake upstream */

enum ev_kind { EV_HEAD, EV_DATA, EV_END, EV_ERROR, EV_PAUSE };

struct ev {
    enum ev_kind kind;
    int status;       /* EV_HEAD */
    const char *text; /* EV_DATA bytes, EV_ERROR reason; NULL DATA: the target's address */
};

/* What one acquire does. */
struct try_script {
    int acquire_rc; /* a UV_E*: acquire fails, nothing follows */
    bool later;     /* acquire succeeds connecting: the test calls fake_connect */
    int nev;        /* read() returns these in order, then MORE forever */
    struct ev ev[8];
};

#define MAX_SCRIPT 16
#define MAX_CONNS  32

/* A leased fake connection; kept until the test ends so it can be inspected. */
struct fconn {
    struct mg_upconn u; /* u.owner and u.ops are what the exchange's events use */
    struct mg_attempt *a;
    int target;
    struct try_script s;
    int next_ev;
    bool paused; /* an EV_PAUSE was read: MORE until fake_resume */
    bool started, req_ended, reading, released, reuse;
    uint64_t timeout_ms;
    char sent[1024]; /* request body bytes that reached the upstream */
    size_t sent_len;
};

static struct {
    struct try_script script[MAX_SCRIPT]; /* one per acquire, in order */
    int nscript, next;
    int tried[MAX_CONNS]; /* target index of every acquire, in order */
    int ntried;
    struct fconn *conns[MAX_CONNS]; /* every connection leased */
    int nconns;
} U;

static void script(struct try_script s)
{
    assert_true(U.nscript < MAX_SCRIPT);
    U.script[U.nscript++] = s;
}

/* The usual answer: 200 with the target's address as its body. */
static const struct try_script OK_200 = {
    .nev = 3, .ev = {{EV_HEAD, 200, NULL}, {EV_DATA, 0, NULL}, {EV_END, 0, NULL}}};

static struct fconn *conn_of(struct mg_attempt *a)
{
    return (struct fconn *)a->up;
}

static int target_index(struct mg_attempt *a)
{
    struct mg_exchange *x = a->x;
    return (int)(a->target - x->rt->ups[x->route->upstream->index].targets);
}

static const char *target_addr(int i)
{
    return i == 0 ? ADDR_A : i == 1 ? ADDR_B : "?";
}

static int up_acquire(struct mg_attempt *a, uint64_t connect_timeout_ms, bool *ready)
{
    (void)connect_timeout_ms;
    assert_null(a->up);
    assert_true(U.ntried < MAX_CONNS);
    int t = target_index(a);
    U.tried[U.ntried++] = t;
    struct try_script s = U.next < U.nscript ? U.script[U.next++] : OK_200;
    if (s.acquire_rc)
        return s.acquire_rc;
    struct fconn *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->u.owner = a;
    c->u.ops = a->events;
    c->u.ctx = a->x->ctx;
    c->u.target = a->target;
    c->a = a;
    c->target = t;
    c->s = s;
    U.conns[U.nconns++] = c;
    a->up = &c->u;
    *ready = !s.later;
    return 0;
}

static void up_send_body(struct mg_attempt *a, struct mg_slice d, struct mg_rbuf *pin);

/* As h1client's start: the head goes, with what is kept of the body (a retry's
 * copy, or the idempotency buffer) when the request was read before this try. */
static void up_start(struct mg_attempt *a)
{
    struct fconn *c = conn_of(a);
    struct mg_exchange *x = a->x;
    assert_false(c->released);
    assert_false(c->started);
    c->started = true;
    a->head_done = a->closed = a->reusable = false;
    if (x->req_done && x->body_copy_len > 0)
        up_send_body(a, (struct mg_slice){x->body_copy, x->body_copy_len}, NULL);
    if (x->req_done)
        c->req_ended = true;
    c->reading = a->reading = true;
}

static void up_send_body(struct mg_attempt *a, struct mg_slice d, struct mg_rbuf *pin)
{
    (void)pin;
    struct fconn *c = conn_of(a);
    assert_true(c->sent_len + d.len <= sizeof c->sent);
    memcpy(c->sent + c->sent_len, d.p, d.len);
    c->sent_len += d.len;
}

static void up_send_end(struct mg_attempt *a)
{
    conn_of(a)->req_ended = true;
}

static void up_send_raw(struct mg_attempt *a, struct mg_slice d, struct mg_rbuf *pin)
{
    (void)a, (void)d, (void)pin;
}

static int up_flush(struct mg_attempt *a)
{
    (void)a;
    return 0; /* nothing queued: the fake takes every byte at once */
}

/* A final head as upstream/h1client.c leaves it in x. */
static void fake_head(struct mg_attempt *a, int status)
{
    struct mg_exchange *x = a->x;
    x->status = status;
    x->reason = (struct mg_slice){NULL, 0};
    x->resp_hdrs.v = mg_arena_alloc(&x->arena, 2 * sizeof *x->resp_hdrs.v);
    x->resp_hdrs.cap = 2;
    x->resp_hdrs.n = 1;
    x->resp_hdrs.v[0] =
        (struct mg_header){MG_SLICE_LIT("Content-Type"), MG_SLICE_LIT("text/plain"), 0};
    x->resp_has_length = false;
    x->resp_length = 0;
    x->resp_kind = MG_BODY_CHUNKED;
    a->head_done = true;
    a->keepalive = true;
}

static int up_read(struct mg_attempt *a, struct mg_slice *d, struct mg_rbuf **pin)
{
    struct fconn *c = conn_of(a);
    *pin = NULL;
    if (c->paused || c->next_ev >= c->s.nev)
        return MG_RESP_MORE;
    const struct ev *e = &c->s.ev[c->next_ev++];
    switch (e->kind) {
    case EV_HEAD:
        fake_head(a, e->status);
        return MG_RESP_HEAD;
    case EV_DATA: {
        const char *t = e->text ? e->text : target_addr(c->target);
        *d = (struct mg_slice){t, strlen(t)};
        return MG_RESP_DATA;
    }
    case EV_END:
        a->reusable = true;
        return MG_RESP_END;
    case EV_ERROR:
        *d = (struct mg_slice){e->text, strlen(e->text)};
        return MG_RESP_ERROR;
    case EV_PAUSE:
        c->paused = true;
        return MG_RESP_MORE;
    }
    return MG_RESP_MORE;
}

static struct mg_slice up_read_raw(struct mg_attempt *a, struct mg_rbuf **pin)
{
    (void)a;
    *pin = NULL;
    return (struct mg_slice){NULL, 0};
}

static uint32_t up_writes(struct mg_attempt *a)
{
    (void)a;
    return 0;
}

static bool up_drained(struct mg_attempt *a)
{
    (void)a;
    return true;
}

static bool up_has_room(struct mg_attempt *a)
{
    (void)a;
    return true;
}

static void up_set_reading(struct mg_attempt *a, bool on)
{
    a->reading = on;
    conn_of(a)->reading = on;
}

static void up_set_timeout(struct mg_attempt *a, uint64_t ms)
{
    conn_of(a)->timeout_ms = ms;
}

static void up_release(struct mg_attempt *a, bool reuse)
{
    struct fconn *c = conn_of(a);
    assert_false(c->released);
    c->released = true;
    c->reuse = reuse;
    a->up = NULL;
    a->reading = false;
}

static const struct mg_upstream_ops fake_up_ops = {
    .acquire = up_acquire,
    .start = up_start,
    .send_body = up_send_body,
    .send_end = up_send_end,
    .send_raw = up_send_raw,
    .flush = up_flush,
    .read = up_read,
    .read_raw = up_read_raw,
    .writes = up_writes,
    .drained = up_drained,
    .has_room = up_has_room,
    .set_reading = up_set_reading,
    .set_timeout = up_set_timeout,
    .release = up_release,
};

/* A connection that was connecting is connected (status 0) or failed. */
static void fake_connect(struct fconn *c, int status)
{
    assert_false(c->released);
    c->u.ops->on_connect(&c->u, status);
}

/* A paused response goes on: bytes arrived. */
static void fake_resume(struct fconn *c)
{
    assert_true(c->paused);
    c->paused = false;
    c->u.ops->on_read(&c->u, 1);
}

/* ================================================================ fake downstream */

#define MAX_RESP 8

/* One response the exchange asked the downstream to send. */
struct resp {
    int status;
    enum mg_error err;      /* send_error's, else MG_ERR_NONE */
    uint32_t retry_after_s; /* x->retry_after_s when an error was sent */
    bool proxied;           /* send_head (else send_error or send_response) */
    bool via;               /* send_response's */
    bool ended;             /* the whole response is queued */
    char fields[1024];      /* "name: value\n" lines */
    char body[1024];
    size_t body_len;
};

struct fdown {
    struct mg_exchange x;
    char in[4096]; /* what the client sent */
    size_t in_len, in_pos;
    uint64_t body_left; /* request body bytes still to come */
    llhttp_t parser;
    bool eof;
    bool closed;   /* the connection closed (down->close or the test) */
    bool x_closed; /* the exchange's on_closed fired */
    bool flushed;  /* response bytes reached the "transport": no unsend */
    struct resp resp[MAX_RESP];
    int nresp;
    int continues, idles, closes;
    struct env *env;
};

static struct fdown *of_x(struct mg_exchange *x)
{
    return (struct fdown *)((char *)x - offsetof(struct fdown, x));
}

static struct resp *new_resp(struct mg_exchange *x, int status)
{
    struct fdown *d = of_x(x);
    assert_true(d->nresp < MAX_RESP);
    struct resp *r = &d->resp[d->nresp++];
    memset(r, 0, sizeof *r);
    r->status = status;
    return r;
}

static struct resp *cur_resp(struct mg_exchange *x)
{
    struct fdown *d = of_x(x);
    assert_true(d->nresp > 0);
    return &d->resp[d->nresp - 1];
}

static void add_field(struct resp *r, struct mg_slice name, struct mg_slice value)
{
    size_t n = strlen(r->fields);
    snprintf(r->fields + n, sizeof r->fields - n, "%.*s: %.*s\n", (int)name.len, name.p,
             (int)value.len, value.p);
}

static void add_body(struct resp *r, struct mg_slice b)
{
    assert_false(r->ended);
    assert_true(r->body_len + b.len < sizeof r->body);
    memcpy(r->body + r->body_len, b.p, b.len);
    r->body_len += b.len;
}

/* --- request heads: parsed like conn/h1server.c's read_head --- */

static struct mg_exchange *px(llhttp_t *p)
{
    return &((struct fdown *)p->data)->x;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct mg_exchange *x = px(p);
    if (x->url.p)
        x->url.len += len;
    else
        x->url = (struct mg_slice){at, len};
    return 0;
}

static int on_field(llhttp_t *p, const char *at, size_t len)
{
    return mg_fields_name(&px(p)->arena, &px(p)->req_hdrs, at, len);
}

static int on_value(llhttp_t *p, const char *at, size_t len)
{
    return mg_fields_value(&px(p)->req_hdrs, at, len);
}

static int on_value_complete(llhttp_t *p)
{
    mg_fields_value_done(&px(p)->req_hdrs);
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct mg_exchange *x = px(p);
    x->method = p->method;
    x->head_parsed = true;
    x->http_minor = p->http_minor;
    x->req_keepalive = llhttp_should_keep_alive(p);
    x->req_chunked = (p->flags & F_CHUNKED) != 0;
    x->req_has_length = (p->flags & F_CONTENT_LENGTH) != 0;
    x->req_content_length = x->req_has_length ? p->content_length : 0;
    x->req_upgrade = p->upgrade && p->method != HTTP_CONNECT;
    return 0;
}

static const llhttp_settings_t request_settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_header_value_complete = on_value_complete,
    .on_headers_complete = on_headers_complete,
};

static int d_read_head(struct mg_exchange *x)
{
    struct fdown *d = of_x(x);
    const char *p = d->in + d->in_pos;
    const char *end = memmem(p, d->in_len - d->in_pos, "\r\n\r\n", 4);
    if (!end)
        return MG_AGAIN;
    size_t used = (size_t)(end + 4 - p);
    assert_int_equal(mg_arena_append(&x->arena, &x->head, &x->headlen, &x->headcap, p, used, 65536),
                     0);
    d->in_pos += used;
    llhttp_init(&d->parser, HTTP_REQUEST, &request_settings);
    d->parser.data = d;
    mg_fields_init(&x->arena, &x->req_hdrs);
    assert_int_equal(llhttp_execute(&d->parser, x->head, x->headlen), HPE_OK);
    assert_false(x->req_chunked); /* the fake serves Content-Length bodies only */
    x->host_idx = mg_headers_find(&x->req_hdrs, MG_SLICE_LIT("host"));
    x->rid_idx = mg_headers_find(&x->req_hdrs, MG_SLICE_LIT("x-request-id"));
    const char *q = memchr(x->url.p, '?', x->url.len);
    x->path = (struct mg_slice){x->url.p, q ? (size_t)(q - x->url.p) : x->url.len};
    mg_headers_mark_hop_by_hop(&x->req_hdrs);
    d->body_left = x->req_content_length;
    x->req_done = d->body_left == 0;
    return MG_NEXT;
}

static bool d_has_request(struct mg_exchange *x)
{
    struct fdown *d = of_x(x);
    return d->in_pos < d->in_len;
}

static enum mg_body_result d_read_body(struct mg_exchange *x, struct mg_slice *out,
                                       struct mg_rbuf **pin)
{
    struct fdown *d = of_x(x);
    if (d->body_left == 0)
        return MG_BODY_DONE;
    size_t n = d->in_len - d->in_pos;
    if (n == 0)
        return MG_BODY_MORE;
    if (n > d->body_left)
        n = (size_t)d->body_left;
    *out = (struct mg_slice){d->in + d->in_pos, n};
    *pin = NULL;
    d->in_pos += n;
    d->body_left -= n;
    return MG_BODY_DATA;
}

static struct mg_slice d_read_raw(struct mg_exchange *x, struct mg_rbuf **pin)
{
    (void)x;
    *pin = NULL;
    return (struct mg_slice){NULL, 0};
}

static void d_send_continue(struct mg_exchange *x)
{
    of_x(x)->continues++;
}

static void d_send_head(struct mg_exchange *x, bool switching)
{
    assert_false(switching);
    struct resp *r = new_resp(x, x->status);
    r->proxied = true;
    for (uint32_t i = 0; i < x->resp_hdrs.n; i++)
        if (!(x->resp_hdrs.v[i].flags & MG_HDR_HOP))
            add_field(r, x->resp_hdrs.v[i].name, x->resp_hdrs.v[i].value);
}

static void d_send_body(struct mg_exchange *x, struct mg_slice b, struct mg_rbuf *pin)
{
    (void)pin;
    struct resp *r = cur_resp(x);
    assert_true(r->proxied);
    add_body(r, b);
    x->bytes_out += b.len;
}

static void d_send_end(struct mg_exchange *x)
{
    struct resp *r = cur_resp(x);
    assert_true(r->proxied);
    assert_false(r->ended);
    r->ended = true;
}

static void d_send_raw(struct mg_exchange *x, struct mg_slice b, struct mg_rbuf *pin)
{
    (void)x, (void)b, (void)pin;
    fail_msg("no tunnel expected");
}

static void d_send_error(struct mg_exchange *x, enum mg_error err)
{
    struct resp *r = new_resp(x, mg_error_status(err));
    r->err = err;
    r->retry_after_s = x->retry_after_s;
    r->ended = true;
}

static void d_send_response(struct mg_exchange *x, int status, const struct mg_header *fields,
                            uint32_t n, struct mg_slice body, bool via)
{
    struct resp *r = new_resp(x, status);
    r->via = via;
    for (uint32_t i = 0; i < n; i++)
        add_field(r, fields[i].name, fields[i].value);
    add_body(r, body);
    r->ended = true;
}

static bool d_unsend(struct mg_exchange *x)
{
    struct fdown *d = of_x(x);
    if (d->flushed)
        return false;
    d->nresp--; /* taken back */
    return true;
}

static bool d_flush(struct mg_exchange *x)
{
    struct fdown *d = of_x(x);
    if (d->nresp && x->resp_started)
        d->flushed = true;
    return false; /* the fake transport takes everything; nothing to report */
}

static bool d_drained(struct mg_exchange *x)
{
    (void)x;
    return true;
}

static bool d_eof(struct mg_exchange *x)
{
    return of_x(x)->eof;
}

static bool d_unpinned(struct mg_exchange *x)
{
    (void)x;
    return true;
}

static void d_update_reading(struct mg_exchange *x)
{
    (void)x;
}

static void d_idle(struct mg_exchange *x)
{
    struct fdown *d = of_x(x);
    MG_ASSERT(x->state == MG_X_IDLE);
    d->idles++;
    d->flushed = false;
    if (d->in_pos == d->in_len)
        d->in_pos = d->in_len = 0;
}

/* The connection closes (as mg_conn_close: the codec's on_close closes the
 * exchange at once). */
static void conn_close(struct fdown *d)
{
    if (d->closed)
        return;
    d->closed = true;
    mg_exchange_hooks.close(&d->x);
}

static void d_close(struct mg_exchange *x)
{
    of_x(x)->closes++;
    conn_close(of_x(x));
}

static const struct mg_downstream_ops fake_down_ops = {
    .read_head = d_read_head,
    .has_request = d_has_request,
    .read_body = d_read_body,
    .read_raw = d_read_raw,
    .send_continue = d_send_continue,
    .send_head = d_send_head,
    .send_body = d_send_body,
    .send_end = d_send_end,
    .send_raw = d_send_raw,
    .send_error = d_send_error,
    .send_response = d_send_response,
    .unsend = d_unsend,
    .flush = d_flush,
    .drained = d_drained,
    .eof = d_eof,
    .unpinned = d_unpinned,
    .update_reading = d_update_reading,
    .idle = d_idle,
    .close = d_close,
};

static void on_x_closed(struct mg_exchange *x)
{
    of_x(x)->x_closed = true;
}

/* A client connection: its exchange readied as h1server's accept does. */
static struct fdown *client(void)
{
    assert_true(E.ndowns < MAX_DOWN);
    struct fdown *d = calloc(1, sizeof *d);
    assert_non_null(d);
    d->env = &E;
    mg_exchange_hooks.init(&d->x, &E.ctx, &fake_down_ops, "192.0.2.7", on_x_closed);
    E.downs[E.ndowns++] = d;
    return d;
}

/* Request bytes arrive (h1server's on_read). */
static void send_bytes(struct fdown *d, const char *raw)
{
    size_t n = strlen(raw);
    assert_true(d->in_len + n <= sizeof d->in);
    memcpy(d->in + d->in_len, raw, n);
    d->in_len += n;
    mg_exchange_hooks.event(&d->x, MG_XEV_RUN);
}

/* ================================================================ helpers */

#define assert_state(d, want)                                                                      \
    do {                                                                                           \
        enum mg_x_state got_ = (d)->x.state;                                                       \
        if (got_ != (want))                                                                        \
            fail_msg("exchange state %s, expected %s", mg_exchange_state_name(got_),               \
                     mg_exchange_state_name(want));                                                \
    } while (0)

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* Runs the loop until the exchange is in `want` (at most `limit_ms`). Never
 * blocks in the loop's poll: the exchange's deadline timer stays armed after the
 * deadline is cleared (core/deadline.h), so a blocking UV_RUN_ONCE could sleep
 * until it expires. */
static void run_until_state(struct fdown *d, enum mg_x_state want, uint64_t limit_ms)
{
    uint64_t until = now_ms() + limit_ms;
    while (d->x.state != want && !d->closed) {
        if (now_ms() > until)
            fail_msg("still %s after %" PRIu64 " ms, waiting for %s",
                     mg_exchange_state_name(d->x.state), limit_ms, mg_exchange_state_name(want));
        uv_run(&E.ctx.loop, UV_RUN_NOWAIT);
        if (d->x.state != want)
            uv_sleep(1);
    }
    assert_state(d, want);
}

static struct mg_upstream_stats *upstream_stats(void)
{
    return mg_registry_upstream("up");
}

static struct mg_upstream_rt *upstream_rt(void)
{
    return &E.ctx.rt->ups[0];
}

static void env_start(const char *upstream_extra, const char *route_extra, bool idem)
{
    char yaml[4096], err[512] = "";
    snprintf(yaml, sizeof yaml,
             "listen: [\"127.0.0.1:8080\"]\n"
             "upstreams:\n"
             "  up:\n"
             "    targets: [{address: \"" ADDR_A "\"}, {address: \"" ADDR_B "\"}]\n"
             "%s"
             "routes:\n"
             "  - name: r\n"
             "    upstream: up\n"
             "%s",
             upstream_extra, route_extra);
    memset(&E, 0, sizeof E);
    memset(&U, 0, sizeof U);
    mg_registry_init(1);
    mg_admission_set_waker(record_wake);
    mg_exchange_set_upstream(&fake_up_ops);
    E.cfg = mg_config_load_string(yaml, strlen(yaml), "exchange.yaml", err, sizeof err);
    if (!E.cfg)
        fail_msg("config: %s", err);
    E.metrics = mg_metrics_new(E.cfg, 1);
    assert_int_equal(uv_loop_init(&E.ctx.loop), 0);
    E.ctx.id = 0;
    E.ctx.rand_state = 0x9E3779B97F4A7C15ULL;
    E.ctx.arena_cache.max = 8;
    E.ctx.rt = mg_runtime_new(&E.ctx, E.cfg, E.metrics, NULL, NULL);
    if (idem) {
        E.idem_table = mg_idem_memtable_new(1 << 20);
        E.ctx.idem_memory = mg_idem_memory_open(E.idem_table, &E.ctx.loop);
    }
}

/* Closes every connection, runs the loop until no handle is left, frees all. */
static void env_stop(void)
{
    for (int i = 0; i < E.ndowns; i++)
        conn_close(E.downs[i]);
    if (E.ctx.idem_memory)
        mg_idem_client_close(E.ctx.idem_memory);
    uv_run(&E.ctx.loop, UV_RUN_DEFAULT);
    for (int i = 0; i < E.ndowns; i++) {
        assert_true(E.downs[i]->x_closed); /* on_closed fired once the timers closed */
        mg_exchange_hooks.destroy(&E.downs[i]->x);
        free(E.downs[i]);
    }
    /* Every slot and attempt was given back. */
    assert_int_equal(mg_bulkhead_in_use(&upstream_stats()->bulkhead), 0);
    assert_int_equal(mg_bulkhead_queued(&upstream_stats()->bulkhead), 0);
    for (int t = 0; t < 2; t++) {
        assert_int_equal(upstream_rt()->targets[t].active, 0);
        assert_int_equal(atomic_load(&upstream_rt()->targets[t].stats->active), 0);
    }
    for (int i = 0; i < U.nconns; i++) {
        if (!U.conns[i]->released)
            fail_msg("upstream connection %d (target %d) was never released", i,
                     U.conns[i]->target);
        free(U.conns[i]);
    }
    mg_runtime_release(&E.ctx, E.ctx.rt);
    uv_run(&E.ctx.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&E.ctx.loop), 0);
    mg_arena_cache_clear(&E.ctx.arena_cache);
    if (E.idem_table)
        mg_idem_memtable_free(E.idem_table);
    mg_metrics_unref(E.metrics);
    mg_config_unref(E.cfg);
    mg_registry_shutdown();
    mg_exchange_set_upstream(&mg_h1client_ops);
    mg_admission_set_waker(NULL);
}

static const char GET[] = "GET /items HTTP/1.1\r\nHost: example.com\r\n\r\n";

static void assert_error(const struct resp *r, enum mg_error err)
{
    if (r->err != err)
        fail_msg("error %s (%d), expected %s", mg_error_name(r->err), r->status,
                 mg_error_name(err));
    assert_int_equal(r->status, mg_error_status(err));
    assert_true(r->ended);
}

static void assert_ok_from(const struct resp *r, int status, const char *body)
{
    assert_true(r->proxied);
    assert_int_equal(r->status, status);
    assert_true(r->ended);
    assert_int_equal(r->body_len, strlen(body));
    assert_memory_equal(r->body, body, r->body_len);
}

/* ================================================================ 1. retry verdicts */

static const char RETRY_UPSTREAM[] = "    retry:\n"
                                     "      max_retries: 2\n"
                                     "      on: [connect_failure, reset, 503]\n"
                                     "      backoff: {base: 5ms, max: 20ms}\n";

static void get_503_is_retried_on_another_target_post_reset_is_not_connect_failure_is(void **st)
{
    (void)st;
    env_start(RETRY_UPSTREAM, "", false);

    /* GET: 503 from the first target, 200 from the next one after a backoff. */
    script((struct try_script){
        .nev = 3, .ev = {{EV_HEAD, 503, NULL}, {EV_DATA, 0, "busy"}, {EV_END, 0, NULL}}});
    struct fdown *d = client();
    send_bytes(d, GET);
    assert_state(d, MG_X_BACKOFF);
    assert_int_equal(d->nresp, 0); /* the 503 was swallowed */
    assert_int_equal(U.ntried, 1);
    assert_true(U.conns[0]->released);
    assert_false(U.conns[0]->reuse); /* its body unread: never back to the pool */
    assert_int_equal(d->x.attempts, 1);
    run_until_state(d, MG_X_IDLE, 2000);
    assert_int_equal(U.ntried, 2);
    assert_int_not_equal(U.tried[0], U.tried[1]);
    assert_int_equal(d->nresp, 1);
    assert_ok_from(&d->resp[0], 200, target_addr(U.tried[1]));
    assert_true(U.conns[1]->released);
    assert_true(U.conns[1]->reuse);
    assert_int_equal(d->idles, 1);
    assert_int_equal(d->closes, 0);
    /* The 503 is a failure status: the first target's breaker heard it. */
    assert_int_equal(mg_breaker_failures(&upstream_rt()->targets[U.tried[0]].stats->breaker), 1);
    assert_int_equal(mg_breaker_failures(&upstream_rt()->targets[U.tried[1]].stats->breaker), 0);

    /* POST that reached the upstream and broke (reset): never repeated. */
    U.ntried = 0;
    script((struct try_script){.nev = 1, .ev = {{EV_ERROR, 0, "connection reset"}}});
    int conns_before = U.nconns;
    send_bytes(d, "POST /items HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello");
    assert_state(d, MG_X_IDLE);
    assert_int_equal(U.ntried, 1);
    assert_int_equal(d->nresp, 2);
    assert_error(&d->resp[1], MG_ERR_UPSTREAM_UNAVAILABLE);
    struct fconn *c = U.conns[conns_before];
    assert_true(c->started);
    assert_int_equal(c->sent_len, 5);
    assert_memory_equal(c->sent, "hello", 5);
    assert_true(c->released);
    assert_false(c->reuse);
    assert_int_equal(d->closes, 0); /* the request was whole: the connection stays */

    /* POST whose connect failed: it never reached the upstream, so it is retried. */
    U.ntried = 0;
    script((struct try_script){.acquire_rc = UV_ECONNREFUSED});
    conns_before = U.nconns;
    send_bytes(d, "POST /items HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nworld");
    assert_state(d, MG_X_BACKOFF);
    assert_int_equal(U.ntried, 1);
    assert_int_equal(U.nconns, conns_before); /* nothing leased */
    run_until_state(d, MG_X_IDLE, 2000);
    assert_int_equal(U.ntried, 2);
    assert_int_not_equal(U.tried[0], U.tried[1]);
    assert_int_equal(d->nresp, 3);
    assert_ok_from(&d->resp[2], 200, target_addr(U.tried[1]));
    c = U.conns[conns_before];
    assert_int_equal(c->sent_len, 5); /* the whole body went to the second target */
    assert_memory_equal(c->sent, "world", 5);
    assert_true(c->req_ended);

    env_stop();
}

/* ================================================================ 2. deadline */

static void route_deadline_answers_504_and_releases_the_connection(void **st)
{
    (void)st;
    env_start("", "    timeout: 50ms\n", false);
    script((struct try_script){.nev = 0}); /* leased, then silent */
    struct fdown *d = client();
    uint64_t t0 = now_ms();
    send_bytes(d, GET);
    assert_state(d, MG_X_FORWARD);
    assert_true(U.conns[0]->started);
    assert_true(U.conns[0]->reading);
    /* The upstream read timer is armed (30s default), the fake never fires it. */
    assert_int_equal(U.conns[0]->timeout_ms, 30000);
    run_until_state(d, MG_X_IDLE, 2000);
    assert_true(now_ms() - t0 >= 45);
    assert_int_equal(d->nresp, 1);
    assert_error(&d->resp[0], MG_ERR_UPSTREAM_TIMEOUT);
    assert_int_equal(U.nconns, 1);
    assert_true(U.conns[0]->released);
    assert_false(U.conns[0]->reuse);
    assert_int_equal(U.ntried, 1); /* no retry: the deadline covers every try */
    /* The timeout is the target's failure. */
    struct mg_target_stats *ts = upstream_rt()->targets[U.tried[0]].stats;
    assert_int_equal(mg_breaker_failures(&ts->breaker), 1);
    assert_int_equal(atomic_load(&ts->failures), 1);
    assert_int_equal(mg_bulkhead_in_use(&upstream_stats()->bulkhead), 0);
    assert_int_equal(d->idles, 1);
    assert_int_equal(d->closes, 0);
    env_stop();
}

/* ================================================================ 3. breaker */

static const char BREAKER_UPSTREAM[] = "    retry: {max_retries: 0}\n"
                                       "    circuit_breaker: {consecutive_failures: 1, "
                                       "open_for: 10s, max_open_for: 1m}\n";

static void open_breaker_is_skipped_and_all_open_answers_circuit_open(void **st)
{
    (void)st;
    env_start(BREAKER_UPSTREAM, "", false);
    struct fdown *d = client();

    /* A failing exchange trips its target's breaker (one failure is enough). */
    script((struct try_script){.nev = 2, .ev = {{EV_HEAD, 502, NULL}, {EV_END, 0, NULL}}});
    send_bytes(d, GET);
    assert_state(d, MG_X_IDLE);
    assert_int_equal(d->resp[0].status, 502); /* passed on: no retries configured */
    int bad = U.tried[0], good = 1 - bad;
    uint64_t now = uv_now(&E.ctx.loop);
    assert_int_equal(mg_breaker_state(&upstream_rt()->targets[bad].stats->breaker, now),
                     MG_CIRCUIT_OPEN);

    /* The next exchanges are never offered to it. */
    for (int i = 0; i < 4; i++) {
        send_bytes(d, GET);
        assert_state(d, MG_X_IDLE);
        assert_ok_from(&d->resp[1 + i], 200, target_addr(good));
    }
    assert_int_equal(U.ntried, 5);
    for (int i = 1; i < 5; i++)
        assert_int_equal(U.tried[i], good);

    /* The other one trips through the breaker API. */
    struct mg_target_stats *gs = upstream_rt()->targets[good].stats;
    const struct mg_breaker_conf *bc = &E.cfg->upstreams[0].breaker;
    uint32_t probe;
    assert_true(mg_breaker_acquire(&gs->breaker, bc, now, &probe));
    mg_breaker_report(&gs->breaker, bc, now, true, probe);
    assert_int_equal(mg_breaker_state(&gs->breaker, now), MG_CIRCUIT_OPEN);

    /* All open: 503 circuit_open with a Retry-After, and no acquire. */
    send_bytes(d, GET);
    assert_state(d, MG_X_IDLE);
    assert_int_equal(U.ntried, 5);
    assert_int_equal(d->nresp, 6);
    assert_error(&d->resp[5], MG_ERR_CIRCUIT_OPEN);
    assert_true(d->resp[5].retry_after_s > 0);
    assert_true(d->resp[5].retry_after_s <= 10);
    assert_int_equal(d->x.retry_after_s, 0); /* reset with the exchange */
    assert_int_equal(d->closes, 0);
    env_stop();
}

/* ================================================================ 4. bulkhead */

static void bulkhead_queue_hands_the_slot_over_at_the_loop_boundary(void **st)
{
    (void)st;
    env_start("    bulkhead: {max_concurrent: 1, max_queue: 1, queue_timeout: 5s}\n", "", false);
    struct mg_bulkhead *bh = &upstream_stats()->bulkhead;
    struct fdown *a = client(), *b = client(), *c = client();

    script((struct try_script){.later = true,
                               .nev = 3,
                               .ev = {{EV_HEAD, 200, NULL}, {EV_DATA, 0, "A"}, {EV_END, 0, NULL}}});
    send_bytes(a, GET);
    assert_state(a, MG_X_CONNECT); /* slot held, connecting */
    assert_true(a->x.slot_held);
    assert_int_equal(mg_bulkhead_in_use(bh), 1);

    send_bytes(b, GET);
    assert_state(b, MG_X_QUEUED);
    assert_false(b->x.slot_held);
    assert_int_equal(mg_bulkhead_queued(bh), 1);

    send_bytes(c, GET);
    assert_state(c, MG_X_IDLE);
    assert_int_equal(c->nresp, 1);
    assert_error(&c->resp[0], MG_ERR_BULKHEAD_FULL);
    assert_int_equal(c->resp[0].retry_after_s, 1);
    assert_int_equal(atomic_load(&upstream_stats()->rejected), 1);
    assert_int_equal(U.ntried, 1); /* only A reached acquire */

    /* A connects and completes; its slot becomes B's grant, but B runs only at
     * the worker's next loop boundary. */
    assert_int_equal(E.wakes, 0);
    fake_connect(U.conns[0], 0);
    assert_state(a, MG_X_IDLE);
    assert_ok_from(&a->resp[0], 200, "A");
    assert_int_equal(E.wakes, 1);
    assert_state(b, MG_X_QUEUED);
    assert_int_equal(U.ntried, 1);
    assert_int_equal(mg_bulkhead_in_use(bh), 1); /* handed over, not freed */
    assert_int_equal(mg_bulkhead_granted(bh), 1);

    mg_admission_drain(0); /* what the worker's wakeup runs */
    assert_int_equal(mg_bulkhead_granted(bh), 0);
    assert_int_equal(U.ntried, 2);
    assert_state(b, MG_X_IDLE);
    assert_int_equal(b->nresp, 1);
    assert_ok_from(&b->resp[0], 200, target_addr(U.tried[1]));
    assert_int_equal(mg_bulkhead_in_use(bh), 0);
    assert_int_equal(mg_bulkhead_queued(bh), 0);
    assert_int_equal(E.wakes, 1); /* nobody waited on B's release */
    env_stop();
}

/* ================================================================ 5. idempotency */

static const char KEYED_POST[] = "POST /orders HTTP/1.1\r\nHost: example.com\r\n"
                                 "Idempotency-Key: order-42\r\nContent-Length: 7\r\n\r\n"
                                 "{\"n\":1}";

static void keyed_post_is_replayed_from_the_memory_store(void **st)
{
    (void)st;
    env_start("", "    idempotency: {store: memory}\n", true);
    struct fdown *d = client();

    script((struct try_script){
        .nev = 3, .ev = {{EV_HEAD, 201, NULL}, {EV_DATA, 0, "{\"id\":7}"}, {EV_END, 0, NULL}}});
    send_bytes(d, KEYED_POST);
    assert_state(d, MG_X_LOOKUP); /* the body was buffered; the store answers later */
    assert_int_equal(U.ntried, 0);
    run_until_state(d, MG_X_IDLE, 2000); /* forwarded, then COMMIT until the store kept it */
    assert_int_equal(U.ntried, 1);
    assert_int_equal(U.conns[0]->sent_len, 7);
    assert_memory_equal(U.conns[0]->sent, "{\"n\":1}", 7);
    assert_int_equal(d->nresp, 1);
    assert_ok_from(&d->resp[0], 201, "{\"id\":7}");
    struct mg_idem_memstats ms;
    mg_idem_memtable_stats(E.idem_table, &ms);
    assert_int_equal(ms.entries, 1);
    assert_int_equal(ms.in_flight, 0); /* completed, not a lock */

    send_bytes(d, KEYED_POST);
    run_until_state(d, MG_X_IDLE, 2000);
    assert_int_equal(U.ntried, 1); /* no second acquire */
    assert_int_equal(d->nresp, 2);
    struct resp *r = &d->resp[1];
    assert_false(r->proxied); /* send_response, from the record */
    assert_true(r->via);
    assert_int_equal(r->status, 201);
    assert_non_null(strstr(r->fields, "Idempotent-Replayed: true\n"));
    assert_non_null(strstr(r->fields, "Content-Type: text/plain\n"));
    assert_int_equal(r->body_len, 8);
    assert_memory_equal(r->body, "{\"id\":7}", 8);
    assert_int_equal(d->closes, 0);
    env_stop();
}

/* ================================================================ 6. client gone */

static void client_gone_mid_response_releases_everything(void **st)
{
    (void)st;
    env_start("", "", false);
    struct fdown *d = client();
    script((struct try_script){.nev = 6,
                               .ev = {{EV_HEAD, 200, NULL},
                                      {EV_DATA, 0, "part1"},
                                      {EV_PAUSE, 0, NULL},
                                      {EV_DATA, 0, "part2"},
                                      {EV_PAUSE, 0, NULL},
                                      {EV_END, 0, NULL}}});
    send_bytes(d, GET);
    assert_state(d, MG_X_FORWARD);
    assert_int_equal(d->nresp, 1);
    assert_true(d->resp[0].proxied);
    assert_false(d->resp[0].ended);
    fake_resume(U.conns[0]); /* more of the body arrives */
    assert_state(d, MG_X_FORWARD);
    assert_int_equal(d->resp[0].body_len, 10);
    assert_memory_equal(d->resp[0].body, "part1part2", 10);
    assert_int_equal(mg_bulkhead_in_use(&upstream_stats()->bulkhead), 1);
    struct fconn *c = U.conns[0];
    struct mg_target_stats *ts = upstream_rt()->targets[c->target].stats;
    assert_int_equal(atomic_load(&ts->active), 1);

    /* EOF from a client whose request was whole: its response still goes on
     * (a client may half-close after sending), so the exchange stays. */
    d->eof = true;
    mg_exchange_hooks.event(&d->x, MG_XEV_RUN);
    assert_state(d, MG_X_FORWARD);
    assert_false(d->closed);

    /* Then the connection goes (a write to it failed): the exchange is closed. */
    conn_close(d);
    assert_true(d->x.closing);
    assert_true(c->released);
    assert_false(c->reuse); /* a response cut short: the connection is closed */
    assert_int_equal(mg_bulkhead_in_use(&upstream_stats()->bulkhead), 0);
    assert_int_equal(atomic_load(&ts->active), 0);
    assert_int_equal(upstream_rt()->targets[c->target].active, 0);
    /* The breaker heard the 200 head as a success, and nothing else. */
    assert_int_equal(mg_breaker_failures(&ts->breaker), 0);
    assert_int_equal(atomic_load(&ts->failures), 0);
    assert_int_equal(mg_breaker_state(&ts->breaker, uv_now(&E.ctx.loop)), MG_CIRCUIT_CLOSED);
    /* Events after the close are ignored. */
    mg_exchange_hooks.event(&d->x, MG_XEV_RUN);
    assert_int_equal(d->nresp, 1);
    assert_false(d->resp[0].ended);

    assert_false(d->x_closed); /* the timers close on the loop */
    uv_run(&E.ctx.loop, UV_RUN_NOWAIT);
    assert_true(d->x_closed);
    env_stop();
}

/* A client leaving while its request body is still arriving is cut off at once
 * (client_gone_midway), queued or not. */
static void client_gone_mid_request_body_closes_at_once(void **st)
{
    (void)st;
    env_start("    bulkhead: {max_concurrent: 1, max_queue: 1, queue_timeout: 5s}\n", "", false);
    struct fdown *a = client(), *b = client();
    script((struct try_script){.later = true});
    send_bytes(a, "POST /items HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\nhalf");
    assert_state(a, MG_X_CONNECT);
    send_bytes(b, "POST /items HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\nhalf");
    assert_state(b, MG_X_QUEUED);
    assert_int_equal(mg_bulkhead_queued(&upstream_stats()->bulkhead), 1);

    b->eof = true; /* the queued one leaves */
    mg_exchange_hooks.event(&b->x, MG_XEV_RUN);
    assert_true(b->closed);
    assert_int_equal(b->closes, 1);
    assert_int_equal(b->nresp, 0);
    assert_int_equal(mg_bulkhead_queued(&upstream_stats()->bulkhead), 0);

    fake_connect(U.conns[0], 0); /* A's request starts going up: 4 of 10 bytes */
    assert_state(a, MG_X_FORWARD);
    assert_int_equal(U.conns[0]->sent_len, 4);
    a->eof = true;
    mg_exchange_hooks.event(&a->x, MG_XEV_RUN);
    assert_true(a->closed);
    assert_int_equal(a->nresp, 0);
    assert_true(U.conns[0]->released);
    assert_false(U.conns[0]->reuse);
    assert_int_equal(mg_bulkhead_in_use(&upstream_stats()->bulkhead), 0);
    /* Outcome unknown: cancelled, not a failure. */
    struct mg_target_stats *ts = upstream_rt()->targets[U.tried[0]].stats;
    assert_int_equal(mg_breaker_failures(&ts->breaker), 0);
    assert_int_equal(E.wakes, 0); /* nobody was left waiting */
    env_stop();
}

int main(void)
{
    mg_log_threshold = getenv("TEST_DEBUG") ? MG_LOG_DEBUG : MG_LOG_ERROR;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(get_503_is_retried_on_another_target_post_reset_is_not_connect_failure_is),
        cmocka_unit_test(route_deadline_answers_504_and_releases_the_connection),
        cmocka_unit_test(open_breaker_is_skipped_and_all_open_answers_circuit_open),
        cmocka_unit_test(bulkhead_queue_hands_the_slot_over_at_the_loop_boundary),
        cmocka_unit_test(keyed_post_is_replayed_from_the_memory_store),
        cmocka_unit_test(client_gone_mid_response_releases_everything),
        cmocka_unit_test(client_gone_mid_request_body_closes_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
