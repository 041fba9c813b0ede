/*
 * The upstream HTTP/1.1 codec (see h1client.h).
 *
 * Request: the head is written from what the downstream codec parsed, in the
 * arena: the method and target (the route's prefix stripped if asked), the
 * client's end-to-end fields minus those the gateway sets or plugins edited,
 * then the gateway's own (Host when needed, X-Forwarded-*, X-Request-Id, Via),
 * the plugin edits and the framing the gateway decoded, never the client's
 * framing fields. Bodies are re-chunked when the client chunked them.
 *
 * Response: the head is scanned (http/headscan.h), copied whole into the arena
 * and parsed by llhttp; interim responses are handed up one by one; the body is decoded by
 * http/body.c, its bytes handed back pointing into the connection's read buffer.
 */
#include "upstream/h1client.h"

#include <string.h>

#include "config/config-t.h"
#include "core/log.h"
#include "http/fields.h"
#include "http/resphead.h"
#include "http/forwarded.h"
#include "http/writer.h"
#include "lua/edits.h"
#include "upstream/pool.h"

#define PUT_LIT(o, s) (memcpy((o), (s), sizeof(s) - 1), (o) += sizeof(s) - 1)
#define PUT(o, p, n)  (memcpy((o), (p), (n)), (o) += (n))

/* ------------------------------------------------------------ the request */

static void put_field(char **o, const char *name, size_t nlen, struct mg_slice value)
{
    *o = mg_http_put_field(*o, (struct mg_slice){name, nlen}, value);
}

/* X-Forwarded-For as forwarded.x_forwarded_for says: append (the client's
 * list, every line joined, then the connection's address), replace (the real
 * client address alone), off (the client's lines were copied untouched). */
static char *put_xff(char *o, const struct mg_exchange *x, enum mg_xff_mode mode)
{
    if (mode == MG_XFF_OFF)
        return o;
    PUT_LIT(o, "X-Forwarded-For: ");
    if (mode == MG_XFF_APPEND) {
        bool any;
        o = mg_forwarded_put_list(o, &x->req_hdrs, mg_forwarded_is_xff, &any);
        if (any)
            PUT_LIT(o, ", ");
        PUT(o, x->client_ip, strlen(x->client_ip));
    } else {
        const char *ip = mg_x_client_ip(x);
        PUT(o, ip, strlen(ip));
    }
    PUT_LIT(o, "\r\n");
    return o;
}

/* RFC 7239 Forwarded, when forwarded.forwarded_header: the client's elements
 * then this hop's (for = the connection's address), or with replace this
 * hop's alone (for = the real client address). */
static char *put_rfc7239(char *o, const struct mg_exchange *x, enum mg_xff_mode mode,
                         struct mg_slice host)
{
    PUT_LIT(o, "Forwarded: ");
    if (mode != MG_XFF_REPLACE) {
        bool any;
        o = mg_forwarded_put_list(o, &x->req_hdrs, mg_forwarded_is_forwarded, &any);
        if (any)
            PUT_LIT(o, ", ");
    }
    PUT_LIT(o, "for=");
    o = mg_forwarded_put_node(o, mode == MG_XFF_REPLACE ? mg_x_client_ip(x) : x->client_ip);
    if (host.len) { /* a valid Host (checked at the head): no quote or backslash in it */
        PUT_LIT(o, ";host=\"");
        PUT(o, host.p, host.len);
        *o++ = '"';
    }
    if (x->secure)
        PUT_LIT(o, ";proto=https\r\n");
    else
        PUT_LIT(o, ";proto=http\r\n");
    return o;
}

/* Room for what put_forwarded adds beyond the client's head (x->headlen
 * already bounds the client's X-Forwarded-For / Forwarded values it copies:
 * each came with its field name and CRLF). */
static size_t forwarded_size(struct mg_slice host)
{
    return 2 * MG_FORWARDED_NODE_MAX + 2 * host.len + 160;
}

static char *put_forwarded(char *o, const struct mg_exchange *x, struct mg_slice host,
                           const struct mg_lua_edit *edits)
{
    const struct mg_forwarded_conf *f = &x->rt->cfg->forwarded;
    if (!(edits && mg_lua_edits_name(edits, MG_SLICE_LIT("x-forwarded-for"))))
        o = put_xff(o, x, f->x_forwarded_for);
    if (f->forwarded_header && !(edits && mg_lua_edits_name(edits, MG_SLICE_LIT("forwarded"))))
        o = put_rfc7239(o, x, f->x_forwarded_for, host);
    if (x->secure)
        PUT_LIT(o, "X-Forwarded-Proto: https\r\n");
    else
        PUT_LIT(o, "X-Forwarded-Proto: http\r\n");
    if (host.len)
        put_field(&o, "X-Forwarded-Host", 16, host);
    return o;
}

/* deadline_header: what is left of the route deadline as this try starts (the
 * client's own value was marked hop-by-hop by the exchange). */
static char *put_deadline(char *o, const struct mg_exchange *x)
{
    const char *name = x->ups->deadline_header;
    if (!name || !x->deadline.due)
        return o;
    uint64_t now = uv_now(x->deadline.timer.loop);
    uint64_t left = x->deadline.due > now ? x->deadline.due - now : 1;
    char dec[MG_HTTP_DEC_MAX];
    size_t n = mg_http_put_dec(dec, left);
    o = mg_http_put_field(o, (struct mg_slice){name, strlen(name)}, (struct mg_slice){dec, n});
    return o;
}

static char *put_framing(char *o, const struct mg_exchange *x)
{
    if (x->req_chunked) {
        PUT_LIT(o, "Transfer-Encoding: chunked\r\n");
    } else if (x->req_has_length) {
        PUT_LIT(o, "Content-Length: ");
        o += mg_http_put_dec(o, x->req_content_length);
        PUT_LIT(o, "\r\n");
    }
    if (x->req_upgrade) {
        int up = mg_headers_find(&x->req_hdrs, MG_SLICE_LIT("upgrade"));
        PUT_LIT(o, "Connection: upgrade\r\n");
        put_field(&o, "Upgrade", 7, up >= 0 ? x->req_hdrs.v[up].value : (struct mg_slice){0});
    }
    return o;
}

/* The request target towards the upstream: the route's prefix cut if asked. */
static struct mg_slice upstream_target(const struct mg_exchange *x)
{
    if (!x->route->strip_prefix || x->prefix_len == 0)
        return mg_lua_target(x->lua_ready ? &x->lua : NULL, x->url);
    size_t cut = x->prefix_len;
    if (x->route->paths && x->path.len >= cut && x->path.p[cut - 1] == '/')
        cut--; /* keep the slash of "/api/" prefixes */
    return mg_lua_target(x->lua_ready ? &x->lua : NULL,
                         (struct mg_slice){x->url.p + cut, x->url.len - cut});
}

/* Forwarding fields the gateway writes itself (put_forwarded) are not copied:
 * X-Forwarded-For unless x_forwarded_for is off, Forwarded when it is sent. */
static bool rewritten(const struct mg_exchange *x, const struct mg_header *f)
{
    const struct mg_forwarded_conf *fc = &x->rt->cfg->forwarded;
    if (f->name.len == 15)
        return fc->x_forwarded_for != MG_XFF_OFF && mg_forwarded_is_xff(f->name);
    return f->name.len == 9 && fc->forwarded_header && mg_forwarded_is_forwarded(f->name);
}

static bool copied(const struct mg_exchange *x, uint32_t i, const struct mg_lua_edit *edits)
{
    const struct mg_header *f = &x->req_hdrs.v[i];
    return !((f->flags & MG_HDR_HOP) || (int)i == x->rid_idx || rewritten(x, f) ||
             ((int)i == x->host_idx && x->authority.len) ||
             (edits && mg_lua_edits_name(edits, f->name)));
}

static void send_head(struct mg_attempt *a)
{
    struct mg_exchange *x = a->x;
    struct mg_slice target = upstream_target(x), host = mg_x_request_host(x);
    const char *target_addr = a->target->conf->address.text;
    const struct mg_lua_edit *edits = x->lua_ready ? x->lua.req_edits : NULL;
    const char *dh = x->ups->deadline_header;
    size_t cap = x->headlen + target.len + strlen(target_addr) + forwarded_size(host) + host.len +
                 512 + mg_lua_edits_size(edits) + (dh ? strlen(dh) + MG_HTTP_DEC_MAX + 4 : 0);
    char *o = mg_arena_alloc(&x->arena, cap), *start = o;
    const char *m = llhttp_method_name((llhttp_method_t)x->method);
    PUT(o, m, strlen(m));
    *o++ = ' ';
    if (target.len == 0 || target.p[0] != '/')
        *o++ = '/';
    PUT(o, target.p, target.len);
    PUT_LIT(o, " HTTP/1.1\r\n");
    for (uint32_t i = 0; i < x->req_hdrs.n; i++)
        if (copied(x, i, edits))
            o = mg_http_put_field(o, x->req_hdrs.v[i].name, x->req_hdrs.v[i].value);
    if (x->authority.len)
        put_field(&o, "Host", 4, x->authority);
    else if (x->host_idx < 0)
        put_field(&o, "Host", 4, (struct mg_slice){target_addr, strlen(target_addr)});
    o = put_forwarded(o, x, host, edits);
    put_field(&o, "X-Request-Id", 12, (struct mg_slice){x->request_id, strlen(x->request_id)});
    o = put_deadline(o, x);
    PUT_LIT(o, "Via: 1.1 moongate\r\n");
    o = mg_lua_edits_put(o, edits);
    o = put_framing(o, x);
    PUT_LIT(o, "\r\n");
    MG_ASSERT((size_t)(o - start) <= cap);
    mg_wq_add(&a->up->out, start, (size_t)(o - start), NULL);
}

static void send_body(struct mg_attempt *a, struct mg_slice d, struct mg_rbuf *pin)
{
    if (a->x->req_chunked) {
        char head[MG_HTTP_CHUNK_HEAD_MAX];
        size_t n = mg_http_chunk_head(head, d.len);
        mg_wq_add_framed(&a->up->out, head, n, d.p, d.len, "\r\n", pin);
    } else {
        mg_wq_add(&a->up->out, d.p, d.len, pin);
    }
}

static void send_end(struct mg_attempt *a)
{
    if (a->x->req_chunked)
        mg_wq_add(&a->up->out, "0\r\n\r\n", 5, NULL);
}

static void send_raw(struct mg_attempt *a, struct mg_slice d, struct mg_rbuf *pin)
{
    mg_wq_add(&a->up->out, d.p, d.len, pin);
}

static void start(struct mg_attempt *a)
{
    struct mg_exchange *x = a->x;
    struct mg_upconn *u = a->up;
    mg_headscan_init(&a->scan, MG_MAX_RESPONSE_HEAD);
    a->headlen = 0;
    a->head_done = a->closed = a->reusable = false;
    u->requests++;
    send_head(a);
    if (x->req_done && (x->body_copy_len > 0 || x->req_chunked)) {
        /* The body was read before this try: by an earlier try (kept, as
         * may_retry checked), or whole by the idempotency phase. */
        if (x->body_copy_len > 0)
            send_body(a, (struct mg_slice){x->body_copy, x->body_copy_len}, NULL);
        send_end(a);
    }
    mg_upconn_set_reading(u, true);
    a->reading = true;
}

/* ------------------------------------------------------------ the response */

static struct mg_attempt *attempt_of(llhttp_t *p)
{
    return p->data;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    struct mg_exchange *x = attempt_of(p)->x;
    if (x->reason.p)
        x->reason.len += len;
    else
        x->reason = (struct mg_slice){at, len};
    return 0;
}

static int on_field(llhttp_t *p, const char *at, size_t len)
{
    struct mg_exchange *x = attempt_of(p)->x;
    return mg_fields_name(&x->arena, &x->resp_hdrs, at, len);
}

static int on_value(llhttp_t *p, const char *at, size_t len)
{
    return mg_fields_value(&attempt_of(p)->x->resp_hdrs, at, len);
}

static int on_value_complete(llhttp_t *p)
{
    mg_fields_value_done(&attempt_of(p)->x->resp_hdrs);
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct mg_attempt *a = attempt_of(p);
    struct mg_exchange *x = a->x;
    if (p->http_major != 1)
        return -1;
    x->status = p->status_code;
    if (!mg_http_reason_ok(x->reason)) {
        const char *own = mg_http_reason(x->status);
        x->reason = (struct mg_slice){own, strlen(own)};
    }
    x->resp_upgrade = p->upgrade;
    x->resp_has_length = (p->flags & F_CONTENT_LENGTH) != 0;
    x->resp_length = x->resp_has_length ? p->content_length : 0;
    a->keepalive = p->http_minor >= 1 ? !(p->flags & F_CONNECTION_CLOSE)
                                      : (p->flags & F_CONNECTION_KEEP_ALIVE) != 0;
    return 0;
}

/* llhttp parses heads only; bodies are body.c's. */
static const llhttp_settings_t response_settings = {
    .on_status = on_status,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_header_value_complete = on_value_complete,
    .on_headers_complete = on_headers_complete,
};

/* How the final response's body is delimited (RFC 9112 section 6.3), or false
 * when its framing fields are ambiguous or name a coding the gateway does not
 * decode (as nginx: 502, never a body passed on with its coding dropped). */
static bool body_kind(struct mg_exchange *x, enum mg_body_kind *kind)
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

static int fail_with(struct mg_slice *d, const char *why)
{
    *d = (struct mg_slice){why, strlen(why)};
    return MG_RESP_ERROR;
}

static int closed_early(struct mg_attempt *a, struct mg_slice *d)
{
    return fail_with(d, a->read_error == UV_EOF ? "upstream closed the connection"
                                                : uv_strerror(a->read_error));
}

/* What on_status and on_headers_complete set, from the fast path's reading
 * (HTTP/1.1, never an upgrade: resphead.c leaves 1xx to llhttp). */
static void took_plain_head(struct mg_attempt *a, const struct mg_resphead *rh)
{
    struct mg_exchange *x = a->x;
    x->status = rh->status;
    x->reason = rh->reason;
    if (!mg_http_reason_ok(x->reason)) {
        const char *own = mg_http_reason(x->status);
        x->reason = (struct mg_slice){own, strlen(own)};
    }
    x->resp_upgrade = false;
    x->resp_has_length = rh->has_length;
    x->resp_length = rh->has_length ? rh->length : 0;
    a->keepalive = !rh->close;
}

/* Parses the whole head the try gathered, which becomes x->resp_head: the
 * common head by http/resphead.c, anything else by llhttp. */
static int parse_head(struct mg_attempt *a, struct mg_slice *d)
{
    struct mg_exchange *x = a->x;
    x->resp_head = a->head;
    x->resp_headlen = a->headlen;
    x->resp_headcap = a->headcap;
    mg_fields_init(&x->arena, &x->resp_hdrs);
    struct mg_resphead rh;
    if (mg_resphead_parse(&x->arena, &x->resp_hdrs, x->resp_head, x->resp_headlen, &rh)) {
        took_plain_head(a, &rh); /* the common head, read as llhttp would */
    } else {
        mg_fields_init(&x->arena, &x->resp_hdrs);
        x->reason = (struct mg_slice){NULL, 0};
        llhttp_init(&a->parser, HTTP_RESPONSE, &response_settings);
        a->parser.data = a;
        llhttp_errno_t e = llhttp_execute(&a->parser, x->resp_head, x->resp_headlen);
        if (e != HPE_OK && e != HPE_PAUSED_UPGRADE) {
            const char *why = llhttp_get_error_reason(&a->parser);
            return fail_with(d, why ? why : "malformed message");
        }
    }
    if (x->status < 100) /* three digits, but no class (RFC 9110 15): 502, never relayed */
        return fail_with(d, "invalid status code");
    if (x->status >= 100 && x->status < 200 && x->status != 101) {
        /* Interim (e.g. 103): never has a body (RFC 9110 section 15.2)
         * whatever framing it claims (tests/fuzz: a 103 with Content-Length
         * carried a whole forged response). Its fields stay readable in the
         * arena until the next head is copied over them. */
        a->headlen = 0;
        mg_headers_mark_hop_by_hop(&x->resp_hdrs);
        mg_headscan_init(&a->scan, MG_MAX_RESPONSE_HEAD);
        return MG_RESP_INTERIM;
    }
    enum mg_body_kind kind;
    if (!body_kind(x, &kind))
        return fail_with(d, "invalid response framing");
    x->resp_kind = (uint8_t)kind;
    mg_body_init(&a->body, kind, x->resp_length, UINT64_MAX);
    a->head_done = true;
    return MG_RESP_HEAD;
}

static int read_head(struct mg_attempt *a, struct mg_slice *d)
{
    struct mg_exchange *x = a->x;
    struct mg_rbuf *in = &a->up->in;
    if (in->start == in->end)
        return a->closed ? closed_early(a, d) : MG_RESP_MORE;
    size_t used = 0;
    enum mg_headscan_result r =
        mg_headscan_feed(&a->scan, in->buf + in->start, in->end - in->start, &used);
    if (r >= MG_HEADSCAN_BARE_CR)
        return fail_with(d, mg_headscan_result_text(r));
    mg_arena_append(&x->arena, &a->head, &a->headlen, &a->headcap, in->buf + in->start, used,
                    MG_MAX_RESPONSE_HEAD + 4);
    in->start += used;
    if (r == MG_HEADSCAN_MORE)
        return a->closed ? closed_early(a, d) : MG_RESP_MORE;
    return parse_head(a, d);
}

static int read_response(struct mg_attempt *a, struct mg_slice *d, struct mg_rbuf **pin)
{
    if (!a->head_done)
        return read_head(a, d);
    struct mg_rbuf *in = &a->up->in;
    size_t used;
    enum mg_body_result r =
        mg_body_feed(&a->body, in->buf + in->start, in->end - in->start, &used, d);
    in->start += used;
    switch (r) {
    case MG_BODY_DATA:
        *pin = in;
        return MG_RESP_DATA;
    case MG_BODY_DONE:
        /* Extra bytes after it (an upstream answering more than it was asked)
         * make the connection unusable. */
        a->reusable = a->keepalive && a->body.kind != MG_BODY_CLOSE && in->start == in->end;
        return MG_RESP_END;
    case MG_BODY_MORE:
        if (!a->closed)
            return MG_RESP_MORE;
        if (!mg_body_eof(&a->body) || a->read_error != UV_EOF)
            return closed_early(a, d); /* a reset, or TLS without close_notify: cut */
        a->reusable = false;           /* a close-delimited body, ended by the close */
        return MG_RESP_END;
    default:
        return fail_with(d, mg_body_error(&a->body));
    }
}

static struct mg_slice read_raw(struct mg_attempt *a, struct mg_rbuf **pin)
{
    struct mg_rbuf *in = &a->up->in;
    struct mg_slice d = {in->buf + in->start, in->end - in->start};
    in->start = in->end;
    *pin = in;
    return d;
}

/* ------------------------------------------------------------ the lease */

static int acquire(struct mg_attempt *a, uint64_t connect_timeout_ms, bool *ready)
{
    int rc =
        mg_upconn_acquire(a->x->ctx, a->target, a, a->events, connect_timeout_ms, &a->up, ready);
    if (rc)
        a->up = NULL;
    return rc;
}

static int flush(struct mg_attempt *a)
{
    if (!a->up->out.out && !a->up->out.error)
        return 0;
    return mg_wq_flush(&a->up->out);
}

static uint32_t writes(struct mg_attempt *a)
{
    return a->up->out.pending;
}

static bool drained(struct mg_attempt *a)
{
    return mg_wq_idle(&a->up->out);
}

static bool has_room(struct mg_attempt *a)
{
    return mg_rbuf_has_room(&a->up->in);
}

static void set_reading(struct mg_attempt *a, bool on)
{
    a->reading = on;
    mg_upconn_set_reading(a->up, on);
}

static void set_timeout(struct mg_attempt *a, uint64_t ms)
{
    mg_upconn_set_timeout(a->up, ms);
}

static void release(struct mg_attempt *a, bool reuse)
{
    struct mg_upconn *u = a->up;
    struct mg_exchange *x = a->x;
    a->up = NULL;
    a->reading = false;
    mg_wq_discard(&u->out);
    if (reuse && a->reusable && x->req_done && !x->req_upgrade && u->tr->ops->queued(u->tr) == 0)
        mg_upconn_release(u);
    else
        mg_upconn_close(u);
}

const struct mg_upstream_ops mg_h1client_ops = {
    .acquire = acquire,
    .start = start,
    .send_body = send_body,
    .send_end = send_end,
    .send_raw = send_raw,
    .flush = flush,
    .read = read_response,
    .read_raw = read_raw,
    .writes = writes,
    .drained = drained,
    .has_room = has_room,
    .set_reading = set_reading,
    .set_timeout = set_timeout,
    .release = release,
};
