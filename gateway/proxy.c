/*
 * The proxy: one client connection, one exchange at a time, and the state machine
 * that carries the exchange's request to an upstream target and its response back.
 *
 * Reading top to bottom: buffers and writes; the exchange states; the request head
 * (scan, copy, parse, check); routing and the upstream request head; the response
 * head and body; errors; advance(), the only place states change; libuv callbacks,
 * which record what happened and call advance().
 *
 * Ownership: a struct mg_conn is malloc'd at accept and freed when its three
 * handles are closed and no upstream write points into its read buffer. The
 * exchange is embedded in the conn and owns an arena holding everything it
 * allocates; the arena is reset when the exchange ends. Bodies are never copied:
 * writes point into the read buffer of the other side, which is "pinned" (not
 * rewound) until those writes complete. That pin is also the backpressure: a side
 * stops reading when its buffer is full of pinned bytes.
 */
#include "proxy.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdatomic.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config-t.h"
#include "core/arena.h"
#include "core/deadline.h"
#include "core/errors.h"
#include "core/log.h"
#include "http/headscan.h"
#include "http/body.h"
#include "http/message.h"
#include "http/request.h"
#include "http/writer.h"
#include "lua/vm.h"
#include "obs/accesslog.h"
#include "obs/metrics.h"
#include "resilience/breaker.h"
#include "resilience/admission.h"
#include "resilience/bulkhead.h"
#include "resilience/registry.h"
#include "resilience/retry.h"
#include "balancer.h"
#include "router.h"
#include "upstream.h"
#include "worker.h"
#include "proxy-t.h"

static const char *const state_names[] = {"idle",   "head",    "buffer",  "lookup",
                                          "queued", "connect", "backoff", "forward",
                                          "tunnel", "commit",  "finish"};
_Static_assert(sizeof state_names / sizeof state_names[0] == MG_X_FINISH + 1, "one name per state");

static struct mg_accesslog *access_log;

void mg_proxy_set_accesslog(struct mg_accesslog *l)
{
    access_log = l;
}

/* client.max_connections holds for the whole process, across workers. */
static atomic_uint client_connections;

static void advance(struct mg_conn *c);
static void fail(struct mg_conn *c, enum mg_error err, const char *why);
static void detach_upstream(struct mg_conn *c, bool reuse);
static void upstream_failed(struct mg_conn *c, unsigned kind, bool reached, enum mg_error err,
                            const char *why);
static void conn_close(struct mg_conn *c);
static const llhttp_settings_t request_settings;
static const llhttp_settings_t response_settings;
static const struct mg_upconn_ops upstream_ops;
static void response_done(struct mg_conn *c);

/* ------------------------------------------------------------------ writes */

static struct mg_wreq *wreq_new(struct mg_conn *c)
{
    struct mg_worker *w = c->w;
    struct mg_wreq *r = w->free_wreqs;
    if (r)
        w->free_wreqs = r->next_free;
    else if (!(r = malloc(sizeof *r)))
        mg_fatal("out of memory (write request)");
    r->conn = c;
    r->dst_up = NULL;
    r->pin_up = NULL;
    r->pins_conn = false;
    r->nbufs = r->nscratch = 0;
    r->req.data = r;
    return r;
}

static void wreq_free(struct mg_worker *w, struct mg_wreq *r)
{
    r->next_free = w->free_wreqs;
    w->free_wreqs = r;
}

static void conn_maybe_free(struct mg_conn *c);

/* Arms the upstream connection's timer for what the exchange waits on now: the
 * upstream taking our bytes (send timeout) or answering (read timeout). Time the
 * client makes us wait (a slow upload, a slow reader) is not the upstream's fault
 * and runs no upstream timer. `progress`: the upstream just moved, restart it. */
static void sync_upstream_timer(struct mg_conn *c, bool progress)
{
    struct mg_exchange *x = &c->x;
    if (x->state != MG_X_FORWARD || !x->up)
        return;
    const struct mg_upstream_conf *uc = x->route->upstream;
    uint8_t want = MG_UPT_NONE;
    if (x->up_writes > 0)
        want = MG_UPT_SEND;
    else if (x->req_done && !x->resp_done && x->up->reading)
        want = MG_UPT_READ;
    if (want == x->up_timer && !progress)
        return;
    x->up_timer = want;
    mg_upconn_set_timeout(x->up, want == MG_UPT_SEND   ? uc->send_timeout_ms
                                 : want == MG_UPT_READ ? uc->read_timeout_ms
                                                       : 0);
}

static void on_client_write(uv_write_t *req, int status)
{
    struct mg_wreq *r = req->data;
    struct mg_conn *c = r->conn;
    struct mg_upconn *pinned = r->pin_up;
    wreq_free(c->w, r);
    c->writes--;
    if (pinned)
        mg_upconn_unpin(pinned);
    if (c->closing) {
        conn_maybe_free(c);
        return;
    }
    if (status < 0) {
        mg_debug("client write failed: %s", uv_strerror(status));
        conn_close(c);
        return;
    }
    advance(c);
}

static void on_upstream_write(uv_write_t *req, int status)
{
    struct mg_wreq *r = req->data;
    struct mg_conn *c = r->conn;
    struct mg_upconn *dst = r->dst_up;
    bool pinned = r->pins_conn;
    wreq_free(c->w, r);
    if (pinned)
        c->pins--;
    if (c->closing) {
        conn_maybe_free(c);
        return;
    }
    if (dst != c->x.up)
        return;
    c->x.up_writes--;
    if (status == UV_ECANCELED)
        return;
    if (status < 0) {
        upstream_failed(c, MG_RETRY_ON_RESET, true, MG_ERR_UPSTREAM_UNAVAILABLE,
                        uv_strerror(status));
        advance(c);
        return;
    }
    sync_upstream_timer(c, true);
    advance(c);
}

/* Writes what the socket takes now. uv_try_write needs no request, no callback
 * and, unlike a completed uv_write in libuv 1.44, no epoll_ctl afterwards: in the
 * common case the whole response goes out in one writev and costs one syscall.
 * Returns 1 when everything was written, 0 when r now holds the rest, <0 on error. */
static int write_now(uv_stream_t *s, struct mg_wreq *r)
{
    int n = uv_try_write(s, r->bufs, r->nbufs);
    if (n == UV_EAGAIN)
        n = 0;
    if (n < 0)
        return n;
    size_t left = (size_t)n;
    unsigned i = 0;
    while (i < r->nbufs && left >= r->bufs[i].len)
        left -= r->bufs[i++].len;
    if (i == r->nbufs)
        return 1;
    r->bufs[i].base += left;
    r->bufs[i].len -= (unsigned)left;
    memmove(r->bufs, r->bufs + i, (r->nbufs - i) * sizeof r->bufs[0]);
    r->nbufs -= i;
    return 0;
}

static void flush_client(struct mg_conn *c)
{
    struct mg_wreq *r = c->out_client;
    if (!r)
        return;
    c->out_client = NULL;
    c->x.resp_flushed |= c->x.resp_started;
    int rc = c->writes ? 0 : write_now((uv_stream_t *)&c->tcp, r);
    if (rc == 1) {
        wreq_free(c->w, r);
        c->flushed_now = true;
        return;
    }
    if (rc == 0) {
        if (r->pin_up)
            r->pin_up->pins++;
        c->writes++;
        rc = uv_write(&r->req, (uv_stream_t *)&c->tcp, r->bufs, r->nbufs, on_client_write);
        if (rc) {
            /* uv_write failing synchronously never calls the callback. */
            c->writes--;
            if (r->pin_up)
                r->pin_up->pins--;
        }
    }
    if (rc < 0) {
        mg_debug("client write failed: %s", uv_strerror(rc));
        wreq_free(c->w, r);
        conn_close(c);
    }
}

static void flush_upstream(struct mg_conn *c)
{
    struct mg_wreq *r = c->out_up;
    if (!r)
        return;
    c->out_up = NULL;
    int rc = c->x.up_writes ? 0 : write_now((uv_stream_t *)&r->dst_up->tcp, r);
    if (rc == 1) {
        wreq_free(c->w, r);
        c->flushed_now = true;
        return;
    }
    if (rc == 0) {
        if (r->pins_conn)
            c->pins++;
        c->x.up_writes++;
        rc =
            uv_write(&r->req, (uv_stream_t *)&r->dst_up->tcp, r->bufs, r->nbufs, on_upstream_write);
        if (rc) {
            if (r->pins_conn)
                c->pins--;
            c->x.up_writes--;
        }
    }
    if (rc < 0) {
        wreq_free(c->w, r);
        upstream_failed(c, MG_RETRY_ON_RESET, true, MG_ERR_UPSTREAM_UNAVAILABLE, uv_strerror(rc));
    }
}

/* Queues bytes for the client. `pin` is the upstream connection whose read buffer
 * holds them, or NULL for arena or static memory. */
static void to_client(struct mg_conn *c, const void *p, size_t len, struct mg_upconn *pin)
{
    if (len == 0)
        return;
    c->x.bytes_out += len;
    if (c->out_client && (c->out_client->nbufs == MG_WREQ_MAX_BUFS ||
                          (pin && c->out_client->pin_up && c->out_client->pin_up != pin)))
        flush_client(c);
    if (!c->out_client)
        c->out_client = wreq_new(c);
    struct mg_wreq *r = c->out_client;
    if (pin)
        r->pin_up = pin;
    r->bufs[r->nbufs++] = uv_buf_init((char *)p, (unsigned)len);
}

/* Queues bytes for the exchange's upstream connection. */
static void to_upstream(struct mg_conn *c, const void *p, size_t len, bool pins_conn)
{
    if (len == 0)
        return;
    if (c->out_up && c->out_up->nbufs == MG_WREQ_MAX_BUFS)
        flush_upstream(c);
    if (!c->out_up) {
        c->out_up = wreq_new(c);
        c->out_up->dst_up = c->x.up;
    }
    struct mg_wreq *r = c->out_up;
    r->pins_conn |= pins_conn;
    r->bufs[r->nbufs++] = uv_buf_init((char *)p, (unsigned)len);
}

/* A chunk of a chunked body: size line, data, CRLF. */
static void chunk_to(struct mg_conn *c, bool upstream, const char *p, size_t len,
                     struct mg_upconn *pin)
{
    /* Towards the upstream, body bytes come from the client buffer unless they are
     * a retry's copy from the arena. */
    bool pin_conn = upstream && p >= c->buf && p < c->buf + MG_BUF_SIZE;
    struct mg_wreq **slot = upstream ? &c->out_up : &c->out_client;
    if (*slot && (*slot)->nbufs + 3 > MG_WREQ_MAX_BUFS) {
        if (upstream)
            flush_upstream(c);
        else
            flush_client(c);
    }
    if (!*slot) {
        *slot = wreq_new(c);
        if (upstream)
            (*slot)->dst_up = c->x.up;
    }
    char *line = (*slot)->scratch[(*slot)->nscratch++];
    size_t n = mg_http_put_hex(line, len, 1);
    line[n++] = '\r';
    line[n++] = '\n';
    if (upstream) {
        to_upstream(c, line, n, false);
        to_upstream(c, p, len, pin_conn);
        to_upstream(c, "\r\n", 2, false);
    } else {
        to_client(c, line, n, NULL);
        to_client(c, p, len, pin);
        to_client(c, "\r\n", 2, NULL);
    }
}

/* ------------------------------------------------------------------ helpers */

static struct mg_slice hdr_value(const struct mg_headers *h, int idx)
{
    return idx >= 0 ? h->v[idx].value : (struct mg_slice){NULL, 0};
}

static struct mg_slice request_host(const struct mg_exchange *x)
{
    return x->authority.len ? x->authority : hdr_value(&x->req_hdrs, x->host_idx);
}

/* ------------------------------------------------------------- plugins */

static struct mg_lua_str lua_str(struct mg_slice s)
{
    return (struct mg_lua_str){s.p, s.len};
}

static const struct mg_lua_header *lua_headers(struct mg_arena *a, const struct mg_headers *h)
{
    struct mg_lua_header *v = mg_arena_alloc(a, sizeof *v * (h->n ? h->n : 1));
    for (uint32_t i = 0; i < h->n; i++)
        v[i] = (struct mg_lua_header){lua_str(h->v[i].name), lua_str(h->v[i].value)};
    return v;
}

/* The request half of the plugins' ctx, filled once, when a first phase runs:
 * requests on routes without plugins never pay for it. */
static struct mg_lua_ctx *lua_ctx(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    if (x->lua_ready)
        return &x->lua;
    x->lua_ready = true;
    mg_lua_ctx_init(&x->lua, &x->arena);
    const char *m = llhttp_method_name((llhttp_method_t)x->method);
    const char *q = memchr(x->url.p, '?', x->url.len);
    x->lua.method = (struct mg_lua_str){m, strlen(m)};
    x->lua.path = lua_str(x->path);
    x->lua.query = q ? (struct mg_lua_str){q + 1, (size_t)(x->url.p + x->url.len - q - 1)}
                     : (struct mg_lua_str){NULL, 0};
    x->lua.client_ip = (struct mg_lua_str){c->client_ip, strlen(c->client_ip)};
    x->lua.route = (struct mg_lua_str){x->route->name, strlen(x->route->name)};
    x->lua.request_id = (struct mg_lua_str){x->request_id, strlen(x->request_id)};
    x->lua.req_headers = lua_headers(&x->arena, &x->req_hdrs);
    x->lua.n_req_headers = x->req_hdrs.n;
    return &x->lua;
}

static bool lua_active(const struct mg_exchange *x, enum mg_lua_phase phase)
{
    return x->route && mg_lua_route_active(x->rt->lua, x->route->index, phase);
}

static bool edited(const struct mg_lua_edit *e, struct mg_slice name)
{
    for (; e; e = e->next)
        if (mg_slice_ieq((struct mg_slice){e->name.p, e->name.len}, name))
            return true;
    return false;
}

static size_t edits_size(const struct mg_lua_edit *e)
{
    size_t n = 0;
    for (; e; e = e->next)
        n += e->name.len + (e->value.p ? e->value.len : 0) + 4;
    return n;
}

static void headers_init(struct mg_arena *a, struct mg_headers *h)
{
    h->n = 0;
    h->cap = 32;
    h->v = mg_arena_alloc(a, sizeof(struct mg_header) * h->cap);
}

static int headers_add_name(struct mg_arena *a, struct mg_headers *h, const char *p, size_t len)
{
    if (h->n > 0 && h->v[h->n - 1].value.p == NULL) {
        /* A name delivered in two pieces: they are contiguous in our copy. */
        h->v[h->n - 1].name.len += len;
        return 0;
    }
    if (h->n == MG_MAX_HEADERS)
        return -1;
    if (h->n == h->cap) {
        struct mg_header *v = mg_arena_alloc(a, sizeof *v * h->cap * 2);
        memcpy(v, h->v, sizeof *v * h->n);
        h->v = v;
        h->cap *= 2;
    }
    h->v[h->n++] = (struct mg_header){{p, len}, {NULL, 0}, 0};
    return 0;
}

static void headers_add_value(struct mg_headers *h, const char *p, size_t len)
{
    struct mg_header *f = &h->v[h->n - 1];
    if (f->value.p)
        f->value.len += len;
    else
        f->value = (struct mg_slice){p, len};
}

/* Appends to a growing arena buffer; returns -1 past `limit`. */
int mg_px_append(struct mg_arena *a, char **buf, size_t *len, size_t *cap, const char *p, size_t n,
                 size_t limit)
{
    if (*len + n > *cap) {
        if (*len + n > limit)
            return -1;
        size_t ncap = *cap ? *cap * 2 : 2048;
        while (ncap < *len + n)
            ncap *= 2;
        if (ncap > limit)
            ncap = limit;
        char *nb = mg_arena_alloc(a, ncap);
        if (*len)
            memcpy(nb, *buf, *len);
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    return 0;
}

static uint64_t next_random(struct mg_worker *w)
{
    /* xorshift64*: request ids need uniqueness, not secrecy. */
    uint64_t x = w->rand_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rand_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void generate_request_id(struct mg_conn *c)
{
    static const char digits[] = "0123456789abcdef";
    char *o = c->x.request_id;
    for (int half = 0; half < 2; half++) {
        uint64_t r = next_random(c->w);
        for (int i = 0; i < 16; i++, r >>= 4)
            *o++ = digits[r & 15];
    }
    *o = '\0';
}

static void make_request_id(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    struct mg_slice given = hdr_value(&x->req_hdrs, x->rid_idx);
    if (mg_http_request_id_valid(given, MG_REQUEST_ID_MAX)) {
        memcpy(x->request_id, given.p, given.len);
        x->request_id[given.len] = '\0';
        return;
    }
    generate_request_id(c);
}

/* --------------------------------------------------------- error responses */

/* The gateway's own JSON error answer (DESIGN section 4). */
static void queue_error_response(struct mg_conn *c, enum mg_error err)
{
    struct mg_exchange *x = &c->x;
    if (!x->request_id[0])
        generate_request_id(c);
    int status = mg_error_status(err);
    char body[360], original[40] = "";
    if (err == MG_ERR_IDEMPOTENCY_REPLAY_UNAVAILABLE)
        snprintf(original, sizeof original, ",\"original_status\":%u", x->idem.original_status);
    int blen =
        snprintf(body, sizeof body, "{\"error\":\"%s\",\"status\":%d%s,\"request_id\":\"%s\"}\n",
                 mg_error_name(err), status, original, x->request_id);
    MG_ASSERT(blen > 0 && (size_t)blen < sizeof body);
    struct mg_http_tail tail = {
        .request_id = x->request_id,
        .framing = MG_HTTP_FRAME_LENGTH,
        .length = (uint64_t)blen,
        .conn = mg_http_conn_for(x->close_after, x->http_minor),
    };
    size_t cap = MG_HTTP_STATUS_LINE_SIZE(MG_HTTP_REASON_MAX) +
                 MG_HTTP_FIELD_SIZE(12, 16) +              /* Content-Type */
                 MG_HTTP_FIELD_SIZE(11, MG_HTTP_DEC_MAX) + /* Retry-After */
                 mg_http_tail_max(&tail) + (size_t)blen;
    char *o = mg_arena_alloc(&x->arena, cap), *start = o;
    o = mg_http_put_status(o, status);
    o = mg_http_put_field(o, MG_SLICE_LIT("Content-Type"), MG_SLICE_LIT("application/json"));
    if (status == 503 || err == MG_ERR_IDEMPOTENCY_CONFLICT) {
        char secs[MG_HTTP_DEC_MAX];
        size_t n = mg_http_put_dec(secs, x->retry_after_s ? x->retry_after_s : 1);
        o = mg_http_put_field(o, MG_SLICE_LIT("Retry-After"), (struct mg_slice){secs, n});
    }
    o = mg_http_put_tail(o, &tail);
    if (!(x->head_parsed && x->method == HTTP_HEAD))
        PUT(o, body, (size_t)blen);
    MG_ASSERT((size_t)(o - start) <= cap);
    x->sent_status = status;
    to_client(c, start, (size_t)(o - start), NULL);
}

/* ------------------------------------------------------- request head parsing */

static const char *parser_reason(const llhttp_t *p)
{
    const char *r = llhttp_get_error_reason(p);
    return r ? r : "malformed message";
}

static struct mg_conn *conn_of(llhttp_t *p)
{
    return p->data;
}

static int on_req_url(llhttp_t *p, const char *at, size_t len)
{
    struct mg_exchange *x = &conn_of(p)->x;
    if (x->url.p)
        x->url.len += len;
    else
        x->url = (struct mg_slice){at, len};
    return 0;
}

/* Header fields of whichever message this parser reads: both parsers of an
 * exchange share these three callbacks. llhttp sees heads only, so trailers
 * never come this way (body.c consumes them: they are not forwarded). */
static struct mg_headers *fields_of(llhttp_t *p)
{
    struct mg_exchange *x = &conn_of(p)->x;
    return p->type == HTTP_REQUEST ? &x->req_hdrs : &x->resp_hdrs;
}

static int on_field(llhttp_t *p, const char *at, size_t len)
{
    return headers_add_name(&conn_of(p)->x.arena, fields_of(p), at, len);
}

static int on_value(llhttp_t *p, const char *at, size_t len)
{
    struct mg_headers *h = fields_of(p);
    if (h->n == 0)
        return -1;
    headers_add_value(h, at, len);
    return 0;
}

static int on_value_complete(llhttp_t *p)
{
    struct mg_headers *h = fields_of(p);
    struct mg_header *f = &h->v[h->n - 1];
    if (!f->value.p)
        f->value = (struct mg_slice){f->name.p + f->name.len, 0};
    return 0;
}

static int on_req_headers_complete(llhttp_t *p)
{
    struct mg_exchange *x = &conn_of(p)->x;
    if (p->http_major != 1)
        return -1; /* an HTTP/0.9-style request line with fields: not HTTP/1.x */
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

/* llhttp parses request heads only: the body is the gateway's own to decode
 * (http/body.h), so no body or message-complete callbacks. */
static const llhttp_settings_t request_settings = {
    .on_url = on_req_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_header_value_complete = on_value_complete,
    .on_headers_complete = on_req_headers_complete,
};

/* A piece of the request body, decoded: into the idempotency buffer, or on to
 * the upstream (re-chunked when the client chunked it), and kept for a retry
 * while small. Returns -1 when it cannot be taken (x->error says why). */
static int request_body_data(struct mg_conn *c, struct mg_slice d)
{
    struct mg_exchange *x = &c->x;
    x->req_body_bytes += d.len;
    if (x->state == MG_X_BUFFER)
        return mg_px_idem_body(c, d.p, d.len);
    if (x->body_copy_ok && x->route->upstream->retry.max_retries > 0)
        x->body_copy_ok = mg_px_append(&x->arena, &x->body_copy, &x->body_copy_len,
                                       &x->body_copy_cap, d.p, d.len, MG_RETRY_BODY_MAX) == 0;
    if (x->req_chunked)
        chunk_to(c, true, d.p, d.len, NULL);
    else
        to_upstream(c, d.p, d.len, true);
    return 0;
}

/* The request message ended: pipelined requests wait in the buffer until this
 * exchange ends. */
static void request_body_done(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    if (x->state >= MG_X_FORWARD && x->req_chunked)
        to_upstream(c, "0\r\n\r\n", 5, false);
    x->req_done = true;
    mg_deadline_set(&c->timer, 0);
}

/* Decides how the request body is delimited (RFC 9112 section 6.3) and sets up
 * its decoder. The framing fields are never forwarded: build_upstream_head
 * writes its own from what the decoder will deliver. */
static enum mg_error request_framing(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    uint64_t limit = x->rt->cfg->client.max_body_size;
    enum mg_framing framing = mg_headers_framing(&x->req_hdrs);
    if (x->http_minor == 0 && framing != MG_FRAMING_NONE && framing != MG_FRAMING_LENGTH)
        return MG_ERR_BAD_REQUEST; /* RFC 9112 section 6.1: faulty framing in HTTP/1.0 */
    switch (framing) {
    case MG_FRAMING_BAD:
        return MG_ERR_BAD_REQUEST;
    case MG_FRAMING_UNSUPPORTED:
        return MG_ERR_NOT_IMPLEMENTED; /* as nginx: codings other than chunked */
    case MG_FRAMING_CHUNKED:
        x->req_chunked = true; /* llhttp agrees (F_CHUNKED); said here for clarity */
        mg_body_init(&x->req_body, MG_BODY_CHUNKED, 0, limit);
        break;
    case MG_FRAMING_LENGTH:
        if (x->req_content_length > limit)
            return MG_ERR_BODY_TOO_LARGE;
        mg_body_init(&x->req_body, MG_BODY_LENGTH, x->req_content_length, limit);
        break;
    default:
        mg_body_init(&x->req_body, MG_BODY_NONE, 0, limit);
        break;
    }
    x->req_done = mg_body_done(&x->req_body);
    return MG_ERR_NONE;
}

/* Finds the headers the gateway acts on and applies the checks llhttp leaves to us. */
static enum mg_error inspect_request(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    x->host_idx = x->rid_idx = x->xff_idx = -1;
    for (uint32_t i = 0; i < x->req_hdrs.n; i++) {
        /* Field names need no check here: llhttp's strict mode rejects non-token
         * bytes, and the head scan rejects the whitespace llhttp would allow. */
        struct mg_header *f = &x->req_hdrs.v[i];
        switch (f->name.len) { /* length first: most fields are none of these */
        case 4:
            if (mg_slice_ieq(f->name, MG_SLICE_LIT("host"))) {
                if (x->host_idx >= 0)
                    return MG_ERR_BAD_REQUEST; /* RFC 9112 section 3.2: exactly one Host */
                x->host_idx = (int)i;
            }
            break;
        case 6:
            if (mg_slice_ieq(f->name, MG_SLICE_LIT("expect")) &&
                mg_slice_ieq(f->value, MG_SLICE_LIT("100-continue"))) {
                x->req_expect_continue = true;
                f->flags |= MG_HDR_HOP; /* the gateway answers it itself */
            }
            break;
        case 12:
            if (mg_slice_ieq(f->name, MG_SLICE_LIT("x-request-id")))
                x->rid_idx = (int)i;
            break;
        case 15:
            if (mg_slice_ieq(f->name, MG_SLICE_LIT("x-forwarded-for")))
                x->xff_idx = (int)i;
            break;
        case 16:
        case 17:
            /* Set by the gateway: a client's value is replaced, never passed on. */
            if (mg_slice_ieq(f->name, MG_SLICE_LIT("x-forwarded-host")) ||
                mg_slice_ieq(f->name, MG_SLICE_LIT("x-forwarded-proto")))
                f->flags |= MG_HDR_HOP;
            break;
        }
    }
    if ((x->http_minor >= 1 && x->host_idx < 0) ||
        (x->host_idx >= 0 && !mg_http_host_valid(x->req_hdrs.v[x->host_idx].value)))
        return MG_ERR_BAD_REQUEST;
    if (!mg_http_target_valid(x->url))
        return MG_ERR_BAD_REQUEST;
    if (mg_http_absolute_form(&x->url, &x->authority) < 0 || x->url.len == 0 || x->url.p[0] != '/')
        return MG_ERR_BAD_REQUEST; /* origin-form or absolute-form only */
    const char *q = memchr(x->url.p, '?', x->url.len);
    x->path = (struct mg_slice){x->url.p, q ? (size_t)(q - x->url.p) : x->url.len};
    if (!mg_http_path_safe(x->path))
        return MG_ERR_BAD_REQUEST;
    enum mg_error err = request_framing(c);
    if (err)
        return err;
    mg_headers_mark_hop_by_hop(&x->req_hdrs);
    /* A field the client listed in Connection is gone, even one the gateway extends. */
    if (x->xff_idx >= 0 && (x->req_hdrs.v[x->xff_idx].flags & MG_HDR_HOP))
        x->xff_idx = -1;
    if (x->rid_idx >= 0 && (x->req_hdrs.v[x->rid_idx].flags & MG_HDR_HOP))
        x->rid_idx = -1;
    return MG_ERR_NONE;
}

/* Parses the complete, copied head. Returns an error or MG_ERR_NONE. */
static enum mg_error parse_request_head(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    llhttp_init(&c->parser, HTTP_REQUEST, &request_settings);
    c->parser.data = c;
    headers_init(&x->arena, &x->req_hdrs);
    llhttp_errno_t e = llhttp_execute(&c->parser, x->head, x->headlen);
    if (e != HPE_OK && e != HPE_PAUSED_UPGRADE) {
        if (x->req_hdrs.n == MG_MAX_HEADERS)
            return MG_ERR_HEADER_TOO_LARGE;
        mg_debug("bad request head: %s", parser_reason(&c->parser));
        return MG_ERR_BAD_REQUEST;
    }
    return inspect_request(c);
}

/* Feeds newly read bytes to the head scanner and copies them into x->head.
 * Returns MG_NEXT when the head is complete and parsed (or failed), MG_AGAIN when
 * more bytes are needed. */
static int read_request_head(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    size_t avail = c->end - c->start, used = 0;
    enum mg_headscan_result r = mg_headscan_feed(&x->scan, c->buf + c->start, avail, &used);
    if (r >= MG_HEADSCAN_BARE_CR) {
        mg_debug("rejecting request: %s", mg_headscan_result_text(r));
        x->close_after = true;
        x->error = r == MG_HEADSCAN_TOO_LARGE ? MG_ERR_HEADER_TOO_LARGE : MG_ERR_BAD_REQUEST;
        return MG_NEXT;
    }
    if (mg_px_append(&x->arena, &x->head, &x->headlen, &x->headcap, c->buf + c->start, used,
                     c->x.rt->cfg->client.max_header_size + 4) < 0) {
        x->close_after = true;
        x->error = MG_ERR_HEADER_TOO_LARGE;
        return MG_NEXT;
    }
    c->start += used;
    if (r == MG_HEADSCAN_MORE)
        return MG_AGAIN;
    x->error = parse_request_head(c);
    if (x->error)
        x->close_after = true;
    return MG_NEXT;
}

/* --------------------------------------------------- routing, upstream request */

/* Appends the edits that set a value ("Name: value\r\n" each). */
static char *put_edits(char *o, const struct mg_lua_edit *e)
{
    for (; e; e = e->next)
        if (e->value.p)
            o = mg_http_put_field(o, (struct mg_slice){e->name.p, e->name.len},
                                  (struct mg_slice){e->value.p, e->value.len});
    return o;
}

static void build_upstream_head(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    struct mg_slice target = x->url;
    if (x->route->strip_prefix && x->prefix_len > 0) {
        size_t cut = x->prefix_len;
        if (x->route->paths && x->path.len >= cut && x->path.p[cut - 1] == '/')
            cut--; /* keep the slash of "/api/" prefixes */
        target = (struct mg_slice){x->url.p + cut, x->url.len - cut};
    }
    struct mg_slice host = request_host(x);
    const char *target_addr = x->target->conf->address.text;
    const struct mg_lua_edit *edits = x->lua_ready ? x->lua.req_edits : NULL;
    size_t cap = x->headlen + strlen(target_addr) + strlen(c->client_ip) + host.len * 2 + 512 +
                 edits_size(edits);
    char *o = mg_arena_alloc(&x->arena, cap), *start = o;
    const char *m = llhttp_method_name((llhttp_method_t)x->method);
    PUT(o, m, strlen(m));
    *o++ = ' ';
    if (target.len == 0 || target.p[0] != '/')
        *o++ = '/';
    PUT(o, target.p, target.len);
    PUT_LIT(o, " HTTP/1.1\r\n");
    for (uint32_t i = 0; i < x->req_hdrs.n; i++) {
        struct mg_header *f = &x->req_hdrs.v[i];
        if ((f->flags & MG_HDR_HOP) || (int)i == x->rid_idx || (int)i == x->xff_idx ||
            ((int)i == x->host_idx && x->authority.len) || (edits && edited(edits, f->name)))
            continue;
        PUT(o, f->name.p, f->name.len);
        PUT_LIT(o, ": ");
        PUT(o, f->value.p, f->value.len);
        PUT_LIT(o, "\r\n");
    }
    if (x->authority.len) {
        PUT_LIT(o, "Host: ");
        PUT(o, x->authority.p, x->authority.len);
        PUT_LIT(o, "\r\n");
    } else if (x->host_idx < 0) {
        PUT_LIT(o, "Host: ");
        PUT(o, target_addr, strlen(target_addr));
        PUT_LIT(o, "\r\n");
    }
    PUT_LIT(o, "X-Forwarded-For: ");
    if (x->xff_idx >= 0) {
        struct mg_slice prev = x->req_hdrs.v[x->xff_idx].value;
        PUT(o, prev.p, prev.len);
        PUT_LIT(o, ", ");
    }
    PUT(o, c->client_ip, strlen(c->client_ip));
    PUT_LIT(o, "\r\nX-Forwarded-Proto: http\r\n");
    if (host.len) {
        PUT_LIT(o, "X-Forwarded-Host: ");
        PUT(o, host.p, host.len);
        PUT_LIT(o, "\r\n");
    }
    PUT_LIT(o, "X-Request-Id: ");
    PUT(o, x->request_id, strlen(x->request_id));
    PUT_LIT(o, "\r\nVia: 1.1 moongate\r\n");
    o = put_edits(o, edits);
    if (x->req_chunked) {
        PUT_LIT(o, "Transfer-Encoding: chunked\r\n");
    } else if (x->req_has_length) {
        PUT_LIT(o, "Content-Length: ");
        o += mg_http_put_dec(o, x->req_content_length);
        PUT_LIT(o, "\r\n");
    }
    if (x->req_upgrade) {
        int up = mg_headers_find(&x->req_hdrs, MG_SLICE_LIT("upgrade"));
        struct mg_slice proto = hdr_value(&x->req_hdrs, up);
        PUT_LIT(o, "Connection: upgrade\r\nUpgrade: ");
        PUT(o, proto.p, proto.len);
        PUT_LIT(o, "\r\n");
    }
    PUT_LIT(o, "\r\n");
    MG_ASSERT((size_t)(o - start) <= cap);
    to_upstream(c, start, (size_t)(o - start), false);
}

/* Routes the parsed request. Returns MG_ERR_NONE with x->route set, or an error. */
static enum mg_error route_request(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    struct mg_slice host = request_host(x);
    x->route = mg_router_match(x->rt->cfg->router, host.p, host.len, x->path.p, x->path.len,
                               x->method, &x->prefix_len);
    if (!x->route)
        return MG_ERR_NO_ROUTE;
    return MG_ERR_NONE;
}

/* ----------------------------------------------------------------- tries */

static void begin_attempt(struct mg_conn *c, struct mg_target_rt *t, uint32_t probe)
{
    struct mg_exchange *x = &c->x;
    x->target = t;
    x->probe = probe;
    x->attempts++;
    x->attempt_open = true;
    x->attempt_reported = false;
    x->attempt_start_ns = uv_hrtime();
    t->active++;
    atomic_fetch_add_explicit(&t->stats->active, 1, memory_order_relaxed);
}

static struct mg_metrics *metrics_of(struct mg_conn *c)
{
    return c->x.rt ? c->x.rt->metrics : c->w->rt->metrics;
}

/* Tells the breaker (and the metrics) how this try went, once. */
static void report_attempt(struct mg_conn *c, bool failure, enum mg_upstream_outcome outcome)
{
    struct mg_exchange *x = &c->x;
    if (!x->attempt_open || x->attempt_reported)
        return;
    x->attempt_reported = true;
    struct mg_upstream_rt *ur = &x->rt->ups[x->route->upstream->index];
    mg_metrics_upstream_outcome(metrics_of(c), (unsigned)c->w->id, x->route->upstream->index,
                                (size_t)(x->target - ur->targets), outcome);
    struct mg_target_stats *st = x->target->stats;
    mg_breaker_report(&st->breaker, &x->route->upstream->breaker, uv_now(&c->w->loop), failure,
                      x->probe);
    if (failure)
        atomic_fetch_add_explicit(&st->failures, 1, memory_order_relaxed);
}

static void end_attempt(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    if (!x->attempt_open)
        return;
    if (!x->attempt_reported)
        mg_breaker_cancel(&x->target->stats->breaker, x->probe); /* outcome unknown */
    x->attempt_open = false;
    x->target->active--;
    atomic_fetch_sub_explicit(&x->target->stats->active, 1, memory_order_relaxed);
}

/* Asks the route's Lua balancer. Returns an index, or -1 to fall back to the C
 * choice (nil or an unavailable target: counted, as DESIGN.md section 6 says);
 * a raised error fails the exchange with plugin_error. */
static int lua_pick(struct mg_conn *c, struct mg_upstream_rt *ur, uint64_t now)
{
    struct mg_exchange *x = &c->x;
    const struct mg_upstream_conf *uc = ur->conf;
    bool fresh = x->tried.n == 0 || mg_balancer_fresh_exists(ur, &x->tried, now);
    for (size_t k = 0; k < uc->ntargets; k++)
        ur->lua_targets[k].available = mg_balancer_offered(ur, k, &x->tried, fresh, now);
    bool error = false;
    int i = mg_lua_balance(x->rt->lua, x->route->index, lua_ctx(c), ur->lua_targets, uc->ntargets,
                           &error);
    if (error) {
        fail(c, MG_ERR_PLUGIN_ERROR, "balance phase");
        return -1;
    }
    if (i < 0)
        mg_debug("balancer of route %s gave no usable target: round robin instead", x->route->name);
    return i;
}

/* Picks a target and leases a connection to it. MG_NEXT when one is ready
 * (pooled) or the exchange failed, MG_AGAIN while connecting. */
static int connect_upstream(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    const struct mg_upstream_conf *uc = x->route->upstream;
    struct mg_upstream_rt *ur = &x->rt->ups[uc->index];
    uint64_t now = uv_now(&c->w->loop);
    uint32_t probe = 0;
    int i = lua_active(x, MG_LUA_BALANCE) ? lua_pick(c, ur, now) : -1;
    if (x->state != MG_X_CONNECT)
        return MG_NEXT; /* the balancer raised */
    if (i >= 0 && !mg_breaker_acquire(&ur->targets[i].stats->breaker, &uc->breaker, now, &probe))
        i = -1;
    for (size_t n = 0; i < 0 && n < uc->ntargets; n++) {
        i = mg_balancer_pick(ur, &x->tried, now);
        if (i < 0 || mg_breaker_acquire(&ur->targets[i].stats->breaker, &uc->breaker, now, &probe))
            break;
        mg_tried_add(&x->tried, (size_t)i); /* lost a race to an opening breaker: next one */
        i = -1;
    }
    if (i < 0) {
        uint64_t wait_ms = UINT64_MAX;
        for (size_t k = 0; k < uc->ntargets; k++) {
            uint64_t ms =
                mg_breaker_retry_after_ms(&ur->targets[k].stats->breaker, &uc->breaker, now);
            wait_ms = ms < wait_ms ? ms : wait_ms;
        }
        x->retry_after_s = (uint32_t)((wait_ms + 999) / 1000);
        fail(c, MG_ERR_CIRCUIT_OPEN, "no target available");
        return MG_NEXT;
    }
    mg_tried_add(&x->tried, (size_t)i);
    begin_attempt(c, &ur->targets[i], probe);
    bool reused = false;
    int rc = mg_upconn_acquire(c->w, x->target, c, &upstream_ops, uc->connect_timeout_ms, &x->up,
                               &reused);
    if (rc) {
        x->up = NULL;
        upstream_failed(c, MG_RETRY_ON_CONNECT_FAILURE, false, MG_ERR_UPSTREAM_UNAVAILABLE,
                        uv_strerror(rc));
        return MG_NEXT;
    }
    x->up_ready = reused;
    return reused ? MG_NEXT : MG_AGAIN;
}

/* ------------------------------------------------------------- retries */

static uint64_t next_random(struct mg_worker *w);

/* Whether a failed try may be repeated (DESIGN.md section 5). `kind` is a
 * MG_RETRY_ON_* bit, or 0 for a status (checked by the caller); `reached`: the
 * request may have reached the upstream (not a connect failure). Spends from the
 * retry budget, so call it only when a retry would follow. */
static bool may_retry(struct mg_conn *c, unsigned kind, bool reached)
{
    struct mg_exchange *x = &c->x;
    const struct mg_upstream_conf *uc = x->route->upstream;
    if (x->resp_started || x->attempts > uc->retry.max_retries || x->req_upgrade ||
        (x->req_body_bytes > 0 && !x->body_copy_ok))
        return false;
    /* A body still arriving can be repeated only if none of it left yet (a
     * connect failure: the bytes still wait in the client buffer). */
    if (!x->req_done && (reached || x->req_body_bytes > 0))
        return false;
    if (kind && !mg_retry_on(&uc->retry, kind))
        return false;
    if (!mg_retry_safe(x->method, reached, x->idem.keyed))
        return false;
    struct mg_upstream_stats *us = x->rt->ups[uc->index].stats;
    return mg_retry_budget_try_spend(&us->budget, &uc->retry, uv_now(&c->w->loop));
}

static void on_wait_timer(uv_timer_t *t);

static void start_backoff(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    const struct mg_retry_conf *rc = &x->route->upstream->retry;
    uint64_t ms = mg_retry_backoff_ms(rc, x->attempts - 1, next_random(c->w));
    x->state = MG_X_BACKOFF;
    uv_timer_start(&c->wait, on_wait_timer, ms, 0);
}

/* A try failed before its response could be used: retry when allowed, else
 * answer with `err`. Does not call advance(). */
static void upstream_failed(struct mg_conn *c, unsigned kind, bool reached, enum mg_error err,
                            const char *why)
{
    struct mg_exchange *x = &c->x;
    report_attempt(c, true,
                   kind == MG_RETRY_ON_CONNECT_FAILURE ? MG_OUTCOME_CONNECT_FAILURE
                   : kind == MG_RETRY_ON_TIMEOUT       ? MG_OUTCOME_TIMEOUT
                                                       : MG_OUTCOME_RESET);
    mg_warn("%s: %s (target %s, try %u, request_id %s)", mg_error_name(err), why,
            x->target ? x->target->conf->address.text : "-", x->attempts, x->request_id);
    if (may_retry(c, kind, reached)) {
        mg_metrics_retry(metrics_of(c), (unsigned)c->w->id, x->route->upstream->index);
        detach_upstream(c, false);
        start_backoff(c);
        return;
    }
    fail(c, err, why);
}

/* -------------------------------------------------------------- bulkhead */

static struct mg_upstream_stats *route_stats(struct mg_exchange *x)
{
    return x->rt->ups[x->route->upstream->index].stats;
}

static void release_slot(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    if (!x->slot_held)
        return;
    x->slot_held = false;
    mg_admission_release(route_stats(x), &x->route->upstream->bulkhead, (unsigned)c->w->id);
}

/* Leaves the queue without a slot (client gone, deadline). */
static void leave_queue(struct mg_conn *c)
{
    mg_admission_leave(route_stats(&c->x), (unsigned)c->w->id, &c->waiter);
    uv_timer_stop(&c->wait);
}

/* A queued exchange got its slot (at a loop boundary, from mg_admission_drain). */
static void on_slot_granted(struct mg_waiter *wt)
{
    struct mg_conn *c = (struct mg_conn *)((char *)wt - offsetof(struct mg_conn, waiter));
    uv_timer_stop(&c->wait);
    c->x.slot_held = true;
    c->x.state = MG_X_CONNECT;
    advance(c);
}

/* MG_NEXT with a slot held, in the queue, or failed with bulkhead_full. */
static int admit(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    const struct mg_bulkhead_conf *bc = &x->route->upstream->bulkhead;
    c->waiter.on_grant = on_slot_granted;
    switch (mg_admission_enter(route_stats(x), bc, (unsigned)c->w->id, uv_now(&c->w->loop),
                               &c->waiter)) {
    case MG_ADMIT_ACQUIRED:
        x->slot_held = true;
        return MG_NEXT;
    case MG_ADMIT_QUEUED:
        x->state = MG_X_QUEUED;
        uv_timer_start(&c->wait, on_wait_timer, bc->queue_timeout_ms, 0);
        return MG_NEXT;
    default:
        x->retry_after_s = 1;
        fail(c, MG_ERR_BULKHEAD_FULL, "concurrency limit and queue full");
        return MG_NEXT;
    }
}

/* Forgets what an earlier try's response left behind. */
static void reset_response(struct mg_exchange *x)
{
    x->resp_head = NULL;
    x->resp_headlen = x->resp_headcap = 0;
    x->resp_head_done = false;
    x->reason = (struct mg_slice){NULL, 0};
    x->resp_hdrs = (struct mg_headers){NULL, 0, 0};
    x->status = 0;
    x->resp_body = (struct mg_body){0};
    x->resp_chunk_out = false;
    x->up_timer = MG_UPT_NONE;
}

/* The upstream connection is usable: send the head, open the body tap. */
static void start_forwarding(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    struct mg_upconn *u = x->up;
    mg_headscan_init(&u->scan, MG_MAX_RESPONSE_HEAD);
    u->start = u->end = 0;
    u->requests++;
    reset_response(x);
    x->idem.forwarded = true;
    build_upstream_head(c);
    if (x->req_done && (x->body_copy_len > 0 || x->req_chunked)) {
        /* The body was read before this try: by an earlier try (we kept it:
         * may_retry checked), or whole by the idempotency phase. */
        if (x->req_chunked) {
            if (x->body_copy_len > 0)
                chunk_to(c, true, x->body_copy, x->body_copy_len, NULL);
            to_upstream(c, "0\r\n\r\n", 5, false);
        } else {
            to_upstream(c, x->body_copy, x->body_copy_len, false);
        }
    }
    if (x->req_expect_continue && !x->req_done && x->http_minor >= 1 && !x->continue_sent) {
        static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";
        to_client(c, continue_line, sizeof continue_line - 1, NULL);
        flush_client(c);
        x->continue_sent = true;
    }
    mg_upconn_set_reading(u, true);
    x->up_timer = MG_UPT_NONE;
}

/* ------------------------------------------------------- response parsing */

static int on_resp_status(llhttp_t *p, const char *at, size_t len)
{
    struct mg_exchange *x = &conn_of(p)->x;
    if (x->reason.p)
        x->reason.len += len;
    else
        x->reason = (struct mg_slice){at, len};
    return 0;
}

static bool has_field(const struct mg_headers *h, const char *name, size_t len)
{
    return mg_headers_find(h, (struct mg_slice){name, len}) >= 0;
}

/* Writes the client's response head. The body framing towards the client is
 * the gateway's own, from how the upstream's body is delimited (x->resp_body):
 * a length is passed on as a length, anything else is chunked (or, for an
 * HTTP/1.0 client, delimited by the close). */
static void send_response_head(struct mg_conn *c, bool switching)
{
    struct mg_exchange *x = &c->x;
    enum mg_body_kind kind = (enum mg_body_kind)x->resp_body.kind;
    if (kind == MG_BODY_CHUNKED || kind == MG_BODY_CLOSE) {
        if (x->http_minor >= 1)
            x->resp_chunk_out = true;
        else
            x->close_after = true; /* HTTP/1.0: the close delimits the body */
    }
    /* HEAD and 304 answers keep the length of the body they stand for. */
    bool send_length = !x->resp_chunk_out && !switching && x->resp_has_length && x->status != 204;
    if (!x->req_keepalive || c->w->draining || (x->req_upgrade && !switching))
        x->close_after = true;
    const struct mg_lua_edit *edits = x->lua_ready ? x->lua.resp_edits : NULL;
    struct mg_http_tail tail = {
        .via = true,
        .request_id = has_field(&x->resp_hdrs, "x-request-id", 12) ? NULL : x->request_id,
        .framing = switching           ? MG_HTTP_FRAME_NONE
                   : x->resp_chunk_out ? MG_HTTP_FRAME_CHUNKED
                   : send_length       ? MG_HTTP_FRAME_LENGTH
                                       : MG_HTTP_FRAME_NONE,
        .length = x->resp_length,
        .conn = switching ? MG_HTTP_CONN_UPGRADE : mg_http_conn_for(x->close_after, x->http_minor),
    };
    if (switching) {
        int up = mg_headers_find(&x->resp_hdrs, MG_SLICE_LIT("upgrade"));
        tail.upgrade = hdr_value(&x->resp_hdrs, up);
    }
    size_t cap = MG_HTTP_STATUS_LINE_SIZE(x->reason.len) + x->resp_headlen + edits_size(edits) +
                 mg_http_tail_max(&tail);
    char *o = mg_arena_alloc(&x->arena, cap), *start = o;
    o = mg_http_put_status_line(o, x->status, x->reason);
    for (uint32_t i = 0; i < x->resp_hdrs.n; i++) {
        struct mg_header *f = &x->resp_hdrs.v[i];
        if ((f->flags & MG_HDR_HOP) || (edits && edited(edits, f->name)))
            continue;
        o = mg_http_put_field(o, f->name, f->value);
    }
    o = put_edits(o, edits);
    o = mg_http_put_tail(o, &tail);
    MG_ASSERT((size_t)(o - start) <= cap);
    x->resp_started = true;
    x->sent_status = x->status;
    to_client(c, start, (size_t)(o - start), NULL);
}

static enum mg_upstream_outcome status_outcome(const struct mg_upstream_conf *uc, int status)
{
    return mg_breaker_is_failure_status(&uc->breaker, status) ? MG_OUTCOME_FAILURE
                                                              : MG_OUTCOME_SUCCESS;
}

static int run_response_phase(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    struct mg_lua_ctx *l = lua_ctx(c);
    l->status = x->status;
    l->resp_headers = lua_headers(&x->arena, &x->resp_hdrs);
    l->n_resp_headers = x->resp_hdrs.n;
    l->upstream_address =
        (struct mg_lua_str){x->target->conf->address.text, strlen(x->target->conf->address.text)};
    l->latency = (double)(uv_hrtime() - x->attempt_start_ns) / 1e9;
    return mg_lua_run(x->rt->lua, x->route->index, MG_LUA_RESPONSE, l) == MG_LUA_ERROR ? -1 : 0;
}

/* llhttp parses response heads only; decisions are taken after it returns. */
static int on_resp_headers_complete(llhttp_t *p)
{
    struct mg_exchange *x = &conn_of(p)->x;
    if (p->http_major != 1)
        return -1;
    x->status = p->status_code;
    x->resp_upgrade = p->upgrade;
    x->resp_has_length = (p->flags & F_CONTENT_LENGTH) != 0;
    x->resp_length = x->resp_has_length ? p->content_length : 0;
    x->resp_keepalive = p->http_minor >= 1 ? !(p->flags & F_CONNECTION_CLOSE)
                                           : (p->flags & F_CONNECTION_KEEP_ALIVE) != 0;
    return 0;
}

static const llhttp_settings_t response_settings = {
    .on_status = on_resp_status,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_header_value_complete = on_value_complete,
    .on_headers_complete = on_resp_headers_complete,
};

/* Forgets the head just read so the next one is parsed from scratch (after an
 * interim response, or for a new try). */
static void next_response_head(struct mg_exchange *x, struct mg_upconn *u)
{
    x->resp_head_done = false;
    x->resp_headlen = 0;
    x->reason = (struct mg_slice){NULL, 0};
    mg_headscan_init(&u->scan, MG_MAX_RESPONSE_HEAD);
}

/* How the final response's body is delimited (RFC 9112 section 6.3), or false
 * when its framing fields are ambiguous or name a coding the gateway does not
 * decode (as nginx: 502, never a body passed on with its coding dropped). */
static bool response_body_kind(struct mg_exchange *x, enum mg_body_kind *kind)
{
    enum mg_framing fr = mg_headers_framing(&x->resp_hdrs);
    if (fr == MG_FRAMING_BAD || fr == MG_FRAMING_UNSUPPORTED)
        return false;
    if (x->method == HTTP_HEAD || x->status == 204 || x->status == 304 || x->status == 101)
        *kind = MG_BODY_NONE; /* whatever the fields say (RFC 9110 6.4.1, 15.3.5, 15.4.5) */
    else if (fr == MG_FRAMING_CHUNKED)
        *kind = MG_BODY_CHUNKED;
    else if (fr == MG_FRAMING_LENGTH)
        *kind = MG_BODY_LENGTH;
    else
        *kind = MG_BODY_CLOSE;
    return true;
}

/* A final response head is parsed: retry on its status, run the response
 * phase, send the head on. MG_NEXT: the body follows (or a tunnel); -1: the
 * try or the exchange ended (a retry waits, or it failed). */
static int response_head(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    const struct mg_upstream_conf *uc = x->route->upstream;
    enum mg_body_kind kind;
    if (!response_body_kind(x, &kind)) {
        upstream_failed(c, MG_RETRY_ON_RESET, true, MG_ERR_UPSTREAM_UNAVAILABLE,
                        "invalid response framing");
        return -1;
    }
    mg_target_observe_latency(x->target->stats, uv_hrtime() - x->attempt_start_ns,
                              uv_now(&c->w->loop));
    if (mg_retry_should_retry_status(&uc->retry, x->status) && may_retry(c, 0, true)) {
        report_attempt(c, mg_breaker_is_failure_status(&uc->breaker, x->status),
                       status_outcome(uc, x->status));
        mg_metrics_retry(metrics_of(c), (unsigned)c->w->id, uc->index);
        mg_warn("upstream answered %d (target %s, try %u, request_id %s): retrying", x->status,
                x->target->conf->address.text, x->attempts, x->request_id);
        /* Swallowed with its body unread: the connection cannot be reused. */
        detach_upstream(c, false);
        start_backoff(c);
        return -1;
    }
    report_attempt(c, mg_breaker_is_failure_status(&uc->breaker, x->status),
                   status_outcome(uc, x->status));
    bool switching = x->status == 101 && x->req_upgrade && x->resp_upgrade;
    if (x->status == 101 && (!switching || !x->req_done)) {
        upstream_failed(c, MG_RETRY_ON_RESET, true, MG_ERR_UPSTREAM_UNAVAILABLE,
                        "101 without an upgrade request, or before its body ended");
        return -1;
    }
    if (lua_active(x, MG_LUA_RESPONSE) && run_response_phase(c) != 0) {
        fail(c, MG_ERR_PLUGIN_ERROR, "response phase");
        return -1;
    }
    mg_headers_mark_hop_by_hop(&x->resp_hdrs);
    mg_body_init(&x->resp_body, kind, x->resp_length, UINT64_MAX);
    send_response_head(c, switching);
    if (switching) {
        x->state = MG_X_TUNNEL; /* bytes that came with the 101 stay in u->buf */
        return MG_NEXT;
    }
    mg_px_idem_response_head(c);
    return MG_NEXT;
}

/* Scans and copies the response head; once whole, parses it and acts on it.
 * MG_AGAIN: more bytes needed; MG_NEXT: handled; -1: the try or exchange ended. */
static int read_response_head(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    struct mg_upconn *u = x->up;
    size_t used = 0;
    enum mg_headscan_result r =
        mg_headscan_feed(&u->scan, u->buf + u->start, u->end - u->start, &used);
    if (r >= MG_HEADSCAN_BARE_CR) {
        upstream_failed(c, MG_RETRY_ON_RESET, true, MG_ERR_UPSTREAM_UNAVAILABLE,
                        mg_headscan_result_text(r));
        return -1;
    }
    mg_px_append(&x->arena, &x->resp_head, &x->resp_headlen, &x->resp_headcap, u->buf + u->start,
                 used, MG_MAX_RESPONSE_HEAD + 4);
    u->start += used;
    if (r == MG_HEADSCAN_MORE)
        return MG_AGAIN;
    x->resp_head_done = true;
    headers_init(&x->arena, &x->resp_hdrs);
    llhttp_init(&u->parser, HTTP_RESPONSE, &response_settings);
    u->parser.data = c;
    llhttp_errno_t e = llhttp_execute(&u->parser, x->resp_head, x->resp_headlen);
    if (e != HPE_OK && e != HPE_PAUSED_UPGRADE) {
        upstream_failed(c, MG_RETRY_ON_RESET, true, MG_ERR_UPSTREAM_UNAVAILABLE,
                        parser_reason(&u->parser));
        return -1;
    }
    if (x->status >= 100 && x->status < 200 && x->status != 101) {
        /* Interim (e.g. 103): dropped, and never has a body (RFC 9110 section
         * 15.2) whatever framing it claims (tests/fuzz: a 103 with
         * Content-Length carried a whole forged response). */
        next_response_head(x, u);
        return MG_NEXT;
    }
    return response_head(c);
}

/* The response message ended. Extra bytes after it (an upstream answering
 * more than it was asked) make its connection unusable. */
static void response_done(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    if (x->resp_chunk_out)
        to_client(c, "0\r\n\r\n", 5, NULL);
    x->resp_done = true;
    x->up_reusable =
        x->resp_keepalive && x->resp_body.kind != MG_BODY_CLOSE && x->up->start == x->up->end;
}

/* Decodes response body bytes and queues them for the client, pointing into the
 * upstream's read buffer. MG_AGAIN: more needed; MG_NEXT: progress; -1: failed. */
static int response_body(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    struct mg_upconn *u = x->up;
    size_t used;
    struct mg_slice d;
    enum mg_body_result r =
        mg_body_feed(&x->resp_body, u->buf + u->start, u->end - u->start, &used, &d);
    u->start += used;
    switch (r) {
    case MG_BODY_DATA:
        mg_px_idem_response_body(c, d.p, d.len);
        if (x->resp_chunk_out)
            chunk_to(c, false, d.p, d.len, u);
        else
            to_client(c, d.p, d.len, u);
        return MG_NEXT;
    case MG_BODY_DONE:
        response_done(c);
        return MG_NEXT;
    case MG_BODY_MORE:
        return MG_AGAIN;
    default:
        upstream_failed(c, MG_RETRY_ON_RESET, true, MG_ERR_UPSTREAM_UNAVAILABLE,
                        mg_body_error(&x->resp_body));
        return -1;
    }
}

/* Parses what the upstream sent. Returns 0, or -1 when the try or the exchange
 * ended (a retry waits, or it failed). */
static int parse_response(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    struct mg_upconn *u = x->up;
    while (!x->resp_done && x->state == MG_X_FORWARD) {
        int rc;
        if (!x->resp_head_done)
            rc = u->start < u->end ? read_response_head(c) : MG_AGAIN;
        else
            rc = response_body(c);
        if (rc != MG_NEXT)
            return rc < 0 ? -1 : 0;
    }
    return 0;
}

/* ------------------------------------------------------------------ errors */

static void discard_wreq(struct mg_conn *c, struct mg_wreq **slot)
{
    if (*slot) {
        wreq_free(c->w, *slot);
        *slot = NULL;
    }
}

/* Ends the exchange's use of its upstream connection: back to the pool when the
 * exchange completed cleanly, else closed. */
static void detach_upstream(struct mg_conn *c, bool reuse)
{
    struct mg_exchange *x = &c->x;
    struct mg_upconn *u = x->up;
    if (!u)
        return;
    x->up = NULL;
    x->up_writes = 0;
    end_attempt(c);
    discard_wreq(c, &c->out_up);
    if (reuse && x->up_reusable && x->req_done && !x->req_upgrade && u->tcp.write_queue_size == 0)
        mg_upconn_release(u);
    else
        mg_upconn_close(u);
}

/* Takes back a response that was queued but has not reached the socket (its
 * head and body so far are all in c->out_client): the exchange may still
 * answer with an error instead of a response cut short. True when no response
 * is under way any more. */
static bool unsend_response(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    if (!x->resp_started || x->resp_flushed)
        return !x->resp_started;
    for (unsigned i = 0; c->out_client && i < c->out_client->nbufs; i++)
        x->bytes_out -= c->out_client->bufs[i].len;
    discard_wreq(c, &c->out_client);
    x->resp_started = false;
    x->resp_chunk_out = false;
    x->sent_status = 0;
    return true;
}

/* The exchange cannot go on. Before the response started: answer with the JSON
 * error; after: close the client connection, never a truncated-but-complete-looking
 * response (DESIGN.md section 4). Does not call advance(). */
static void fail(struct mg_conn *c, enum mg_error err, const char *why)
{
    struct mg_exchange *x = &c->x;
    if (err == MG_ERR_UPSTREAM_UNAVAILABLE || err == MG_ERR_UPSTREAM_TIMEOUT)
        mg_warn("%s: %s (target %s, request_id %s)", mg_error_name(err), why,
                x->target ? x->target->conf->address.text : "-", x->request_id);
    else
        mg_debug("%s: %s", mg_error_name(err), why);
    detach_upstream(c, false);
    x->error = err;
    mg_metrics_error(metrics_of(c), (unsigned)c->w->id, x->route ? (int)x->route->index : -1, err);
    if (!unsend_response(c)) {
        mg_px_idem_release(c);
        conn_close(c);
        return;
    }
    if (!x->req_done || !x->req_keepalive || c->w->draining)
        x->close_after = true;
    mg_deadline_set(&c->deadline, 0);
    queue_error_response(c, err);
    x->resp_done = true;
    x->state = mg_px_idem_settle(c) ? MG_X_COMMIT : MG_X_FINISH;
}

/* ------------------------------------------------------------------ states */

static void arm_client_timer(struct mg_conn *c, uint64_t ms);

/* The exchange is over (answered, or abandoned when `status` is 0): count it and
 * write its access log line. */
static void record_exchange(struct mg_conn *c, int status)
{
    struct mg_exchange *x = &c->x;
    struct mg_metrics *m = metrics_of(c);
    unsigned w = (unsigned)c->w->id;
    int route = x->route ? (int)x->route->index : -1;
    uint64_t now = uv_hrtime();
    if (x->in_flight_counted)
        mg_metrics_in_flight(m, w, route, -1);
    if (lua_active(x, MG_LUA_LOG)) {
        struct mg_lua_ctx *l = lua_ctx(c);
        l->status = status;
        l->latency = (double)(now - x->started_ns) / 1e9;
        mg_lua_run(x->rt->lua, x->route->index, MG_LUA_LOG, l); /* errors: logged only */
    }
    if (x->lua_ready)
        mg_lua_ctx_done(x->rt->lua, &x->lua);
    /* A client that left before its answer is counted as nginx's 499. */
    mg_metrics_request_done(m, w, route, status ? status : 499, now - x->started_ns);
    if (!mg_accesslog_enabled(access_log))
        return;
    struct mg_access_entry e = {
        .request_id = {x->request_id, strlen(x->request_id)},
        .client_ip = {c->client_ip, strlen(c->client_ip)},
        .method = x->head_parsed
                      ? (struct mg_slice){llhttp_method_name((llhttp_method_t)x->method),
                                          strlen(llhttp_method_name((llhttp_method_t)x->method))}
                      : (struct mg_slice){NULL, 0},
        .path = x->url,
        .status = status,
        .bytes_in = x->headlen + x->req_body_bytes,
        .bytes_out = x->bytes_out,
        .route = x->route ? x->route->name : NULL,
        .upstream = x->target ? x->target->conf->address.text : NULL,
        .attempts = x->attempts,
        .duration_ns = now - x->started_ns,
        .upstream_duration_ns = x->attempts ? (int64_t)(now - x->attempt_start_ns) : -1,
        .error = x->error,
    };
    mg_accesslog_write(access_log, w, &e);
}

static void exchange_reset(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    release_slot(c);
    mg_px_idem_abandon(c);
    mg_px_idem_free(c);
    if (x->rt)
        mg_runtime_release(c->w, x->rt);
    struct mg_arena arena = x->arena;
    mg_arena_reset(&arena);
    memset(x, 0, sizeof *x);
    x->arena = arena;
    x->state = MG_X_IDLE;
}

/* An access-phase plugin answered (ctx:respond): send that, touch no upstream. */
static void respond_from_plugin(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    const struct mg_lua_respond *r = &x->lua.respond;
    if (!x->req_done || !x->req_keepalive || c->w->draining)
        x->close_after = true;
    size_t body = r->body.p ? r->body.len : 0;
    struct mg_http_tail tail = {
        .request_id = edited(r->headers, MG_SLICE_LIT("x-request-id")) ? NULL : x->request_id,
        .framing = MG_HTTP_FRAME_LENGTH,
        .length = body,
        .conn = mg_http_conn_for(x->close_after, x->http_minor),
    };
    size_t cap = MG_HTTP_STATUS_LINE_SIZE(MG_HTTP_REASON_MAX) + edits_size(r->headers) +
                 edits_size(x->lua.resp_edits) + mg_http_tail_max(&tail) + body;
    char *o = mg_arena_alloc(&x->arena, cap), *start = o;
    o = mg_http_put_status(o, r->status);
    o = put_edits(o, r->headers);
    o = put_edits(o, x->lua.resp_edits);
    o = mg_http_put_tail(o, &tail);
    if (body && x->method != HTTP_HEAD)
        PUT(o, r->body.p, body);
    MG_ASSERT((size_t)(o - start) <= cap);
    x->sent_status = r->status;
    x->resp_started = true;
    x->resp_done = true;
    to_client(c, start, (size_t)(o - start), NULL);
    x->state = MG_X_FINISH;
}

static void forward_request_body(struct mg_conn *c);

static int step_idle(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    if (c->start == c->end)
        return MG_AGAIN;
    x->rt = mg_runtime_hold(c->w);
    x->started_ns = uv_hrtime();
    mg_metrics_conn_move(metrics_of(c), (unsigned)c->w->id, MG_CONN_SIDE_CLIENT, MG_CONN_STATE_IDLE,
                         MG_CONN_STATE_ACTIVE);
    mg_headscan_init(&x->scan, x->rt->cfg->client.max_header_size);
    arm_client_timer(c, x->rt->cfg->client.header_timeout_ms);
    x->state = MG_X_HEAD;
    return MG_NEXT;
}

static int step_head(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    if (c->start == c->end || read_request_head(c) == MG_AGAIN)
        return MG_AGAIN;
    if (!x->error) {
        make_request_id(c);
        x->error = route_request(c);
        x->body_copy_ok = true;
    }
    if (x->error) {
        fail(c, x->error, "request rejected");
        return MG_NEXT;
    }
    mg_metrics_in_flight(metrics_of(c), (unsigned)c->w->id, (int)x->route->index, 1);
    x->in_flight_counted = true;
    if (lua_active(x, MG_LUA_ACCESS)) {
        enum mg_lua_result r = mg_lua_run(x->rt->lua, x->route->index, MG_LUA_ACCESS, lua_ctx(c));
        if (r == MG_LUA_RESPONDED) {
            respond_from_plugin(c);
            return MG_NEXT;
        }
        if (r == MG_LUA_ERROR) {
            fail(c, MG_ERR_PLUGIN_ERROR, "access phase");
            return MG_NEXT;
        }
    }
    if (x->req_done)
        mg_deadline_set(&c->timer, 0);
    else
        arm_client_timer(c, x->rt->cfg->client.body_timeout_ms);
    x->state = MG_X_CONNECT;
    enum mg_error err = mg_px_idem_start(c); /* may move to MG_X_BUFFER */
    if (err)
        fail(c, err, "idempotency");
    return MG_NEXT;
}

/* Idempotency: the body is read whole before the store is asked about the key. */
static int step_buffer(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    if (!x->req_done && c->start < c->end) {
        forward_request_body(c);
        if (x->state != MG_X_BUFFER)
            return MG_NEXT;
    }
    if (!x->req_done)
        return MG_AGAIN;
    mg_px_idem_lookup(c);
    return MG_NEXT;
}

static void on_deadline(struct mg_deadline *d);

static int step_connect(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    if (!x->slot_held) {
        /* First pass: the deadline covers queueing, every try and every backoff. */
        mg_deadline_set(&c->deadline, x->route->timeout_ms);
        mg_retry_budget_record_request(&route_stats(x)->budget, uv_now(&c->w->loop));
        admit(c);
        if (x->state != MG_X_CONNECT)
            return MG_NEXT;
    }
    if (!x->up) {
        int rc = connect_upstream(c);
        if (x->state != MG_X_CONNECT)
            return MG_NEXT;
        if (rc == MG_AGAIN)
            return MG_AGAIN;
    }
    if (!x->up_ready)
        return MG_AGAIN;
    start_forwarding(c);
    x->state = MG_X_FORWARD;
    return MG_NEXT;
}

static void on_wait_timer(uv_timer_t *t)
{
    struct mg_conn *c = t->data;
    struct mg_exchange *x = &c->x;
    if (x->state == MG_X_BACKOFF) {
        x->state = MG_X_CONNECT;
    } else if (x->state == MG_X_QUEUED) {
        if (mg_admission_timeout(route_stats(x), (unsigned)c->w->id, &c->waiter)) {
            x->slot_held = true; /* a grant was on its way to us */
            x->state = MG_X_CONNECT;
        } else {
            x->retry_after_s = 1;
            fail(c, MG_ERR_BULKHEAD_FULL, "queue timeout");
        }
    }
    advance(c);
}

/* Decodes request body bytes that arrived from the client and passes them on
 * (to the upstream, or into the idempotency buffer). */
static void forward_request_body(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    for (;;) {
        size_t used;
        struct mg_slice d;
        enum mg_body_result r =
            mg_body_feed(&x->req_body, c->buf + c->start, c->end - c->start, &used, &d);
        c->start += used;
        if (r == MG_BODY_DATA && request_body_data(c, d) == 0)
            continue;
        if (r == MG_BODY_DONE)
            request_body_done(c);
        if (r == MG_BODY_DONE || r == MG_BODY_MORE)
            return;
        if (r == MG_BODY_TOO_LARGE)
            x->error = MG_ERR_BODY_TOO_LARGE;
        x->close_after = true;
        fail(c, x->error == MG_ERR_BODY_TOO_LARGE ? MG_ERR_BODY_TOO_LARGE : MG_ERR_BAD_REQUEST,
             r == MG_BODY_DATA ? "request body refused" : mg_body_error(&x->req_body));
        return;
    }
}

static int step_forward(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    if (!x->req_done && c->start < c->end) {
        forward_request_body(c);
        if (x->state != MG_X_FORWARD)
            return MG_NEXT;
    }
    if (x->up->start < x->up->end && parse_response(c) < 0)
        return MG_NEXT;
    if (x->state != MG_X_FORWARD)
        return MG_NEXT;
    if (!x->resp_done)
        return MG_AGAIN;
    if (!x->req_done)
        x->close_after = true; /* the rest of the request body cannot be skipped reliably */
    if (mg_px_idem_settle(c)) {
        /* The held end of the response may point into the upstream's read
         * buffer: the connection stays leased, silent, until FINISH. */
        mg_upconn_set_reading(x->up, false);
        mg_upconn_set_timeout(x->up, 0);
        x->state = MG_X_COMMIT;
        return MG_NEXT;
    }
    detach_upstream(c, true);
    x->state = MG_X_FINISH;
    return MG_NEXT;
}

static int step_tunnel(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    struct mg_upconn *u = x->up;
    mg_upconn_set_timeout(u, 0);
    mg_deadline_set(&c->timer, 0);
    mg_deadline_set(&c->deadline, 0);
    if (c->start < c->end && !x->up_eof) {
        to_upstream(c, c->buf + c->start, c->end - c->start, true);
        c->start = c->end;
    }
    if (u->start < u->end) {
        to_client(c, u->buf + u->start, u->end - u->start, u);
        u->start = u->end;
    }
    /* Either side closing ends the tunnel, once what the other sent is delivered. */
    if ((c->eof || x->up_eof) && !c->out_client && !c->out_up && c->writes == 0 &&
        (c->pins == 0 || x->up_eof))
        conn_close(c);
    return MG_AGAIN;
}

static int step_finish(struct mg_conn *c)
{
    struct mg_exchange *x = &c->x;
    if (c->out_client || c->writes > 0)
        return MG_AGAIN;
    mg_deadline_set(&c->deadline, 0);
    detach_upstream(c, true);
    record_exchange(c, x->sent_status);
    x->state = MG_X_IDLE; /* recorded: conn_close must not count it again */
    mg_metrics_conn_move(metrics_of(c), (unsigned)c->w->id, MG_CONN_SIDE_CLIENT,
                         MG_CONN_STATE_ACTIVE, MG_CONN_STATE_IDLE);
    if (x->close_after || c->eof || c->w->draining) {
        conn_close(c);
        return MG_AGAIN;
    }
    exchange_reset(c);
    arm_client_timer(c, c->w->rt->cfg->client.keepalive_timeout_ms);
    if (c->start == c->end && c->pins == 0 && c->buf) {
        /* Idle keep-alive connections hold no buffer: 10k of them stay cheap. */
        mg_worker_buf_put(c->w, c->buf);
        c->buf = NULL;
        c->start = c->end = 0;
        mg_arena_shed(&c->x.arena);
    }
    return MG_NEXT;
}

static bool client_has_space(const struct mg_conn *c)
{
    return !c->buf || c->end < MG_BUF_SIZE || (c->pins == 0 && c->start > 0);
}

static bool upstream_has_space(const struct mg_upconn *u)
{
    return !u->buf || u->end < MG_BUF_SIZE || (u->pins == 0 && u->start > 0);
}

static void on_client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void update_reading(struct mg_conn *c)
{
    if (c->closing)
        return;
    bool want = !c->eof && client_has_space(c);
    if (want != c->reading) {
        c->reading = want;
        if (want)
            uv_read_start((uv_stream_t *)&c->tcp, on_client_alloc, on_client_read);
        else
            uv_read_stop((uv_stream_t *)&c->tcp);
    }
    struct mg_exchange *x = &c->x;
    if (x->up && x->up_ready && !x->up->closing &&
        (x->state == MG_X_FORWARD || x->state == MG_X_TUNNEL)) {
        bool up_want = upstream_has_space(x->up) && !x->resp_done && !x->up_eof;
        mg_upconn_set_reading(x->up, up_want);
        sync_upstream_timer(c, false);
    }
}

/* After the client closed its side: requests already complete still get their
 * responses (a client may half-close after pipelining); a request cut short is
 * aborted, as nginx's 499. */
static bool client_gone_midway(const struct mg_conn *c)
{
    const struct mg_exchange *x = &c->x;
    switch (x->state) {
    case MG_X_IDLE:
        return c->start == c->end;
    case MG_X_HEAD:
        return true;
    case MG_X_BUFFER:
    case MG_X_LOOKUP:
    case MG_X_QUEUED:
    case MG_X_CONNECT:
    case MG_X_BACKOFF:
    case MG_X_FORWARD:
        return !x->req_done;
    default:
        return false;
    }
}

/* Runs steps until one must wait; advance() is the only caller. */
static void run_steps(struct mg_conn *c)
{
    for (;;) {
        if (c->closing)
            return;
        struct mg_exchange *x = &c->x;
        enum mg_x_state before = x->state;
        int rc = MG_AGAIN;
        switch (x->state) {
        case MG_X_IDLE:
            rc = step_idle(c);
            break;
        case MG_X_HEAD:
            rc = step_head(c);
            break;
        case MG_X_BUFFER:
            rc = step_buffer(c);
            break;
        case MG_X_LOOKUP:
        case MG_X_COMMIT:
            rc = MG_AGAIN; /* the idempotency store's answer moves it on */
            break;
        case MG_X_QUEUED:
        case MG_X_BACKOFF:
            MG_ASSERT(x->route != NULL && x->up == NULL);
            rc = MG_AGAIN; /* c->wait or a bulkhead grant moves it on */
            break;
        case MG_X_CONNECT:
            MG_ASSERT(x->route != NULL);
            rc = step_connect(c);
            break;
        case MG_X_FORWARD:
            MG_ASSERT(x->up != NULL && x->up_ready);
            rc = step_forward(c);
            break;
        case MG_X_TUNNEL:
            rc = step_tunnel(c);
            break;
        case MG_X_FINISH:
            MG_ASSERT(x->resp_done);
            rc = step_finish(c);
            break;
        }
        if (c->closing)
            return;
        if (x->state != before)
            mg_debug("conn %p: %s -> %s", (void *)c, state_names[before], state_names[x->state]);
        if (rc == MG_AGAIN)
            return;
    }
}

/* The state machine. Every event handler records what happened and calls this;
 * it runs steps until one must wait, then sends what they queued (a write that
 * completes at once may let a state move on, so the steps run again). */
static void advance(struct mg_conn *c)
{
    do {
        c->flushed_now = false;
        run_steps(c);
        if (c->out_up && !c->closing)
            flush_upstream(c);
        /* COMMIT holds the end of the response until the store has the record. */
        if (c->out_client && !c->closing && c->x.state != MG_X_COMMIT)
            flush_client(c);
        if (c->closing)
            return;
    } while (c->flushed_now);
    if (c->eof && client_gone_midway(c)) {
        conn_close(c);
        return;
    }
    update_reading(c);
}

/* ------------------------------------------------------- libuv callbacks */

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct mg_conn *c = h->data;
    c->handles_open--;
    conn_maybe_free(c);
}

static void conn_maybe_free(struct mg_conn *c)
{
    if (c->handles_open || c->pins || c->writes)
        return;
    struct mg_worker *w = c->w;
    mg_px_idem_free(c);
    if (c->x.rt)
        mg_runtime_release(w, c->x.rt);
    mg_arena_destroy(&c->x.arena);
    if (c->buf)
        mg_worker_buf_put(w, c->buf);
    free(c);
    mg_worker_conn_closed(w);
}

static void conn_close(struct mg_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    mg_deadline_set(&c->deadline, 0);
    if (c->x.state == MG_X_QUEUED)
        leave_queue(c);
    mg_px_idem_abandon(c);
    bool busy = c->x.state != MG_X_IDLE;
    if (busy && c->x.rt)
        record_exchange(c, c->x.resp_done ? c->x.sent_status : 0);
    if (c->counted)
        mg_metrics_conn(c->w->rt->metrics, (unsigned)c->w->id, MG_CONN_SIDE_CLIENT,
                        busy ? MG_CONN_STATE_ACTIVE : MG_CONN_STATE_IDLE, -1);
    detach_upstream(c, false);
    release_slot(c);
    discard_wreq(c, &c->out_client);
    discard_wreq(c, &c->out_up);
    struct mg_worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    atomic_fetch_sub_explicit(&client_connections, 1, memory_order_relaxed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close(mg_deadline_handle(&c->timer), on_conn_handle_closed);
    uv_close(mg_deadline_handle(&c->deadline), on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->wait, on_conn_handle_closed);
}

static void on_client_timer(struct mg_deadline *d)
{
    struct mg_conn *c = d->timer.data;
    struct mg_exchange *x = &c->x;
    switch (x->state) {
    case MG_X_IDLE:
        conn_close(c); /* keep-alive (or first byte) timeout: nothing to answer */
        return;
    case MG_X_HEAD:
        x->close_after = true;
        fail(c, MG_ERR_CLIENT_TIMEOUT, "request head timeout");
        break;
    case MG_X_BUFFER:
    case MG_X_QUEUED:
    case MG_X_CONNECT:
    case MG_X_FORWARD:
        if (x->req_done)
            return;
        if (x->state == MG_X_QUEUED)
            leave_queue(c);
        x->close_after = true;
        fail(c, MG_ERR_CLIENT_TIMEOUT, "request body timeout");
        break;
    default:
        return;
    }
    advance(c);
}

static void arm_client_timer(struct mg_conn *c, uint64_t ms)
{
    mg_deadline_set(&c->timer, ms);
}

static void on_deadline(struct mg_deadline *d)
{
    struct mg_conn *c = d->timer.data;
    struct mg_exchange *x = &c->x;
    if (x->state == MG_X_QUEUED)
        leave_queue(c);
    else if (x->state == MG_X_BACKOFF)
        uv_timer_stop(&c->wait);
    else if (x->state != MG_X_CONNECT && x->state != MG_X_FORWARD)
        return;
    report_attempt(c, true, MG_OUTCOME_TIMEOUT);
    fail(c, MG_ERR_UPSTREAM_TIMEOUT, "route deadline exceeded");
    advance(c);
}

static void on_client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct mg_conn *c = h->data;
    if (!c->buf) {
        c->buf = mg_worker_buf_get(c->w);
        c->start = c->end = 0;
    }
    if (c->pins == 0 && c->start > 0) {
        /* Nothing points into the consumed bytes: move the rest to the front. */
        memmove(c->buf, c->buf + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    }
    buf->base = c->buf + c->end;
    buf->len = MG_BUF_SIZE - c->end;
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct mg_conn *c = s->data;
    struct mg_exchange *x = &c->x;
    if (nread == 0)
        return;
    if (nread < 0) {
        c->eof = true;
        if (nread != UV_EOF)
            mg_debug("client read: %s", uv_strerror((int)nread));
        advance(c);
        return;
    }
    c->end += (size_t)nread;
    if ((x->state == MG_X_BUFFER || x->state == MG_X_QUEUED || x->state == MG_X_CONNECT ||
         x->state == MG_X_FORWARD) &&
        !x->req_done)
        arm_client_timer(c, x->rt->cfg->client.body_timeout_ms);
    advance(c);
}

/* ------------------------------------------------------- upstream events */

static void on_upstream_connect(struct mg_upconn *u, int status)
{
    struct mg_conn *c = u->owner;
    if (status < 0) {
        upstream_failed(c, MG_RETRY_ON_CONNECT_FAILURE, false, MG_ERR_UPSTREAM_UNAVAILABLE,
                        uv_strerror(status));
    } else {
        mg_upconn_set_timeout(u, 0);
        c->x.up_ready = true;
    }
    advance(c);
}

static void on_upstream_read(struct mg_upconn *u, ssize_t nread)
{
    struct mg_conn *c = u->owner;
    struct mg_exchange *x = &c->x;
    if (nread < 0) {
        if (x->state == MG_X_TUNNEL) {
            mg_upconn_set_reading(u, false);
            x->up_eof = true;
            advance(c);
            return;
        }
        if (x->state == MG_X_FORWARD && x->resp_head_done && !x->resp_done && u->start == u->end &&
            mg_body_eof(&x->resp_body))
            response_done(c); /* a close-delimited body, ended by the close */
        if (x->resp_done) {
            x->up_reusable = false;
            advance(c);
            return;
        }
        upstream_failed(c, MG_RETRY_ON_RESET, true, MG_ERR_UPSTREAM_UNAVAILABLE,
                        nread == UV_EOF ? "upstream closed the connection"
                                        : uv_strerror((int)nread));
        advance(c);
        return;
    }
    sync_upstream_timer(c, true);
    advance(c);
}

static void on_upstream_timeout(struct mg_upconn *u)
{
    struct mg_conn *c = u->owner;
    const char *what = !u->connected                  ? "connect timeout"
                       : c->x.up_timer == MG_UPT_SEND ? "upstream send timeout"
                                                      : "upstream read timeout";
    upstream_failed(c, MG_RETRY_ON_TIMEOUT, u->connected, MG_ERR_UPSTREAM_TIMEOUT, what);
    advance(c);
}

static void on_upstream_unpinned(struct mg_upconn *u)
{
    advance(u->owner);
}

static const struct mg_upconn_ops upstream_ops = {
    .on_connect = on_upstream_connect,
    .on_read = on_upstream_read,
    .on_timeout = on_upstream_timeout,
    .on_unpinned = on_upstream_unpinned,
};

/* ------------------------------------------------------------ accept, drain */

static void client_ip_of(struct mg_conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    c->client_ip[0] = '\0';
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET)
        uv_ip4_name((struct sockaddr_in *)&ss, c->client_ip, sizeof c->client_ip);
    else if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, c->client_ip, sizeof c->client_ip);
}

void mg_proxy_accept(struct mg_worker *w, uv_stream_t *server)
{
    struct mg_conn *c = calloc(1, sizeof *c);
    if (!c)
        mg_fatal("out of memory (client connection)");
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    mg_deadline_init(&w->loop, &c->timer, on_client_timer, c);
    mg_deadline_init(&w->loop, &c->deadline, on_deadline, c);
    uv_timer_init(&w->loop, &c->wait);
    c->tcp.data = c->wait.data = c;
    c->handles_open = 4;
    mg_arena_init(&c->x.arena, &w->arena_cache);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    unsigned open_before = atomic_fetch_add_explicit(&client_connections, 1, memory_order_relaxed);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    if (open_before >= w->rt->cfg->client.max_connections || w->draining) {
        conn_close(c);
        return;
    }
    mg_metrics_conn(w->rt->metrics, (unsigned)w->id, MG_CONN_SIDE_CLIENT, MG_CONN_STATE_IDLE, 1);
    c->counted = true;
    uv_tcp_nodelay(&c->tcp, 1);
    client_ip_of(c);
    arm_client_timer(c, w->rt->cfg->client.header_timeout_ms);
    update_reading(c);
}

void mg_proxy_drain(struct mg_worker *w)
{
    struct mg_conn *c = w->conns;
    while (c) {
        struct mg_conn *next = c->next;
        if (c->x.state == MG_X_IDLE && c->start == c->end)
            conn_close(c);
        c = next;
    }
}

void mg_proxy_close_all(struct mg_worker *w)
{
    while (w->conns)
        conn_close(w->conns);
}

void mg_proxy_free_worker_cache(struct mg_worker *w)
{
    while (w->free_wreqs) {
        struct mg_wreq *r = w->free_wreqs;
        w->free_wreqs = r->next_free;
        free(r);
    }
}

/* ------------------------------------------- for the idempotency phase */

void mg_px_advance(struct mg_conn *c)
{
    advance(c);
}

void mg_px_fail(struct mg_conn *c, enum mg_error err, const char *why)
{
    fail(c, err, why);
}

void mg_px_to_client(struct mg_conn *c, const void *p, size_t len)
{
    to_client(c, p, len, NULL);
}

bool mg_px_header_edited(const struct mg_lua_edit *e, struct mg_slice name)
{
    return edited(e, name);
}

struct mg_metrics *mg_px_metrics(struct mg_conn *c)
{
    return metrics_of(c);
}
