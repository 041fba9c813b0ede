/*
 * The downstream HTTP/1.x codec (see h1server.h).
 *
 * Request heads: a pre-scan (http/headscan.h) finds the end of the head and
 * refuses what Debian's llhttp 8.1.0 lets through; the head is copied into the
 * exchange's arena and parsed there in one piece by llhttp (strict, heads
 * only), so header fields are slices of the copy. The checks llhttp leaves to
 * us follow (Host, the request target, dot segments, framing).
 *
 * Bodies are decoded by http/body.c from the connection's read buffer; what is
 * handed to the exchange points into that buffer (pinned by the writes that
 * carry it on). Bytes after the end of a message wait there for the next
 * exchange: pipelining needs nothing else.
 *
 * Responses: heads are written into the arena through http/writer.c, bodies
 * queued by reference, chunk-encoded when the upstream's body has no length
 * (or, for HTTP/1.0 clients, delimited by closing the connection).
 *
 * Memory: struct mg_h1s holds the connection and its exchange in one malloc,
 * freed when the connection and the exchange are both closed (conn.h).
 */
#include "conn/h1server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config-t.h"
#include "conn/conn.h"
#include "core/log.h"
#include "http/fields.h"
#include "http/request.h"
#include "http/writer.h"
#include "loopctx.h"
#include "lua/edits.h"

struct mg_h1s {
    struct mg_conn c; /* first: a connection pointer is a session pointer */
    struct mg_exchange x;
    const struct mg_exchange_hooks *hooks;
    llhttp_t parser;     /* request heads, re-initialised per request */
    struct mg_body body; /* the request body's framing */
    bool head_started;   /* the current request's head timer and scan are set */
    bool chunk_out;      /* the response body is chunk-encoded towards the client */
    bool flushed;        /* response bytes reached the transport: no taking back */
    uint8_t interims;    /* 1xx responses passed on for the current request */
};

/* 1xx responses passed on per request: past it they are dropped, so an
 * upstream sending them without end cannot grow the arena without end. */
#define MAX_INTERIMS 8

static struct mg_h1s *of_x(struct mg_exchange *x)
{
    return (struct mg_h1s *)((char *)x - offsetof(struct mg_h1s, x));
}

static struct mg_h1s *of_conn(struct mg_conn *c)
{
    return (struct mg_h1s *)c;
}

static const struct mg_client_conf *client_conf(struct mg_h1s *s)
{
    return &s->c.ctx->rt->cfg->client;
}

/* Queues bytes for the client: arena, static or record memory (pin NULL), or
 * an upstream's read buffer. */
static void put(struct mg_h1s *s, const void *p, size_t len, struct mg_rbuf *pin)
{
    s->x.bytes_out += len;
    mg_wq_add(&s->c.out, p, len, pin);
}

/* ------------------------------------------------------------ request heads */

static struct mg_exchange *x_of(llhttp_t *p)
{
    return &((struct mg_h1s *)p->data)->x;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct mg_exchange *x = x_of(p);
    if (x->url.p)
        x->url.len += len;
    else
        x->url = (struct mg_slice){at, len};
    return 0;
}

static int on_field(llhttp_t *p, const char *at, size_t len)
{
    struct mg_exchange *x = x_of(p);
    return mg_fields_name(&x->arena, &x->req_hdrs, at, len);
}

static int on_value(llhttp_t *p, const char *at, size_t len)
{
    return mg_fields_value(&x_of(p)->req_hdrs, at, len);
}

static int on_value_complete(llhttp_t *p)
{
    mg_fields_value_done(&x_of(p)->req_hdrs);
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct mg_exchange *x = x_of(p);
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

/* llhttp parses request heads only: bodies are body.c's. */
static const llhttp_settings_t request_settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_header_value_complete = on_value_complete,
    .on_headers_complete = on_headers_complete,
};

/* How the request body is delimited (RFC 9112 section 6.3); sets up its
 * decoder. The framing fields are never forwarded: the upstream codec writes
 * its own from what the decoder delivers. */
static enum mg_error request_framing(struct mg_h1s *s)
{
    struct mg_exchange *x = &s->x;
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
        x->req_chunked = true;
        mg_body_init(&s->body, MG_BODY_CHUNKED, 0, limit);
        break;
    case MG_FRAMING_LENGTH:
        if (x->req_content_length > limit)
            return MG_ERR_BODY_TOO_LARGE;
        mg_body_init(&s->body, MG_BODY_LENGTH, x->req_content_length, limit);
        break;
    default:
        mg_body_init(&s->body, MG_BODY_NONE, 0, limit);
        break;
    }
    x->req_done = mg_body_done(&s->body);
    return MG_ERR_NONE;
}

/* Finds the fields the gateway acts on. */
static enum mg_error find_fields(struct mg_exchange *x)
{
    x->host_idx = x->rid_idx = -1;
    for (uint32_t i = 0; i < x->req_hdrs.n; i++) {
        /* Field names need no check here: llhttp's strict mode rejects non-token
         * bytes, and the head scan rejects the whitespace llhttp would allow. */
        struct mg_header *f = &x->req_hdrs.v[i];
        switch (f->name.len) { /* length first: most fields are none of these */
        case 4:
            if (MG_NAME_IS(f->name, "host")) {
                if (x->host_idx >= 0)
                    return MG_ERR_BAD_REQUEST; /* RFC 9112 section 3.2: exactly one Host */
                x->host_idx = (int)i;
            }
            break;
        case 6:
            if (MG_NAME_IS(f->name, "expect") &&
                mg_slice_ieq(f->value, MG_SLICE_LIT("100-continue"))) {
                x->req_expect_continue = true;
                f->flags |= MG_HDR_HOP; /* the gateway answers it itself */
            }
            break;
        case 12:
            if (MG_NAME_IS(f->name, "x-request-id"))
                x->rid_idx = (int)i;
            break;
        case 16:
        case 17:
            /* Set by the gateway: a client's value is replaced, never passed on. */
            if (MG_NAME_IS(f->name, "x-forwarded-host") || MG_NAME_IS(f->name, "x-forwarded-proto"))
                f->flags |= MG_HDR_HOP;
            break;
        }
        if (mg_http_mimics_own_field(f->name))
            f->flags |= MG_HDR_HOP;
    }
    return MG_ERR_NONE;
}

/* An upgrade to HTTP/2 ("h2c", or "h2"; RFC 9113 section 3.1 deprecates it)
 * is not supported: passed on to an upstream that accepts it, it would turn
 * the client's connection into a raw tunnel past every route and plugin. As
 * HAProxy does, the request goes on as a plain one, its Upgrade dropped
 * (hop-by-hop, as HTTP2-Settings, which Connection names). */
static bool upgrade_to_h2(const struct mg_headers *h)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (MG_NAME_IS(h->v[i].name, "upgrade") &&
            (mg_token_list_has(h->v[i].value, MG_SLICE_LIT("h2c")) ||
             mg_token_list_has(h->v[i].value, MG_SLICE_LIT("h2"))))
            return true;
    return false;
}

/* The checks llhttp leaves to us, on a parsed head. */
static enum mg_error inspect_request(struct mg_h1s *s)
{
    struct mg_exchange *x = &s->x;
    enum mg_error err = find_fields(x);
    if (err)
        return err;
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
    if ((err = request_framing(s)))
        return err;
    mg_headers_mark_hop_by_hop(&x->req_hdrs);
    if (x->req_upgrade && upgrade_to_h2(&x->req_hdrs))
        x->req_upgrade = false;
    /* A field the client listed in Connection is gone, even one the gateway extends. */
    if (x->rid_idx >= 0 && (x->req_hdrs.v[x->rid_idx].flags & MG_HDR_HOP))
        x->rid_idx = -1;
    return MG_ERR_NONE;
}

static enum mg_error parse_request_head(struct mg_h1s *s)
{
    struct mg_exchange *x = &s->x;
    llhttp_init(&s->parser, HTTP_REQUEST, &request_settings);
    s->parser.data = s;
    mg_fields_init(&x->arena, &x->req_hdrs);
    mg_head_te_tabs(x->head, x->headlen);
    llhttp_errno_t e = llhttp_execute(&s->parser, x->head, x->headlen);
    if (e != HPE_OK && e != HPE_PAUSED_UPGRADE) {
        if (x->req_hdrs.n == MG_MAX_FIELDS)
            return MG_ERR_HEADER_TOO_LARGE;
        const char *why = llhttp_get_error_reason(&s->parser);
        mg_debug("bad request head: %s", why ? why : "malformed message");
        return MG_ERR_BAD_REQUEST;
    }
    return inspect_request(s);
}

/* The first bytes of a request: the head's timer and scan start. */
static void begin_head(struct mg_h1s *s)
{
    struct mg_exchange *x = &s->x;
    s->head_started = true;
    x->client = s->c.tr; /* TLS may have started after accept (behind a PROXY header) */
    mg_conn_set_active(&s->c, true);
    mg_headscan_init(&x->scan, x->rt->cfg->client.max_header_size);
    mg_deadline_set(&s->c.timer, x->rt->cfg->client.header_timeout_ms);
}

static int read_head(struct mg_exchange *x)
{
    struct mg_h1s *s = of_x(x);
    struct mg_rbuf *in = &s->c.in;
    if (!s->head_started)
        begin_head(s);
    if (in->start == in->end)
        return MG_AGAIN;
    size_t used = 0;
    enum mg_headscan_result r =
        mg_headscan_feed(&x->scan, in->buf + in->start, in->end - in->start, &used);
    if (r >= MG_HEADSCAN_BARE_CR) {
        mg_debug("rejecting request: %s", mg_headscan_result_text(r));
        x->close_after = true;
        x->error = r == MG_HEADSCAN_TOO_LARGE ? MG_ERR_HEADER_TOO_LARGE : MG_ERR_BAD_REQUEST;
        return MG_NEXT;
    }
    if (mg_arena_append(&x->arena, &x->head, &x->headlen, &x->headcap, in->buf + in->start, used,
                        x->rt->cfg->client.max_header_size + 4) < 0) {
        x->close_after = true;
        x->error = MG_ERR_HEADER_TOO_LARGE;
        return MG_NEXT;
    }
    in->start += used;
    if (r == MG_HEADSCAN_MORE)
        return MG_AGAIN;
    x->error = parse_request_head(s);
    if (x->error)
        x->close_after = true;
    else
        mg_deadline_set(&s->c.timer, x->req_done ? 0 : x->rt->cfg->client.body_timeout_ms);
    return MG_NEXT;
}

/* ------------------------------------------------------------ request bodies */

static bool has_request(struct mg_exchange *x)
{
    struct mg_rbuf *in = &of_x(x)->c.in;
    return in->start < in->end;
}

static enum mg_body_result read_body(struct mg_exchange *x, struct mg_slice *d,
                                     struct mg_rbuf **pin)
{
    struct mg_h1s *s = of_x(x);
    struct mg_rbuf *in = &s->c.in;
    size_t used;
    enum mg_body_result r =
        mg_body_feed(&s->body, in->buf + in->start, in->end - in->start, &used, d);
    in->start += used;
    if (r == MG_BODY_DATA)
        *pin = in;
    else if (r == MG_BODY_DONE)
        mg_deadline_set(&s->c.timer, 0);
    return r;
}

static struct mg_slice read_raw(struct mg_exchange *x, struct mg_rbuf **pin)
{
    struct mg_rbuf *in = &of_x(x)->c.in;
    struct mg_slice d = {in->buf + in->start, in->end - in->start};
    in->start = in->end;
    *pin = in;
    return d;
}

/* ------------------------------------------------------------ responses */

static void send_continue(struct mg_exchange *x)
{
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    put(of_x(x), line, sizeof line - 1, NULL);
}

/* An informational response (103 Early Hints, 102 Processing) before the
 * final one: HTTP/1.1 clients get it with its end-to-end fields (RFC 9110
 * section 15.2); HTTP/1.0 ones know no 1xx and get none (section 15.2 too). */
static void send_interim(struct mg_exchange *x)
{
    struct mg_h1s *s = of_x(x);
    if (x->http_minor == 0 || s->interims == MAX_INTERIMS)
        return;
    s->interims++;
    size_t cap = MG_HTTP_STATUS_LINE_SIZE(x->reason.len) + 2;
    for (uint32_t i = 0; i < x->resp_hdrs.n; i++)
        cap += MG_HTTP_FIELD_SIZE(x->resp_hdrs.v[i].name.len, x->resp_hdrs.v[i].value.len);
    char *o = mg_arena_alloc(&x->arena, cap), *start = o;
    o = mg_http_put_status_line(o, x->status, x->reason);
    for (uint32_t i = 0; i < x->resp_hdrs.n; i++) {
        const struct mg_header *f = &x->resp_hdrs.v[i];
        /* A 1xx has no body: a Content-Length on one (RFC 9110 section 8.6
         * forbids it) must not reach a client that might believe it. */
        if (!(f->flags & MG_HDR_HOP) && !MG_NAME_IS(f->name, "content-length"))
            o = mg_http_put_field(o, f->name, f->value);
    }
    *o++ = '\r';
    *o++ = '\n';
    MG_ASSERT((size_t)(o - start) <= cap);
    put(s, start, (size_t)(o - start), NULL);
}

/* The proxied response head. The body framing towards the client is the
 * gateway's own, from how the upstream's body is delimited: a length is
 * passed on as a length, anything else is chunked (or, for an HTTP/1.0
 * client, delimited by the close). */
static void send_head(struct mg_exchange *x, bool switching)
{
    struct mg_h1s *s = of_x(x);
    enum mg_body_kind kind = (enum mg_body_kind)x->resp_kind;
    if (kind == MG_BODY_CHUNKED || kind == MG_BODY_CLOSE || x->filtering) { /* P.body_filter */
        if (x->http_minor >= 1)
            s->chunk_out = true;
        else
            x->close_after = true; /* HTTP/1.0: the close delimits the body */
    }
    /* HEAD and 304 answers keep the length of the body they stand for. */
    bool send_length =
        !s->chunk_out && !switching && x->resp_has_length && x->status != 204 && !x->filtering;
    if (!x->req_keepalive || x->ctx->draining || (x->req_upgrade && !switching))
        x->close_after = true;
    if (switching)
        mg_deadline_set(&s->c.timer, 0); /* a tunnel has no client timeouts */
    const struct mg_lua_edit *edits = x->lua_ready ? x->lua.resp_edits : NULL;
    struct mg_http_tail tail = {
        .via = true,
        .request_id = mg_headers_find(&x->resp_hdrs, MG_SLICE_LIT("x-request-id")) >= 0
                          ? NULL
                          : x->request_id,
        .framing = switching      ? MG_HTTP_FRAME_NONE
                   : s->chunk_out ? MG_HTTP_FRAME_CHUNKED
                   : send_length  ? MG_HTTP_FRAME_LENGTH
                                  : MG_HTTP_FRAME_NONE,
        .length = x->resp_length,
        .conn = switching ? MG_HTTP_CONN_UPGRADE : mg_http_conn_for(x->close_after, x->http_minor),
    };
    if (switching) {
        int up = mg_headers_find(&x->resp_hdrs, MG_SLICE_LIT("upgrade"));
        tail.upgrade = up >= 0 ? x->resp_hdrs.v[up].value : (struct mg_slice){NULL, 0};
    }
    size_t cap = MG_HTTP_STATUS_LINE_SIZE(x->reason.len) + x->resp_headlen +
                 mg_lua_edits_size(edits) + mg_http_tail_max(&tail);
    char *o = mg_arena_alloc(&x->arena, cap), *start = o;
    o = mg_http_put_status_line(o, x->status, x->reason);
    for (uint32_t i = 0; i < x->resp_hdrs.n; i++) {
        struct mg_header *f = &x->resp_hdrs.v[i];
        if ((f->flags & MG_HDR_HOP) || (edits && mg_lua_edits_name(edits, f->name)))
            continue;
        o = mg_http_put_field(o, f->name, f->value);
    }
    o = mg_lua_edits_put(o, edits);
    o = mg_http_put_tail(o, &tail);
    MG_ASSERT((size_t)(o - start) <= cap);
    put(s, start, (size_t)(o - start), NULL);
}

static void send_body(struct mg_exchange *x, struct mg_slice d, struct mg_rbuf *pin)
{
    struct mg_h1s *s = of_x(x);
    if (s->chunk_out) {
        char head[MG_HTTP_CHUNK_HEAD_MAX];
        size_t n = mg_http_chunk_head(head, d.len);
        x->bytes_out += n + d.len + 2;
        mg_wq_add_framed(&s->c.out, head, n, d.p, d.len, "\r\n", pin);
    } else {
        put(s, d.p, d.len, pin);
    }
}

static void send_end(struct mg_exchange *x)
{
    struct mg_h1s *s = of_x(x);
    if (s->chunk_out)
        put(s, "0\r\n\r\n", 5, NULL);
}

static void send_raw(struct mg_exchange *x, struct mg_slice d, struct mg_rbuf *pin)
{
    put(of_x(x), d.p, d.len, pin);
}

static void send_error(struct mg_exchange *x, enum mg_error err)
{
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
    if (!(x->head_parsed && x->method == HTTP_HEAD)) {
        memcpy(o, body, (size_t)blen);
        o += blen;
    }
    MG_ASSERT((size_t)(o - start) <= cap);
    put(of_x(x), start, (size_t)(o - start), NULL);
}

/* A whole response the gateway makes from fields and a body (plugin-made or
 * replayed): X-Request-Id added unless a field sets it, the body by reference. */
static void send_response(struct mg_exchange *x, int status, const struct mg_header *fields,
                          uint32_t n, struct mg_slice body, bool via)
{
    bool bodyless = status < 200 || status == 204 || status == 304;
    bool own_id = false;
    size_t cap = MG_HTTP_STATUS_LINE_SIZE(MG_HTTP_REASON_MAX);
    for (uint32_t i = 0; i < n; i++) {
        cap += MG_HTTP_FIELD_SIZE(fields[i].name.len, fields[i].value.len);
        own_id |= MG_NAME_IS(fields[i].name, "x-request-id");
    }
    struct mg_http_tail tail = {
        .via = via,
        .request_id = own_id ? NULL : x->request_id,
        .framing = bodyless ? MG_HTTP_FRAME_NONE : MG_HTTP_FRAME_LENGTH,
        .length = body.len,
        .conn = mg_http_conn_for(x->close_after, x->http_minor),
    };
    cap += mg_http_tail_max(&tail);
    char *o = mg_arena_alloc(&x->arena, cap), *start = o;
    o = mg_http_put_status(o, status);
    for (uint32_t i = 0; i < n; i++)
        o = mg_http_put_field(o, fields[i].name, fields[i].value);
    o = mg_http_put_tail(o, &tail);
    MG_ASSERT((size_t)(o - start) <= cap);
    struct mg_h1s *s = of_x(x);
    put(s, start, (size_t)(o - start), NULL);
    if (!bodyless && x->method != HTTP_HEAD)
        put(s, body.p, body.len, NULL);
}

static bool unsend(struct mg_exchange *x)
{
    struct mg_h1s *s = of_x(x);
    if (s->flushed)
        return false;
    x->bytes_out -= mg_wq_discard(&s->c.out);
    s->chunk_out = false;
    return true;
}

static bool flush(struct mg_exchange *x)
{
    struct mg_h1s *s = of_x(x);
    if (s->c.out.out && x->resp_started)
        s->flushed = true;
    return mg_conn_flush(&s->c);
}

static bool drained(struct mg_exchange *x)
{
    return mg_wq_idle(&of_x(x)->c.out);
}

static bool client_eof(struct mg_exchange *x)
{
    return of_x(x)->c.eof;
}

static bool unpinned(struct mg_exchange *x)
{
    return of_x(x)->c.in.pins == 0;
}

static void update_reading(struct mg_exchange *x)
{
    mg_conn_update_reading(&of_x(x)->c, true);
}

/* The exchange ended and was reset: keep-alive until the next request. */
static void idle(struct mg_exchange *x)
{
    struct mg_h1s *s = of_x(x);
    s->head_started = s->chunk_out = s->flushed = false;
    s->interims = 0;
    mg_conn_set_active(&s->c, false);
    mg_deadline_set(&s->c.timer, mg_conn_keepalive_ms(&s->c, client_conf(s)->keepalive_timeout_ms));
    if (s->c.in.start == s->c.in.end && s->c.in.pins == 0 && s->c.in.buf) {
        /* Idle keep-alive connections hold no buffer: 10k of them stay cheap. */
        mg_conn_shed(&s->c);
        mg_arena_shed(&x->arena);
    }
}

static void close_conn(struct mg_exchange *x)
{
    mg_conn_close(&of_x(x)->c);
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
    .close = close_conn,
};

/* ------------------------------------------------------------ the connection */

static void on_read(struct mg_conn *c)
{
    struct mg_h1s *s = of_conn(c);
    struct mg_exchange *x = &s->x;
    /* Body bytes arriving restart the body timeout (a gap between them is what
     * it bounds). */
    if (!c->eof && !x->req_done &&
        (x->state == MG_X_BUFFER || x->state == MG_X_QUEUED || x->state == MG_X_CONNECT ||
         x->state == MG_X_BACKOFF || x->state == MG_X_FORWARD))
        mg_deadline_set(&c->timer, x->rt->cfg->client.body_timeout_ms);
    s->hooks->event(x, MG_XEV_RUN);
}

static void on_written(struct mg_conn *c, int status)
{
    (void)status;
    struct mg_h1s *s = of_conn(c);
    s->hooks->event(&s->x, MG_XEV_RUN);
}

static void on_unpinned(struct mg_conn *c)
{
    struct mg_h1s *s = of_conn(c);
    s->hooks->event(&s->x, MG_XEV_RUN);
}

static void on_timer(struct mg_conn *c)
{
    struct mg_h1s *s = of_conn(c);
    if (s->x.state == MG_X_IDLE) {
        if (c->reading && mg_conn_unread(c)) {
            /* The next request came just as the wait ran out: it is read in
             * this loop turn and answered (a close now would reset it). */
            mg_deadline_set(&c->timer, client_conf(s)->header_timeout_ms);
            return;
        }
        mg_conn_close(c); /* keep-alive (or first byte) timeout: nothing to answer */
        return;
    }
    s->hooks->event(&s->x, MG_XEV_CLIENT_TIMEOUT);
}

static void on_close(struct mg_conn *c)
{
    struct mg_h1s *s = of_conn(c);
    s->hooks->close(&s->x);
}

static void on_exchange_closed(struct mg_exchange *x)
{
    mg_conn_handle_closed(&of_x(x)->c);
}

static void on_free(struct mg_conn *c)
{
    struct mg_h1s *s = of_conn(c);
    s->hooks->destroy(&s->x);
    free(s);
}

static bool conn_idle(struct mg_conn *c)
{
    struct mg_h1s *s = of_conn(c);
    return s->x.state == MG_X_IDLE && c->in.start == c->in.end;
}

static void on_drain_timeout(struct mg_conn *c)
{
    struct mg_h1s *s = of_conn(c);
    s->hooks->event(&s->x, MG_XEV_DRAIN_TIMEOUT);
}

static const struct mg_conn_ops conn_ops = {
    .on_read = on_read,
    .on_written = on_written,
    .on_unpinned = on_unpinned,
    .on_timer = on_timer,
    .on_close = on_close,
    .on_free = on_free,
    .idle = conn_idle,
    .on_drain_timeout = on_drain_timeout,
};

struct mg_conn *mg_h1s_accept(struct mg_loopctx *ctx, int fd, const struct mg_listen_conf *lc,
                              const struct mg_exchange_hooks *hooks)
{
    struct mg_h1s *s = calloc(1, sizeof *s);
    if (!s)
        mg_fatal("out of memory (client connection)");
    s->hooks = hooks;
    hooks->init(&s->x, ctx, &down_ops, s->c.client_ip, on_exchange_closed);
    s->c.handles_open = 1; /* the exchange's timers, until on_exchange_closed */
    if (mg_conn_accept(&s->c, ctx, fd, lc, &conn_ops) < 0)
        return NULL; /* closing: on_free follows */
    s->x.secure = mg_conn_secure(&s->c);
    s->x.client = s->c.tr;
    mg_deadline_set(&s->c.timer, client_conf(s)->header_timeout_ms);
    mg_conn_update_reading(&s->c, true);
    return &s->c;
}
