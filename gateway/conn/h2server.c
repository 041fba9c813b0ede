/*
 * The downstream HTTP/2 codec (see h2server.h), on libnghttp2: nghttp2 does
 * the framing, HPACK, flow control and RFC 9113 section 8.1 message checks
 * (pseudo-headers, connection-specific fields, TE, content-length against
 * DATA); this file turns each stream into an exchange.
 *
 * Reentrancy: nghttp2's callbacks only record what happened on a stream and
 * put it on the connection's wake list; exchanges run from the codec's own
 * handlers after nghttp2 returned (service), or from their own events, where
 * a flush only serializes frames (pump) and never runs another exchange.
 * Work that must not happen inside an exchange's step (running woken streams,
 * dropping the pins of sent body pieces, whose release may wake an upstream
 * connection's owner) waits for `later`, an idle handle run by the loop.
 *
 * Request bodies: DATA is copied into the stream's own buffer (at most one
 * window of it) and handed to the exchange pinned by that buffer; the window
 * is re-opened (nghttp2_session_consume) only once nothing points into the
 * bytes any more, i.e. the upstream took them: flow control is the
 * backpressure. Responses: body pieces point into the upstream's read buffer
 * (held by a pin while queued) and leave as DATA frames without a copy
 * (NGHTTP2_DATA_FLAG_NO_COPY); a stream without bytes to send defers its
 * data provider until the next piece (nghttp2_session_resume_data). Frames
 * nghttp2 serializes itself go through `ctl`, a buffer reused once the write
 * queue is idle.
 *
 * Memory: struct mg_h2s (malloc, c->codec) lives from the take-over to the
 * connection's on_free; a stream (malloc) until both its exchange's timers
 * are closed and nghttp2 forgot it (or the session is deleted).
 */
#include "conn/h2server.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config-t.h"
#include "config/config.h"
#include "conn/conn.h"
#include "core/log.h"
#include "http/fields.h"
#include "http/request.h"
#include "http/writer.h"
#include "lua/edits.h"
#include "obs/metrics.h"
#include "worker.h"

#define CTL_SIZE (64 * 1024)

struct mg_h2piece {
    struct mg_h2piece *next;
    const char *p;
    size_t len;
    struct mg_rbuf *pin; /* held (one pin) while the piece is ours; NULL: arena or static */
};

struct mg_h2s;

#define MAX_INTERIMS 8 /* 1xx responses passed on per stream */

struct mg_h2stream {
    struct mg_exchange x; /* first: an exchange pointer is a stream pointer */
    struct mg_h2s *s;
    struct mg_h2stream *next, *prev; /* the connection's streams */
    struct mg_h2stream *wake_next;
    int32_t id;
    bool woken;
    bool x_open;       /* the exchange's timers are not closed yet */
    bool ng_open;      /* nghttp2 still knows the stream */
    bool headers_done; /* the request head is complete: the exchange may read it */
    bool end_in;       /* END_STREAM received */
    bool reset_in;     /* the stream ended before our last frame (RST_STREAM, error) */
    bool submitted;    /* the response head went to nghttp2 */
    uint8_t interims;  /* 1xx responses passed on (send_interim) */
    bool end_out;      /* the exchange queued the end of the response */
    bool done_out;     /* the frame with END_STREAM was serialized */
    bool deferred;     /* the data provider waits for a piece */
    bool arena_out;    /* a piece pointed into memory the exchange frees at its end */
    bool too_large;    /* the request body passed client.max_body_size */
    bool bodyless;     /* the response head ends the stream */
    nghttp2_nv *nva;   /* a response head not submitted yet */
    size_t nvlen;
    struct mg_h2piece *out, *out_tail, *spare;
    size_t out_bytes;
    /* The request head, gathered by the header callbacks (arena copies). */
    struct mg_slice method, scheme, path;
    char *cookie;
    size_t cookielen, cookiecap;
    uint64_t head_bytes;
    /* The request body: one window's worth, pinned by writes to the upstream. */
    struct mg_rbuf in;
    size_t incap;
    uint64_t body_in;
    uint64_t last_in_ms, last_out_ms;
};

struct mg_h2s {
    struct mg_conn *c;
    const struct mg_exchange_hooks *hooks;
    nghttp2_session *ng;
    const struct mg_http2_conf *conf; /* of the config the session started on */
    struct mg_config *cfg;            /* held for conf */
    bool started;                     /* h2 chosen (else still selecting) */
    bool in_ng;                       /* inside an nghttp2 call: no other */
    bool servicing;
    bool goaway;   /* GOAWAY queued (drain, idle): no new stream will come */
    bool calm;     /* the client passed max_resets_per_second */
    bool later_on; /* `later` is started */
    struct mg_h2stream *streams, *wake;
    unsigned nx;                /* streams whose exchange is open */
    struct mg_h2piece *release; /* sent pieces whose pins wait for `later` */
    char *ctl;
    size_t ctl_len;
    uint64_t idle_since_ms;
    uint64_t reset_window_ms;
    uint32_t resets;
    uv_idle_t later;
};

static void pump(struct mg_h2s *s);
static void service(struct mg_h2s *s);

static struct mg_h2stream *of_x(struct mg_exchange *x)
{
    return (struct mg_h2stream *)x;
}

static uint64_t now_ms(struct mg_h2s *s)
{
    return uv_now(&s->c->w->loop);
}

static const struct mg_client_conf *client_conf(struct mg_h2s *s)
{
    return &s->cfg->client;
}

static void count(struct mg_h2s *s, enum mg_h2_reset_reason reason)
{
    mg_metrics_h2_reset(s->c->w->rt->metrics, (unsigned)s->c->w->id, reason);
}

static void wake(struct mg_h2stream *st)
{
    if (st->woken)
        return;
    st->woken = true;
    st->wake_next = st->s->wake;
    st->s->wake = st;
}

static void unwake(struct mg_h2stream *st)
{
    if (!st->woken)
        return;
    for (struct mg_h2stream **p = &st->s->wake; *p; p = &(*p)->wake_next)
        if (*p == st) {
            *p = st->wake_next;
            break;
        }
    st->woken = false;
}

static void on_later(uv_idle_t *h);

/* Runs what waits for a quiet moment at the loop's next turn. */
static void defer(struct mg_h2s *s)
{
    if (s->later_on || s->c->closing)
        return;
    s->later_on = true;
    uv_idle_start(&s->later, on_later);
}

/* ------------------------------------------------------------ body pieces */

static void unpin(struct mg_rbuf *b)
{
    if (b && --b->pins == 0 && b->on_unpinned)
        b->on_unpinned(b);
}

static void release_pieces(struct mg_h2s *s)
{
    while (s->release) {
        struct mg_h2piece *p = s->release;
        s->release = p->next;
        unpin(p->pin);
        free(p);
    }
}

/* A piece leaves the stream: its pin is dropped later, outside any step. */
static void retire(struct mg_h2s *s, struct mg_h2piece *p)
{
    if (!p->pin) {
        free(p);
        return;
    }
    p->next = s->release;
    s->release = p;
    defer(s);
}

static void queue_piece(struct mg_h2stream *st, const char *p, size_t len, struct mg_rbuf *pin)
{
    if (len == 0)
        return;
    struct mg_h2piece *pc = malloc(sizeof *pc);
    if (!pc)
        mg_fatal("out of memory (h2 piece)");
    *pc = (struct mg_h2piece){NULL, p, len, pin};
    if (pin)
        pin->pins++;
    else
        st->arena_out = true;
    if (st->out_tail)
        st->out_tail->next = pc;
    else
        st->out = pc;
    st->out_tail = pc;
    st->out_bytes += len;
    st->x.bytes_out += len;
}

static void drop_out(struct mg_h2stream *st)
{
    while (st->out) {
        struct mg_h2piece *p = st->out;
        st->out = p->next;
        retire(st->s, p);
    }
    st->out_tail = NULL;
    st->out_bytes = 0;
}

/* ------------------------------------------------------------ streams */

static void free_stream(struct mg_h2stream *st)
{
    struct mg_h2s *s = st->s;
    unwake(st);
    drop_out(st);
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    free(st->in.buf);
    s->hooks->destroy(&st->x);
    free(st);
}

/* A stream holds one of the connection's handles until its exchange is
 * closed, nghttp2 forgot it and no upstream write points into its body. */
static void maybe_free_stream(struct mg_h2stream *st)
{
    if (st->x_open || st->ng_open || st->in.pins)
        return;
    struct mg_conn *c = st->s->c;
    free_stream(st);
    mg_conn_handle_closed(c);
}

/* The exchange's timers are closed. */
static void on_x_closed(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    struct mg_conn *c = st->s->c;
    st->x_open = false;
    if (c->closing)
        st->ng_open = false; /* the session goes with the connection */
    maybe_free_stream(st);
}

/* The stream's exchange is over: it lets go of its timers and memory. */
static void end_exchange(struct mg_h2stream *st)
{
    struct mg_h2s *s = st->s;
    if (st->x.closing)
        return;
    drop_out(st);
    s->hooks->close(&st->x);
    if (--s->nx == 0) {
        mg_conn_set_active(s->c, false);
        s->idle_since_ms = now_ms(s);
    }
}

/* Window back for request bytes nothing points into any more. */
static void consume_body(struct mg_h2stream *st)
{
    struct mg_rbuf *b = &st->in;
    if (!b->buf || b->pins || b->start == 0)
        return;
    if (st->ng_open && !st->s->c->closing)
        nghttp2_session_consume(st->s->ng, st->id, b->start);
    memmove(b->buf, b->buf + b->start, b->end - b->start);
    b->end -= b->start;
    b->start = 0;
}

static void on_body_unpinned(struct mg_rbuf *b)
{
    struct mg_h2stream *st = (struct mg_h2stream *)((char *)b - offsetof(struct mg_h2stream, in));
    if (!st->x_open && !st->ng_open) {
        maybe_free_stream(st); /* the last write into the upstream from it is done */
        return;
    }
    if (st->s->c->closing)
        return;
    consume_body(st);
    defer(st->s); /* the WINDOW_UPDATE goes out at the loop's next turn */
}

static struct mg_h2stream *new_stream(struct mg_h2s *s, int32_t id)
{
    struct mg_h2stream *st = calloc(1, sizeof *st);
    if (!st)
        mg_fatal("out of memory (h2 stream)");
    struct mg_conn *c = s->c;
    st->s = s;
    st->id = id;
    st->x_open = st->ng_open = true;
    st->in.on_unpinned = on_body_unpinned;
    st->last_in_ms = st->last_out_ms = now_ms(s);
    s->hooks->init(&st->x, c->w, NULL, c->client_ip, on_x_closed);
    mg_fields_init(&st->x.arena, &st->x.req_hdrs);
    c->handles_open++;
    st->x.secure = mg_conn_secure(c);
    st->x.h2 = true;
    st->x.client = c->tr;
    st->next = s->streams;
    if (s->streams)
        s->streams->prev = st;
    s->streams = st;
    if (s->nx++ == 0)
        mg_conn_set_active(c, true);
    return st;
}

/* ------------------------------------------------------------ the request */

static char *copy(struct mg_exchange *x, const uint8_t *p, size_t len)
{
    char *o = mg_arena_alloc(&x->arena, len + 1);
    memcpy(o, p, len);
    o[len] = '\0';
    return o;
}

static int add_field(struct mg_exchange *x, struct mg_slice name, struct mg_slice value)
{
    if (mg_fields_name(&x->arena, &x->req_hdrs, name.p, name.len) < 0)
        return -1;
    if (value.len)
        mg_fields_value(&x->req_hdrs, value.p, value.len);
    mg_fields_value_done(&x->req_hdrs);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct mg_h2stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!st || st->headers_done || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers: dropped (the upstream request is not chunked with them) */
    struct mg_exchange *x = &st->x;
    st->head_bytes += namelen + valuelen + 32; /* RFC 9113 section 6.5.2's accounting */
    if (x->error)
        return 0;
    if (st->head_bytes > client_conf(st->s)->max_header_size) {
        x->error = MG_ERR_HEADER_TOO_LARGE;
        return 0;
    }
    struct mg_slice n = {(const char *)name, namelen};
    if (namelen && name[0] == ':') {
        struct mg_slice v = {copy(x, value, valuelen), valuelen};
        if (MG_NAME_IS(n, ":method"))
            st->method = v;
        else if (MG_NAME_IS(n, ":path"))
            st->path = v;
        else if (MG_NAME_IS(n, ":scheme"))
            st->scheme = v;
        else if (MG_NAME_IS(n, ":authority"))
            x->authority = v;
        return 0;
    }
    if (MG_NAME_IS(n, "cookie")) { /* RFC 9113 section 8.2.3: crumbs joined by "; " */
        if (st->cookielen && mg_arena_append(&x->arena, &st->cookie, &st->cookielen, &st->cookiecap,
                                             "; ", 2, SIZE_MAX) < 0)
            return 0;
        mg_arena_append(&x->arena, &st->cookie, &st->cookielen, &st->cookiecap, (const char *)value,
                        valuelen, SIZE_MAX);
        return 0;
    }
    struct mg_slice nn = {copy(x, name, namelen), namelen};
    struct mg_slice vv = {copy(x, value, valuelen), valuelen};
    if (add_field(x, nn, vv) < 0)
        x->error = MG_ERR_HEADER_TOO_LARGE;
    return 0;
}

static int method_of(struct mg_slice m)
{
    for (int i = 0; i < 64; i++) {
        const char *name = llhttp_method_name((llhttp_method_t)i);
        if (name && strlen(name) == m.len && memcmp(name, m.p, m.len) == 0)
            return i;
    }
    return -1;
}

/* The fields the gateway acts on, as the HTTP/1 codec finds them. */
static void find_fields(struct mg_exchange *x)
{
    x->host_idx = x->rid_idx = x->xff_idx = -1;
    for (uint32_t i = 0; i < x->req_hdrs.n; i++) {
        struct mg_header *f = &x->req_hdrs.v[i];
        if (MG_NAME_IS(f->name, "host"))
            x->host_idx = (int)i;
        else if (MG_NAME_IS(f->name, "x-request-id"))
            x->rid_idx = (int)i;
        else if (MG_NAME_IS(f->name, "x-forwarded-for"))
            x->xff_idx = (int)i;
        else if (MG_NAME_IS(f->name, "x-forwarded-host") ||
                 MG_NAME_IS(f->name, "x-forwarded-proto"))
            f->flags |= MG_HDR_HOP;
        else if (MG_NAME_IS(f->name, "expect")) {
            x->req_expect_continue = mg_slice_ieq(f->value, MG_SLICE_LIT("100-continue"));
            f->flags |= MG_HDR_HOP;
        } else if (MG_NAME_IS(f->name, "content-length")) {
            f->flags |= MG_HDR_HOP; /* the gateway writes its own framing */
            uint64_t v = 0;
            for (size_t k = 0; k < f->value.len; k++)
                v = v * 10 + (uint64_t)(f->value.p[k] - '0'); /* digits: nghttp2 checked */
            x->req_has_length = true;
            x->req_content_length = v;
        }
    }
}

static enum mg_error inspect(struct mg_h2stream *st)
{
    struct mg_exchange *x = &st->x;
    if (x->method < 0)
        return MG_ERR_BAD_REQUEST;
    if (x->error)
        return x->error;
    if (st->cookielen &&
        add_field(x, MG_SLICE_LIT("cookie"), (struct mg_slice){st->cookie, st->cookielen}) < 0)
        return MG_ERR_HEADER_TOO_LARGE;
    if (x->method == HTTP_CONNECT)
        return MG_ERR_NOT_IMPLEMENTED; /* no tunnels over h2 (nor extended CONNECT) */
    x->url = st->path;
    find_fields(x);
    if (x->authority.len && !mg_http_host_valid(x->authority))
        return MG_ERR_BAD_REQUEST;
    if (!x->authority.len &&
        (x->host_idx < 0 || !mg_http_host_valid(x->req_hdrs.v[x->host_idx].value)))
        return MG_ERR_BAD_REQUEST;
    if (!mg_http_target_valid(x->url) || x->url.len == 0 || x->url.p[0] != '/')
        return MG_ERR_BAD_REQUEST;
    const char *q = memchr(x->url.p, '?', x->url.len);
    x->path = (struct mg_slice){x->url.p, q ? (size_t)(q - x->url.p) : x->url.len};
    if (!mg_http_path_safe(x->path))
        return MG_ERR_BAD_REQUEST;
    mg_headers_mark_hop_by_hop(&x->req_hdrs);
    if (x->xff_idx >= 0 && (x->req_hdrs.v[x->xff_idx].flags & MG_HDR_HOP))
        x->xff_idx = -1;
    if (x->rid_idx >= 0 && (x->req_hdrs.v[x->rid_idx].flags & MG_HDR_HOP))
        x->rid_idx = -1;
    if (x->req_has_length && x->req_content_length > x->rt->cfg->client.max_body_size)
        return MG_ERR_BODY_TOO_LARGE;
    return MG_ERR_NONE;
}

static int read_head(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    if (!st->headers_done)
        return MG_AGAIN;
    x->method = method_of(st->method);
    x->head_parsed = x->method >= 0; /* the access log names the method when known */
    x->http_minor = 1;
    x->req_keepalive = true;
    /* What the upstream head's size is estimated from (h1client.c, record.c). */
    x->headlen = st->head_bytes + st->path.len + 16;
    x->error = inspect(st);
    if (!x->error) {
        x->req_done = st->end_in && !st->in.buf;
        if (!x->req_done && !x->req_has_length)
            x->req_chunked = true; /* a body of unknown length: chunked upstream */
    }
    return MG_NEXT;
}

static bool has_request(struct mg_exchange *x)
{
    return of_x(x)->headers_done;
}

static enum mg_body_result read_body(struct mg_exchange *x, struct mg_slice *d,
                                     struct mg_rbuf **pin)
{
    struct mg_h2stream *st = of_x(x);
    if (st->too_large)
        return MG_BODY_TOO_LARGE;
    struct mg_rbuf *b = &st->in;
    if (b->buf && b->start < b->end) {
        *d = (struct mg_slice){b->buf + b->start, b->end - b->start};
        b->start = b->end;
        *pin = b;
        return MG_BODY_DATA;
    }
    if (st->end_in) {
        if (x->req_has_length && st->body_in != x->req_content_length)
            return MG_BODY_ERROR; /* nghttp2 resets such a stream; be sure */
        return MG_BODY_DONE;
    }
    return MG_BODY_MORE;
}

static struct mg_slice read_raw(struct mg_exchange *x, struct mg_rbuf **pin)
{
    *pin = NULL;
    return (struct mg_slice){NULL, 0}; /* no tunnels over h2 */
}

/* ------------------------------------------------------------ responses */

static nghttp2_nv nv(struct mg_slice name, struct mg_slice value)
{
    return (nghttp2_nv){(uint8_t *)name.p, (uint8_t *)value.p, name.len, value.len,
                        NGHTTP2_NV_FLAG_NONE};
}

/* Field names are lower case in HTTP/2 (RFC 9113 section 8.2.1). */
static struct mg_slice lower(struct mg_exchange *x, struct mg_slice n)
{
    char *o = mg_arena_alloc(&x->arena, n.len + 1);
    for (size_t i = 0; i < n.len; i++)
        o[i] = (n.p[i] >= 'A' && n.p[i] <= 'Z') ? (char)(n.p[i] + 32) : n.p[i];
    o[n.len] = '\0';
    return (struct mg_slice){o, n.len};
}

static struct mg_slice dec(struct mg_exchange *x, uint64_t v)
{
    char *o = mg_arena_alloc(&x->arena, MG_HTTP_DEC_MAX);
    return (struct mg_slice){o, mg_http_put_dec(o, v)};
}

/* Connection-specific fields never reach an HTTP/2 client (RFC 9113
 * section 8.2.2), nor a framing field the gateway did not decide. */
static bool never_sent(struct mg_slice n)
{
    return MG_NAME_IS(n, "connection") || MG_NAME_IS(n, "keep-alive") ||
           MG_NAME_IS(n, "proxy-connection") || MG_NAME_IS(n, "transfer-encoding") ||
           MG_NAME_IS(n, "upgrade") || MG_NAME_IS(n, "te") || MG_NAME_IS(n, "trailer") ||
           MG_NAME_IS(n, "content-length");
}

struct head_builder {
    nghttp2_nv *v;
    size_t n, cap;
};

static void head_start(struct mg_exchange *x, struct head_builder *h, size_t fields, int status)
{
    h->cap = fields + 8;
    h->v = mg_arena_alloc(&x->arena, h->cap * sizeof *h->v);
    h->n = 0;
    h->v[h->n++] = nv(MG_SLICE_LIT(":status"), dec(x, (uint64_t)status));
}

/* A value new on every response (x-request-id) would only churn the
 * client's HPACK table: each one evicts another entry and every later lookup
 * compares against them (about 6.7k instructions per stream). */
static bool unique_per_response(struct mg_slice name)
{
    return MG_NAME_IS(name, "x-request-id");
}

static void head_add(struct mg_exchange *x, struct head_builder *h, struct mg_slice name,
                     struct mg_slice value)
{
    if (h->n >= h->cap || never_sent(name))
        return;
    h->v[h->n] = nv(lower(x, name), value);
    if (unique_per_response(name))
        h->v[h->n].flags = NGHTTP2_NV_FLAG_NO_INDEX;
    h->n++;
}

static void head_done(struct mg_h2stream *st, struct head_builder *h, bool bodyless)
{
    st->nva = h->v;
    st->nvlen = h->n;
    st->bodyless = bodyless;
}

static void add_edits(struct mg_exchange *x, struct head_builder *h)
{
    const struct mg_lua_edit *e = x->lua_ready ? x->lua.resp_edits : NULL;
    for (; e; e = e->next)
        if (e->value.p)
            head_add(x, h, (struct mg_slice){e->name.p, e->name.len},
                     (struct mg_slice){e->value.p, e->value.len});
}

static size_t count_edits(const struct mg_exchange *x)
{
    size_t n = 0;
    for (const struct mg_lua_edit *e = x->lua_ready ? x->lua.resp_edits : NULL; e; e = e->next)
        n++;
    return n;
}

static bool is_head_request(const struct mg_exchange *x)
{
    return x->head_parsed && x->method == HTTP_HEAD;
}

static void send_continue(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    nghttp2_nv v = nv(MG_SLICE_LIT(":status"), MG_SLICE_LIT("100"));
    nghttp2_submit_headers(st->s->ng, NGHTTP2_FLAG_NONE, st->id, NULL, &v, 1, NULL);
}

/* An upstream's 1xx (103 Early Hints...): a HEADERS frame without END_STREAM
 * ahead of the final one (RFC 9113 section 8.1), its fields as they came but
 * hop-by-hop ones and Content-Length (head_add drops what HTTP/2 never
 * carries). At most MAX_INTERIMS per stream, as on HTTP/1.1. */
static void send_interim(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    if (st->interims == MAX_INTERIMS || st->submitted)
        return;
    st->interims++;
    struct head_builder h;
    head_start(x, &h, x->resp_hdrs.n, x->status);
    for (uint32_t i = 0; i < x->resp_hdrs.n; i++) {
        const struct mg_header *f = &x->resp_hdrs.v[i];
        if (!(f->flags & MG_HDR_HOP))
            head_add(x, &h, f->name, f->value);
    }
    nghttp2_submit_headers(st->s->ng, NGHTTP2_FLAG_NONE, st->id, NULL, h.v, h.n, NULL);
    defer(st->s); /* out at the loop's next turn, before any final response exists */
}

static void send_head(struct mg_exchange *x, bool switching)
{
    struct mg_h2stream *st = of_x(x);
    const struct mg_lua_edit *edits = x->lua_ready ? x->lua.resp_edits : NULL;
    struct head_builder h;
    head_start(x, &h, x->resp_hdrs.n + count_edits(x), x->status);
    for (uint32_t i = 0; i < x->resp_hdrs.n; i++) {
        struct mg_header *f = &x->resp_hdrs.v[i];
        if ((f->flags & MG_HDR_HOP) || (edits && mg_lua_edits_name(edits, f->name)))
            continue;
        head_add(x, &h, f->name, f->value);
    }
    add_edits(x, &h);
    if (mg_headers_find(&x->resp_hdrs, MG_SLICE_LIT("x-request-id")) < 0)
        head_add(x, &h, MG_SLICE_LIT("x-request-id"),
                 (struct mg_slice){x->request_id, strlen(x->request_id)});
    head_add(x, &h, MG_SLICE_LIT("via"), MG_SLICE_LIT("1.1 moongate"));
    /* HEAD and 304 answers keep the length of the body they stand for. */
    if (x->resp_has_length && x->status != 204 && x->status >= 200)
        h.v[h.n++] = nv(MG_SLICE_LIT("content-length"), dec(x, x->resp_length));
    head_done(st, &h, is_head_request(x) || x->status == 204 || x->status == 304);
}

static void send_body(struct mg_exchange *x, struct mg_slice d, struct mg_rbuf *pin)
{
    struct mg_h2stream *st = of_x(x);
    if (!st->bodyless)
        queue_piece(st, d.p, d.len, pin);
}

static void send_end(struct mg_exchange *x)
{
    of_x(x)->end_out = true;
}

static void send_raw(struct mg_exchange *x, struct mg_slice d, struct mg_rbuf *pin)
{
}

static void send_error(struct mg_exchange *x, enum mg_error err)
{
    struct mg_h2stream *st = of_x(x);
    int status = mg_error_status(err);
    char original[40] = "";
    if (err == MG_ERR_IDEMPOTENCY_REPLAY_UNAVAILABLE)
        snprintf(original, sizeof original, ",\"original_status\":%u", x->idem.original_status);
    char *body = mg_arena_alloc(&x->arena, 360);
    int blen = snprintf(body, 360, "{\"error\":\"%s\",\"status\":%d%s,\"request_id\":\"%s\"}\n",
                        mg_error_name(err), status, original, x->request_id);
    MG_ASSERT(blen > 0 && blen < 360);
    struct head_builder h;
    head_start(x, &h, 4, status);
    head_add(x, &h, MG_SLICE_LIT("content-type"), MG_SLICE_LIT("application/json"));
    if (status == 503 || err == MG_ERR_IDEMPOTENCY_CONFLICT)
        head_add(x, &h, MG_SLICE_LIT("retry-after"),
                 dec(x, x->retry_after_s ? x->retry_after_s : 1));
    head_add(x, &h, MG_SLICE_LIT("x-request-id"),
             (struct mg_slice){x->request_id, strlen(x->request_id)});
    h.v[h.n++] = nv(MG_SLICE_LIT("content-length"), dec(x, (uint64_t)blen));
    bool head_only = is_head_request(x);
    head_done(st, &h, head_only);
    if (!head_only)
        queue_piece(st, body, (size_t)blen, NULL);
    st->end_out = true;
}

static void send_response(struct mg_exchange *x, int status, const struct mg_header *fields,
                          uint32_t n, struct mg_slice body, bool via)
{
    struct mg_h2stream *st = of_x(x);
    bool bodyless = status < 200 || status == 204 || status == 304 || is_head_request(x);
    bool own_id = false;
    struct head_builder h;
    head_start(x, &h, n + 3, status);
    for (uint32_t i = 0; i < n; i++) {
        own_id |= MG_NAME_IS(fields[i].name, "x-request-id");
        head_add(x, &h, fields[i].name, fields[i].value);
    }
    if (!own_id)
        head_add(x, &h, MG_SLICE_LIT("x-request-id"),
                 (struct mg_slice){x->request_id, strlen(x->request_id)});
    if (via)
        head_add(x, &h, MG_SLICE_LIT("via"), MG_SLICE_LIT("1.1 moongate"));
    if (status >= 200 && status != 204 && status != 304)
        h.v[h.n++] = nv(MG_SLICE_LIT("content-length"), dec(x, body.len));
    head_done(st, &h, bodyless);
    if (!bodyless)
        queue_piece(st, body.p, body.len, NULL);
    st->end_out = true;
}

static bool unsend(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    if (st->submitted)
        return false;
    st->nva = NULL;
    st->end_out = st->bodyless = false;
    x->bytes_out -= st->out_bytes;
    drop_out(st);
    return true;
}

/* ---------------------------------------------- nghttp2: the data provider */

static ssize_t read_data(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct mg_h2stream *st = src->ptr;
    if (st->out_bytes == 0) {
        if (!st->end_out || !st->x_open) {
            st->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    size_t n = st->out_bytes < length ? st->out_bytes : length;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == st->out_bytes && st->end_out)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Room for `len` bytes of nghttp2's own output in ctl, or NULL. */
static char *ctl_room(struct mg_h2s *s, size_t len)
{
    if (s->ctl_len + len > CTL_SIZE)
        return NULL;
    char *o = s->ctl + s->ctl_len;
    s->ctl_len += len;
    return o;
}

static int send_data(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *src, void *user)
{
    struct mg_h2s *s = user;
    struct mg_h2stream *st = src->ptr;
    char *hd = ctl_room(s, 9);
    if (!hd)
        return NGHTTP2_ERR_WOULDBLOCK;
    memcpy(hd, framehd, 9);
    mg_wq_add(&s->c->out, hd, 9, NULL);
    while (length) {
        struct mg_h2piece *p = st->out;
        size_t n = p->len < length ? p->len : length;
        mg_wq_add(&s->c->out, p->p, n, p->pin);
        length -= n;
        st->out_bytes -= n;
        if (n < p->len) {
            /* The rest stays ours: a second piece on the same pin for what went. */
            struct mg_h2piece *sent = malloc(sizeof *sent);
            if (!sent)
                mg_fatal("out of memory (h2 piece)");
            *sent = (struct mg_h2piece){NULL, p->p, n, p->pin};
            if (p->pin)
                p->pin->pins++;
            retire(s, sent);
            p->p += n;
            p->len -= n;
        } else {
            st->out = p->next;
            if (!st->out)
                st->out_tail = NULL;
            retire(s, p); /* its pin waits until the write queue holds its own */
        }
    }
    st->last_out_ms = now_ms(s);
    return 0;
}

static ssize_t send_cb(nghttp2_session *ng, const uint8_t *data, size_t length, int flags,
                       void *user)
{
    struct mg_h2s *s = user;
    size_t room = CTL_SIZE - s->ctl_len;
    if (room == 0)
        return NGHTTP2_ERR_WOULDBLOCK;
    size_t n = length < room ? length : room;
    char *o = ctl_room(s, n);
    memcpy(o, data, n);
    mg_wq_add(&s->c->out, o, n, NULL);
    return (ssize_t)n;
}

/* Submits a head the exchange built, with its body's provider. */
static void submit(struct mg_h2stream *st)
{
    struct mg_h2s *s = st->s;
    if (!st->nva || st->submitted || !st->ng_open)
        return;
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_data};
    int rv = nghttp2_submit_response(s->ng, st->id, st->nva, st->nvlen, st->bodyless ? NULL : &prd);
    st->submitted = true;
    st->nva = NULL;
    if (rv != 0)
        mg_debug("h2: submit response on stream %d: %s", st->id, nghttp2_strerror(rv));
    if (st->bodyless)
        drop_out(st);
}

static bool flush(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    struct mg_h2s *s = st->s;
    if (s->c->closing)
        return false;
    bool before = st->done_out;
    submit(st);
    if (st->submitted && st->deferred && (st->out_bytes || st->end_out) && st->ng_open) {
        st->deferred = false;
        nghttp2_session_resume_data(s->ng, st->id);
    }
    pump(s);
    if (s->wake)
        defer(s);
    return !before && st->done_out;
}

static bool drained(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    struct mg_conn *c = st->s->c;
    if (c->closing || st->reset_in)
        return true;
    /* Arena bytes must be written before the exchange's reset frees them. */
    return st->done_out && (!st->arena_out || mg_wq_idle(&c->out));
}

static bool client_eof(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    return st->reset_in || st->s->c->eof;
}

static bool unpinned(struct mg_exchange *x)
{
    return of_x(x)->in.pins == 0;
}

static void update_reading(struct mg_exchange *x)
{
    consume_body(of_x(x)); /* bytes the exchange copied (idempotency) pin nothing */
}

/* The stream's exchange ended (reset: it would wait for a next request). */
static void idle(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    struct mg_h2s *s = st->s;
    if (st->ng_open && !st->end_in && !s->c->closing) /* RFC 9113 section 8.1 */
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    end_exchange(st);
    defer(s);
}

/* The exchange cannot finish its response (or the client went): the stream
 * is reset, never left looking complete. */
static void close_stream(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    struct mg_h2s *s = st->s;
    if (st->ng_open && !s->c->closing && (!st->done_out || !st->end_in))
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
                                  st->done_out ? NGHTTP2_NO_ERROR : NGHTTP2_INTERNAL_ERROR);
    end_exchange(st);
    defer(s);
}

static const struct mg_downstream_ops down_ops = {
    .read_head = read_head,
    .has_request = has_request,
    .read_body = read_body,
    .read_raw = read_raw,
    .send_continue = send_continue,
    .send_interim = send_interim,
    .send_head = send_head,
    .send_body = send_body,
    .send_end = send_end,
    .send_raw = send_raw,
    .send_error = send_error,
    .send_response = send_response,
    .unsend = unsend,
    .flush = flush,
    .drained = drained,
    .eof = client_eof,
    .unpinned = unpinned,
    .update_reading = update_reading,
    .idle = idle,
    .close = close_stream,
};

/* ---------------------------------------------- nghttp2: what arrives */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    struct mg_h2s *s = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct mg_h2stream *st = new_stream(s, frame->hd.stream_id);
    st->x.down = &down_ops;
    nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, st);
    return 0;
}

static void count_reset(struct mg_h2s *s)
{
    uint64_t now = now_ms(s);
    if (now - s->reset_window_ms >= 1000) {
        s->reset_window_ms = now;
        s->resets = 0;
    }
    if (++s->resets > s->conf->max_resets_per_second)
        s->calm = true;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    struct mg_h2s *s = user;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        count_reset(s);
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    struct mg_h2stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!st)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        st->headers_done = true;
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        st->end_in = true;
    st->last_in_ms = now_ms(s);
    wake(st);
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    struct mg_h2s *s = user;
    struct mg_h2stream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st || !st->x_open || st->x.closing || st->too_large) {
        nghttp2_session_consume(ng, id, len); /* nobody reads it: the window stays open */
        return 0;
    }
    st->body_in += len;
    st->last_in_ms = now_ms(s);
    wake(st);
    if (st->body_in > client_conf(s)->max_body_size) {
        st->too_large = true;
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    struct mg_rbuf *b = &st->in;
    if (!b->buf) {
        /* Until our SETTINGS are acknowledged the client may use the
         * default window (RFC 9113 section 6.9.2). */
        st->incap = s->conf->initial_window_size > 65535 ? s->conf->initial_window_size : 65535;
        if (!(b->buf = malloc(st->incap)))
            mg_fatal("out of memory (h2 request body)");
    }
    if (b->end + len > st->incap) {
        /* More than the window we gave: nghttp2 would have refused it. */
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_FLOW_CONTROL_ERROR);
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    memcpy(b->buf + b->end, data, len);
    b->end += len;
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error, void *user)
{
    struct mg_h2stream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st)
        return 0;
    st->ng_open = false;
    if (!st->done_out)
        st->reset_in = true;
    if (st->x_open)
        wake(st);
    else
        maybe_free_stream(st);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct mg_h2stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (st) {
        st->done_out = true;
        if (st->x_open)
            wake(st);
    }
    return 0;
}

/* ------------------------------------------------------------ the connection */

/* Sends what nghttp2 has to send, as far as the write queue takes it. Never
 * runs an exchange. */
static void pump(struct mg_h2s *s)
{
    struct mg_conn *c = s->c;
    if (s->in_ng || c->closing)
        return;
    for (int round = 0; round < 64; round++) {
        if (mg_wq_idle(&c->out))
            s->ctl_len = 0;
        size_t before = s->ctl_len;
        s->in_ng = true;
        int rv = nghttp2_session_send(s->ng);
        s->in_ng = false;
        if (rv != 0) {
            mg_debug("h2: send: %s", nghttp2_strerror(rv));
            mg_conn_close(c);
            return;
        }
        bool full = s->ctl_len + 9 > CTL_SIZE;
        mg_conn_flush(c);
        if (c->closing)
            return;
        if (!full || !mg_wq_idle(&c->out) || s->ctl_len == before)
            break; /* all sent, or on_written resumes */
    }
    if (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng) &&
        mg_wq_idle(&c->out))
        mg_conn_close(c); /* GOAWAY sent and every stream done, or the session ended */
}

static void run_wakes(struct mg_h2s *s)
{
    while (s->wake && !s->c->closing) {
        struct mg_h2stream *st = s->wake;
        s->wake = st->wake_next;
        st->woken = false;
        st->wake_next = NULL;
        if (st->x_open && !st->x.closing)
            s->hooks->event(&st->x, MG_XEV_RUN);
    }
}

/* At the top of a handler: runs woken streams and sends until both rest. */
static void service(struct mg_h2s *s)
{
    if (s->servicing)
        return;
    s->servicing = true;
    for (int round = 0; round < 16 && !s->c->closing; round++) {
        release_pieces(s);
        if (s->calm) {
            nghttp2_session_terminate_session(s->ng, NGHTTP2_ENHANCE_YOUR_CALM);
            s->calm = false;
            s->goaway = true;
            mg_warn("h2: %s passed http2.max_resets_per_second: GOAWAY", s->c->client_ip);
            count(s, MG_H2R_RAPID_RESET);
        }
        pump(s);
        if (!s->wake && !s->release)
            break;
        run_wakes(s);
    }
    s->servicing = false;
    if (!s->c->closing && (s->wake || s->release))
        defer(s);
}

static void on_later(uv_idle_t *h)
{
    struct mg_h2s *s = h->data;
    uv_idle_stop(h);
    s->later_on = false;
    if (!s->c->closing)
        service(s);
}

static void h2_on_read(struct mg_conn *c)
{
    struct mg_h2s *s = c->codec;
    if (c->eof) {
        mg_conn_close(c); /* the client is gone: every stream with it */
        return;
    }
    struct mg_rbuf *in = &c->in;
    if (in->start < in->end) {
        s->in_ng = true;
        ssize_t rv = nghttp2_session_mem_recv(s->ng, (const uint8_t *)in->buf + in->start,
                                              in->end - in->start);
        s->in_ng = false;
        if (rv < 0) {
            mg_debug("h2: %s: %s", c->client_ip, nghttp2_strerror((int)rv));
            count(s, MG_H2R_PROTOCOL);
            pump(s); /* the GOAWAY nghttp2 queued, if any */
            mg_conn_close(c);
            return;
        }
        in->start = in->end = 0; /* everything was copied or acted on */
    }
    service(s);
    mg_conn_update_reading(c, true);
}

static void h2_on_written(struct mg_conn *c, int status)
{
    struct mg_h2s *s = c->codec;
    if (mg_wq_idle(&c->out))
        for (struct mg_h2stream *st = s->streams; st; st = st->next)
            if (st->x_open && st->done_out && st->arena_out)
                wake(st); /* drained now */
    service(s);
}

static void h2_on_unpinned(struct mg_conn *c)
{
}

/* The periodic check: idle connection, request bodies that stopped, and
 * responses the client's window holds back. */
static uint64_t tick_ms(struct mg_h2s *s)
{
    uint64_t t = client_conf(s)->body_timeout_ms / 4;
    if (s->conf->idle_timeout_ms / 4 < t)
        t = s->conf->idle_timeout_ms / 4;
    return t < 50 ? 50 : t > 1000 ? 1000 : t;
}

static void h2_on_timer(struct mg_conn *c)
{
    struct mg_h2s *s = c->codec;
    uint64_t now = now_ms(s), body = client_conf(s)->body_timeout_ms;
    if (s->goaway && s->nx == 0) {
        /* Drained (GOAWAY sent, mg_conn_drain's grace over): nothing more comes. */
        pump(s);
        mg_conn_close(c);
        return;
    }
    if (s->nx == 0 && now - s->idle_since_ms >= s->conf->idle_timeout_ms) {
        count(s, MG_H2R_IDLE);
        if (!s->goaway)
            nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(s->ng), NGHTTP2_NO_ERROR,
                                  NULL, 0);
        s->goaway = true;
        pump(s);
        mg_conn_close(c);
        return;
    }
    for (struct mg_h2stream *st = s->streams; st && !c->closing;) {
        struct mg_h2stream *next = st->next;
        if (st->x_open && !st->x.closing && st->headers_done) {
            if (st->in.end > 0)
                st->last_in_ms = now; /* bytes not taken upstream yet: the wait is ours */
            if (!st->end_in && !st->x.req_done && now - st->last_in_ms >= body) {
                s->hooks->event(&st->x, MG_XEV_CLIENT_TIMEOUT);
            } else if (st->submitted && !st->done_out && st->out_bytes &&
                       now - st->last_out_ms >= body) {
                /* The client never opens its window: the stream goes. */
                mg_debug("h2: stream %d stalled on a closed window", st->id);
                count(s, MG_H2R_WINDOW_STALL);
                close_stream(&st->x);
            }
        }
        st = next;
    }
    if (c->closing)
        return;
    mg_deadline_set(&c->timer, tick_ms(s));
    service(s);
}

static void on_later_closed(uv_handle_t *h)
{
    struct mg_h2s *s = h->data;
    mg_conn_handle_closed(s->c);
}

static void h2_on_close(struct mg_conn *c)
{
    struct mg_h2s *s = c->codec;
    for (struct mg_h2stream *st = s->streams; st; st = st->next) {
        unwake(st);
        if (st->x_open && !st->x.closing) {
            drop_out(st);
            s->hooks->close(&st->x);
            s->nx--;
        }
    }
    s->wake = NULL;
    if (s->started) {
        uv_idle_stop(&s->later);
        uv_close((uv_handle_t *)&s->later, on_later_closed);
    }
}

static void h2_on_free(struct mg_conn *c)
{
    struct mg_h2s *s = c->codec;
    while (s->streams) {
        s->streams->x_open = s->streams->ng_open = false;
        free_stream(s->streams);
    }
    release_pieces(s);
    if (s->ng)
        nghttp2_session_del(s->ng);
    free(s->ctl);
    if (s->cfg)
        mg_config_unref(s->cfg);
    c->codec = NULL;
    free(s);
}

/* Drain: GOAWAY with the last stream id; streams under way finish. */
static bool h2_idle(struct mg_conn *c)
{
    struct mg_h2s *s = c->codec;
    if (!s->goaway) {
        s->goaway = true;
        nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(s->ng), NGHTTP2_NO_ERROR,
                              NULL, 0);
        pump(s);
    }
    return !c->closing && s->nx == 0;
}

static const struct mg_conn_ops h2_ops = {
    .on_read = h2_on_read,
    .on_written = h2_on_written,
    .on_unpinned = h2_on_unpinned,
    .on_timer = h2_on_timer,
    .on_close = h2_on_close,
    .on_free = h2_on_free,
    .idle = h2_idle,
};

/* ---------------------------------------------------------- the session */

static int make_session(struct mg_h2s *s)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
        mg_fatal("out of memory (nghttp2)");
    nghttp2_session_callbacks_set_send_callback(cb, send_cb);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* Floods (CVE-2019-9512/9515, CVE-2024-27316): bounded queues of ACKs,
     * SETTINGS entries and CONTINUATION frames; beyond them the session ends. */
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    int rv = nghttp2_session_server_new2(&s->ng, cb, s, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rv != 0)
        return rv;
    const struct mg_http2_conf *h = s->conf;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)h->initial_window_size},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, (uint32_t)h->max_frame_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)client_conf(s)->max_header_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    rv = nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    if (rv == 0) {
        /* The connection's window: every stream's at once (each is bounded
         * by its own buffer). */
        uint64_t conn = h->initial_window_size * h->max_concurrent_streams;
        rv = nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0,
                                                   conn > 2147483647u ? 2147483647 : (int32_t)conn);
    }
    return rv;
}

static void start(struct mg_h2s *s)
{
    struct mg_conn *c = s->c;
    s->started = true;
    s->cfg = c->w->rt->cfg;
    mg_config_ref(s->cfg);
    s->conf = &s->cfg->http2;
    if (!(s->ctl = malloc(CTL_SIZE)))
        mg_fatal("out of memory (h2)");
    uv_idle_init(&c->w->loop, &s->later);
    s->later.data = s;
    c->handles_open++;
    mg_conn_take_over(c, &h2_ops, s);
    s->idle_since_ms = now_ms(s);
    if (make_session(s) != 0) {
        mg_conn_close(c);
        return;
    }
    mg_deadline_set(&c->timer, tick_ms(s));
    h2_on_read(c);
}

/* ------------------------------------------------------------ selection */

static void sel_on_read(struct mg_conn *c)
{
    struct mg_h2s *s = c->codec;
    switch (mg_conn_sniff(c)) {
    case MG_CONN_PROTO_UNKNOWN:
        return; /* the preface is not all there yet */
    case MG_CONN_PROTO_H1:
        mg_conn_give_back(c);
        free(s);
        c->ops->on_read(c);
        return;
    case MG_CONN_PROTO_H2:
        start(s);
        return;
    }
}

static void sel_on_written(struct mg_conn *c, int status)
{
    c->first_ops->on_written(c, status);
}

static void sel_on_unpinned(struct mg_conn *c)
{
    c->first_ops->on_unpinned(c);
}

static void sel_on_timer(struct mg_conn *c)
{
    c->first_ops->on_timer(c);
}

static void sel_on_close(struct mg_conn *c)
{
}

static void sel_on_free(struct mg_conn *c)
{
    free(c->codec);
    c->codec = NULL;
}

static bool sel_idle(struct mg_conn *c)
{
    return c->first_ops->idle(c);
}

static const struct mg_conn_ops select_ops = {
    .on_read = sel_on_read,
    .on_written = sel_on_written,
    .on_unpinned = sel_on_unpinned,
    .on_timer = sel_on_timer,
    .on_close = sel_on_close,
    .on_free = sel_on_free,
    .idle = sel_idle,
};

void mg_h2s_offer(struct mg_conn *c, const struct mg_exchange_hooks *hooks)
{
    struct mg_h2s *s = calloc(1, sizeof *s);
    if (!s)
        mg_fatal("out of memory (h2)");
    s->c = c;
    s->hooks = hooks;
    mg_conn_take_over(c, &select_ops, s);
}
