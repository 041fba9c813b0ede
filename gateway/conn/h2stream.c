/*
 * HTTP/2 streams (see h2server.c for the connection and h2server-t.h for the
 * types): each stream is an exchange, and this file is its downstream ops
 * (mg_downstream_ops): the request head (translated in h2request.c) read
 * by the exchange, the request body handed over pinned by the
 * stream's buffer, response heads built as nghttp2 header lists, and response
 * body pieces sent by the data provider without a copy.
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
#include "loopctx.h"
#include "conn/h2server-t.h"

/* ------------------------------------------------------------ body pieces */

static void unpin(struct mg_rbuf *b)
{
    if (b && --b->pins == 0 && b->on_unpinned)
        b->on_unpinned(b);
}

static struct mg_h2piece *piece_new(struct mg_h2s *s)
{
    struct mg_h2piece *p = s->free_pieces;
    if (p) {
        s->free_pieces = p->next;
        s->nfree_pieces--;
    } else if (!(p = malloc(sizeof *p))) {
        mg_fatal("out of memory (h2 piece)");
    }
    return p;
}

static void piece_free(struct mg_h2s *s, struct mg_h2piece *p)
{
    if (s->nfree_pieces >= FREE_PIECES_MAX) {
        free(p);
        return;
    }
    p->next = s->free_pieces;
    s->free_pieces = p;
    s->nfree_pieces++;
}

void mg_h2_free_pieces(struct mg_h2s *s)
{
    while (s->free_pieces) {
        struct mg_h2piece *p = s->free_pieces;
        s->free_pieces = p->next;
        free(p);
    }
    s->nfree_pieces = 0;
}

void mg_h2_release_pieces(struct mg_h2s *s)
{
    while (s->release) {
        struct mg_h2piece *p = s->release;
        s->release = p->next;
        unpin(p->pin);
        piece_free(s, p);
    }
}

/* A piece leaves the stream: its pin is dropped later, outside any step
 * (service's loop, or `later`). */
static void retire(struct mg_h2s *s, struct mg_h2piece *p)
{
    if (!p->pin) {
        piece_free(s, p);
        return;
    }
    p->next = s->release;
    s->release = p;
    if (!s->servicing)
        mg_h2_defer(s);
}

static void queue_piece(struct mg_h2stream *st, const char *p, size_t len, struct mg_rbuf *pin)
{
    if (len == 0)
        return;
    struct mg_h2piece *pc = piece_new(st->s);
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

void mg_h2_drop_out(struct mg_h2stream *st)
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

static void unspare(struct mg_h2stream *st)
{
    struct mg_h2s *s = st->s;
    for (struct mg_h2stream **p = &s->spares; *p; p = &(*p)->spare_next)
        if (*p == st) {
            *p = st->spare_next;
            s->nspares--;
            break;
        }
    st->spare = false;
}

/* The stream's request bytes that nothing will read any more (the exchange
 * was answered or reset before taking them) still count against the
 * connection's window, and the stream's while nghttp2 knows it: they are
 * given back, or a few such streams would stall every later upload. */
static void give_back_body(struct mg_h2stream *st)
{
    struct mg_h2s *s = st->s;
    if (st->in.end > 0 && !s->c->closing) {
        nghttp2_session_consume(s->ng, st->id, st->in.end);
        mg_h2_dirty(s); /* the WINDOW_UPDATE goes out this turn */
    }
    st->in.start = st->in.end = 0;
}

void mg_h2_free_stream(struct mg_h2stream *st)
{
    struct mg_h2s *s = st->s;
    if (st->spare)
        unspare(st);
    if (s->hdr_st == st)
        s->hdr_st = NULL;
    mg_h2_unwake(st);
    mg_h2_drop_out(st);
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    give_back_body(st);
    free(st->in.buf);
    s->hooks->destroy(&st->x);
    free(st);
}

/* A stream holds one of the connection's handles until its exchange is
 * closed, nghttp2 forgot it, no upstream write points into its body and no
 * DATA in the connection's write queue points into its arena (an exchange
 * closed early, say by the client's RST_STREAM, does not wait in drained();
 * its stream waits here, and h2_on_written or the connection's close frees
 * it). */
void mg_h2_maybe_free_stream(struct mg_h2stream *st)
{
    if (st->x_open || st->ng_open || st->in.pins)
        return;
    struct mg_conn *c = st->s->c;
    if (st->arena_out && !c->closing && !mg_wq_idle(&c->out))
        return;
    mg_h2_free_stream(st);
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
    mg_h2_maybe_free_stream(st);
}

/* The stream's exchange is over: it lets go of its timers and memory. */
static void end_exchange(struct mg_h2stream *st)
{
    struct mg_h2s *s = st->s;
    if (st->x.closing)
        return;
    mg_h2_drop_out(st);
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
        mg_h2_maybe_free_stream(st); /* the last write into the upstream from it is done */
        return;
    }
    if (st->s->c->closing)
        return;
    consume_body(st);
    mg_h2_defer(st->s); /* the WINDOW_UPDATE goes out at the loop's next turn */
}

static const struct mg_downstream_ops down_ops;

/* A stream starts: its per-stream part is zero (calloc, or park), its
 * exchange idle. */
static void stream_begin(struct mg_h2s *s, struct mg_h2stream *st, int32_t id)
{
    st->spare = false;
    st->id = id;
    st->x_open = st->ng_open = true;
    st->in.on_unpinned = on_body_unpinned;
    st->last_in_ms = st->last_out_ms = now_ms(s);
    mg_fields_init(&st->x.arena, &st->x.req_hdrs);
    if (s->nx++ == 0)
        mg_conn_set_active(s->c, true);
}

struct mg_h2stream *mg_h2_new_stream(struct mg_h2s *s, int32_t id)
{
    struct mg_h2stream *st = s->spares;
    if (st) {
        s->spares = st->spare_next;
        s->nspares--;
        st->spare_next = NULL;
        stream_begin(s, st, id);
        return st;
    }
    /* calloc: the exchange's per-request part starts zeroed (as reset leaves it). */
    if (!(st = calloc(1, sizeof *st)))
        mg_fatal("out of memory (h2 stream)");
    struct mg_conn *c = s->c;
    st->s = s;
    s->hooks->init(&st->x, c->ctx, &down_ops, c->client_ip, on_x_closed);
    c->handles_open++;
    st->x.secure = mg_conn_secure(c);
    st->x.h2 = true;
    st->x.client = c->tr;
    st->next = s->streams;
    if (s->streams)
        s->streams->prev = st;
    s->streams = st;
    stream_begin(s, st, id);
    return st;
}

/* A stream whose exchange finished cleanly (reset, idle) and that nghttp2
 * forgot waits for the session's next stream, its exchange open. */
static bool park(struct mg_h2stream *st)
{
    struct mg_h2s *s = st->s;
    if (st->ng_open || st->in.pins || st->out || st->x.closing || s->c->closing ||
        s->nspares >= SPARES_MAX)
        return false;
    mg_h2_unwake(st);
    if (s->hdr_st == st)
        s->hdr_st = NULL;
    give_back_body(st);
    free(st->in.buf);
    size_t from = offsetof(struct mg_h2stream, wake_next);
    memset((char *)st + from, 0, sizeof *st - from); /* no request: has_request is false */
    st->x_open = true;                               /* closed with the connection */
    mg_arena_shed(&st->x.arena); /* the block goes back to the worker while it waits */
    st->spare = true;
    st->spare_next = s->spares;
    s->spares = st;
    s->nspares++;
    if (--s->nx == 0) {
        mg_conn_set_active(s->c, false);
        s->idle_since_ms = now_ms(s);
    }
    return true;
}

/* ------------------------------------------------------------ the request */

static int read_head(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    if (!st->headers_done)
        return MG_AGAIN;
    x->method = st->method_no - 1;
    x->head_parsed = x->method >= 0; /* the access log names the method when known */
    x->http_minor = 1;
    x->req_keepalive = true;
    /* What the upstream head's size is estimated from (h1client.c, record.c). */
    x->headlen = st->head_bytes + st->path.len + 16;
    x->error = mg_h2_inspect(st);
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

/* nghttp2 keeps the pointers instead of copying: names and values are the
 * exchange's (arena, response head, request id) or static, and outlive the
 * HEADERS frame: the arena is reset only once the stream's last frame went
 * out (drained), or after nghttp2 closed the stream, whose queued HEADERS it
 * then drops unread; a closed exchange keeps its arena until the stream is
 * freed, after nghttp2 forgot it. Names must be lower case already. */
static nghttp2_nv nv(struct mg_slice name, struct mg_slice value)
{
    return (nghttp2_nv){(uint8_t *)name.p, (uint8_t *)value.p, name.len, value.len,
                        NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

/* Field names are lower case in HTTP/2 (RFC 9113 section 8.2.1): a copy
 * only for a name that is not. */
/* The lower-case spelling of names origins commonly send capitalized
 * ("Server", "Date", "Content-Type"), or a slice with no pointer. */
static struct mg_slice common_name(struct mg_slice n)
{
    static const struct mg_slice none = {NULL, 0};
    switch (n.len) {
    case 4:
        return MG_NAME_IS(n, "date") ? MG_SLICE_LIT("date") : none;
    case 6:
        return MG_NAME_IS(n, "server") ? MG_SLICE_LIT("server") : none;
    case 12:
        return MG_NAME_IS(n, "content-type") ? MG_SLICE_LIT("content-type") : none;
    case 13:
        return MG_NAME_IS(n, "cache-control") ? MG_SLICE_LIT("cache-control") : none;
    default:
        return none;
    }
}

static struct mg_slice lower(struct mg_exchange *x, struct mg_slice n)
{
    struct mg_slice known = common_name(n);
    if (known.p)
        return known;
    size_t i = 0;
    while (i < n.len && !(n.p[i] >= 'A' && n.p[i] <= 'Z'))
        i++;
    if (i == n.len)
        return n;
    char *o = mg_arena_alloc(&x->arena, n.len + 1);
    memcpy(o, n.p, i);
    for (; i < n.len; i++)
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
    switch (n.len) { /* the lengths of those names: most fields are none of them */
    case 2:
    case 7:
    case 10:
    case 16:
    case 17:
        return mg_http_fixed_hop_by_hop(n);
    case 14:
        return MG_NAME_IS(n, "content-length");
    default:
        return false;
    }
}

struct head_builder {
    nghttp2_nv *v;
    size_t n, cap;
};

/* The common statuses are static text (and found in HPACK's static table). */
static struct mg_slice status_text(struct mg_exchange *x, int status)
{
    switch (status) {
    case 200:
        return MG_SLICE_LIT("200");
    case 204:
        return MG_SLICE_LIT("204");
    case 304:
        return MG_SLICE_LIT("304");
    case 404:
        return MG_SLICE_LIT("404");
    default:
        return dec(x, (uint64_t)status);
    }
}

static void head_start(struct mg_exchange *x, struct head_builder *h, size_t fields, int status)
{
    h->cap = fields + 8;
    h->v = mg_arena_alloc(&x->arena, h->cap * sizeof *h->v);
    h->n = 0;
    h->v[h->n++] = nv(MG_SLICE_LIT(":status"), status_text(x, status));
}

/* A field of the gateway's own (lower case, never hop-by-hop). */
static void head_own(struct head_builder *h, struct mg_slice name, struct mg_slice value,
                     uint8_t flags)
{
    if (h->n >= h->cap)
        return;
    h->v[h->n] = nv(name, value);
    h->v[h->n++].flags |= flags;
}

static struct mg_slice request_id(const struct mg_exchange *x)
{
    return (struct mg_slice){x->request_id, strlen(x->request_id)};
}

/* How our x-request-id goes into HPACK. Its value is new on every response:
 * never indexed (see unique_per_response). Its name is worth one entry of
 * the client's table though: now and then (the session's first response,
 * then one every RID_NAME_MS, in case newer entries such as each second's
 * Date pushed it out) it goes with incremental indexing, one dead value
 * entry each time, and the responses in between refer to that entry's name
 * instead of spelling "x-request-id" out, Huffman-coded, every time. */
#define RID_NAME_MS 10000
static uint8_t rid_flags(struct mg_h2s *s)
{
    uint64_t now = now_ms(s);
    if (s->rid_named && now - s->rid_named_ms < RID_NAME_MS)
        return NGHTTP2_NV_FLAG_NO_INDEX;
    s->rid_named = true;
    s->rid_named_ms = now;
    return NGHTTP2_NV_FLAG_NONE;
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
    if (name.len == 12 && (name.p[0] | 0x20) == 'x' && unique_per_response(name))
        h->v[h->n].flags |= NGHTTP2_NV_FLAG_NO_INDEX;
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
    /* The fields point into the try's head buffer, which the next head (the
     * final one may already be in the same read) overwrites before this frame
     * is packed: nghttp2 must copy them now. */
    for (size_t i = 0; i < h.n; i++)
        h.v[i].flags &= (uint8_t) ~(NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE);
    nghttp2_submit_headers(st->s->ng, NGHTTP2_FLAG_NONE, st->id, NULL, h.v, h.n, NULL);
    mg_h2_defer(st->s); /* out at the loop's next turn, before any final response exists */
}

static void send_head(struct mg_exchange *x, bool switching)
{
    struct mg_h2stream *st = of_x(x);
    const struct mg_lua_edit *edits = x->lua_ready ? x->lua.resp_edits : NULL;
    struct head_builder h;
    head_start(x, &h, x->resp_hdrs.n + count_edits(x), x->status);
    bool own_id = false; /* the upstream sent one: ours is not added */
    for (uint32_t i = 0; i < x->resp_hdrs.n; i++) {
        struct mg_header *f = &x->resp_hdrs.v[i];
        if (f->name.len == 12 && MG_NAME_IS(f->name, "x-request-id"))
            own_id = true;
        if ((f->flags & MG_HDR_HOP) || (edits && mg_lua_edits_name(edits, f->name)))
            continue;
        head_add(x, &h, f->name, f->value);
    }
    add_edits(x, &h);
    if (!own_id)
        head_own(&h, MG_SLICE_LIT("x-request-id"), request_id(x), rid_flags(of_x(x)->s));
    head_own(&h, MG_SLICE_LIT("via"), MG_SLICE_LIT("1.1 moongate"), 0);
    /* HEAD and 304 answers keep the length of the body they stand for; a
     * body a filter rewrites has a length nobody knows yet (the DATA frames
     * end it, as chunks do on HTTP/1.1). */
    if (x->resp_has_length && x->status != 204 && x->status >= 200 && !x->filtering)
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
    head_own(&h, MG_SLICE_LIT("x-request-id"), request_id(x), rid_flags(of_x(x)->s));
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
        head_own(&h, MG_SLICE_LIT("x-request-id"), request_id(x), rid_flags(of_x(x)->s));
    if (via)
        head_own(&h, MG_SLICE_LIT("via"), MG_SLICE_LIT("1.1 moongate"), 0);
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
    mg_h2_drop_out(st);
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
        /* NO_COPY here too: every DATA frame goes through mg_h2_send_data,
         * which sees the one that ends the stream. */
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_COPY;
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

/* The bytes of ctl[ctl_run..) join the write queue as one piece. */
void mg_h2_ctl_commit(struct mg_h2s *s)
{
    if (s->ctl_len > s->ctl_run)
        mg_wq_add(&s->c->out, s->ctl + s->ctl_run, s->ctl_len - s->ctl_run, NULL);
    s->ctl_run = s->ctl_len;
}

int mg_h2_send_data(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd,
                    size_t length, nghttp2_data_source *src, void *user)
{
    struct mg_h2s *s = user;
    struct mg_h2stream *st = src->ptr;
    bool copy = length <= COPY_MAX;
    char *hd = ctl_room(s, 9 + (copy ? length : 0));
    if (!hd)
        return NGHTTP2_ERR_WOULDBLOCK;
    memcpy(hd, framehd, 9);
    char *to = hd + 9;
    if (!copy)
        mg_h2_ctl_commit(s);
    while (length) {
        struct mg_h2piece *p = st->out;
        size_t n = p->len < length ? p->len : length;
        if (copy) {
            memcpy(to, p->p, n);
            to += n;
        } else {
            mg_wq_add(&s->c->out, p->p, n, p->pin);
        }
        length -= n;
        st->out_bytes -= n;
        if (n < p->len) {
            /* The rest stays ours: a second piece on the same pin for what went. */
            struct mg_h2piece *sent = piece_new(s);
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
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        st->done_out = true; /* the stream's last frame is serialized */
        if (st->x_open)
            mg_h2_wake(st);
    }
    return 0;
}

ssize_t mg_h2_send_cb(nghttp2_session *ng, const uint8_t *data, size_t length, int flags,
                      void *user)
{
    struct mg_h2s *s = user;
    size_t room = CTL_SIZE - s->ctl_len;
    if (room == 0)
        return NGHTTP2_ERR_WOULDBLOCK;
    size_t n = length < room ? length : room;
    memcpy(ctl_room(s, n), data, n); /* joins the queue with its neighbours (ctl_commit) */
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
        mg_h2_drop_out(st);
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
    /* Serialized and written at the end of the loop turn, with the frames of
     * every other stream made ready in it. */
    mg_h2_dirty(s);
    return !before && st->done_out;
}

static bool drained(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    struct mg_conn *c = st->s->c;
    if (c->closing)
        return true; /* the socket's writes are cancelled with it */
    /* Arena bytes must be written before the exchange's reset frees them, a
     * stream the client reset included: DATA already in the write queue still
     * points at them, and the arena may go to the next stream. */
    return (st->done_out || st->reset_in) && (!st->arena_out || mg_wq_idle(&c->out));
}

static bool client_eof(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    return !st->spare && (st->reset_in || st->s->c->eof);
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
    if (park(st))
        return;
    if (st->ng_open && !st->end_in && !s->c->closing) { /* RFC 9113 section 8.1 */
        st->rst_ours = true;
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    }
    end_exchange(st);
    mg_h2_defer(s);
}

/* The exchange cannot finish its response (or the client went): the stream
 * is reset, never left looking complete. */
void mg_h2_close_stream(struct mg_exchange *x)
{
    struct mg_h2stream *st = of_x(x);
    struct mg_h2s *s = st->s;
    if (st->ng_open && !s->c->closing && (!st->done_out || !st->end_in)) {
        st->rst_ours = true;
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
                                  st->done_out ? NGHTTP2_NO_ERROR : NGHTTP2_INTERNAL_ERROR);
    }
    end_exchange(st);
    mg_h2_defer(s);
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
    .close = mg_h2_close_stream,
};
