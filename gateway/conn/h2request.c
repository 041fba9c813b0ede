/*
 * HTTP/2 request translation (RFC 9113 section 8; types in h2server-t.h):
 * the header callback gathers each stream's request head (pseudo-headers,
 * cookie crumbs joined, fields into the exchange's arena), and
 * mg_h2_inspect checks the complete head and finds the fields the gateway
 * acts on, as the HTTP/1 codec does for its requests.
 */
#include <nghttp2/nghttp2.h>
#include <string.h>

#include "config/config-t.h"
#include "http/fields.h"
#include "http/method.h"
#include "http/request.h"
#include "conn/h2server-t.h"

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

int mg_h2_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                    size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                    void *user)
{
    struct mg_h2s *s = user;
    struct mg_h2stream *st = s->hdr_st;
    if (!st || st->id != frame->hd.stream_id)
        st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
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
    if (namelen && name[0] == ':') {
        /* nghttp2 let only these four through, each once, names lower case. */
        struct mg_slice *to = NULL;
        switch (namelen) {
        case 5:
            to = &st->path;
            break;
        case 7:
            /* The method is kept as its number, the scheme not at all (nghttp2
             * checked it; the listener says what the connection is). An
             * unknown or RTSP-only name stays 0: refused in mg_h2_inspect
             * before anything names it with llhttp_method_name. */
            if (name[1] == 'm')
                st->method_no = mg_http_method((const char *)value, valuelen) + 1;
            return 0;
        case 10:
            to = &x->authority;
            break;
        default:
            return 0;
        }
        *to = (struct mg_slice){copy(x, value, valuelen), valuelen};
        return 0;
    }
    /* RFC 9113 section 8.2.3: cookie crumbs joined by "; " (names are lower
     * case: nghttp2 refused any other). */
    if (namelen == 6 && memcmp(name, "cookie", 6) == 0) {
        if (st->cookielen && mg_arena_append(&x->arena, &st->cookie, &st->cookielen, &st->cookiecap,
                                             "; ", 2, SIZE_MAX) < 0)
            return 0;
        mg_arena_append(&x->arena, &st->cookie, &st->cookielen, &st->cookiecap, (const char *)value,
                        valuelen, SIZE_MAX);
        return 0;
    }
    char *o = mg_arena_alloc(&x->arena, namelen + valuelen + 2); /* name\0value\0 */
    memcpy(o, name, namelen);
    o[namelen] = '\0';
    memcpy(o + namelen + 1, value, valuelen);
    o[namelen + 1 + valuelen] = '\0';
    struct mg_slice nn = {o, namelen};
    struct mg_slice vv = {o + namelen + 1, valuelen};
    if (add_field(x, nn, vv) < 0)
        x->error = MG_ERR_HEADER_TOO_LARGE;
    return 0;
}

static void content_length(struct mg_exchange *x, struct mg_header *f)
{
    f->flags |= MG_HDR_HOP; /* the gateway writes its own framing */
    uint64_t v = 0;
    for (size_t k = 0; k < f->value.len; k++)
        v = v * 10 + (uint64_t)(f->value.p[k] - '0'); /* digits: nghttp2 checked */
    x->req_has_length = true;
    x->req_content_length = v;
}

/* The fields the gateway acts on, as the HTTP/1 codec finds them, and the
 * hop-by-hop ones (mg_headers_mark_hop_by_hop's fixed set: nghttp2 already
 * refused a request with a connection-specific field or a TE other than
 * "trailers", so no Connection field names others). Dispatched on length:
 * most names are none of these. Returns whether a Connection field came
 * anyway (then the general marking runs). */
static bool find_fields(struct mg_exchange *x)
{
    bool connection = false;
    x->host_idx = x->rid_idx = -1;
    for (uint32_t i = 0; i < x->req_hdrs.n; i++) {
        struct mg_header *f = &x->req_hdrs.v[i];
        struct mg_slice n = f->name;
        switch (n.len) {
        case 2:
            if (MG_NAME_IS(n, "te"))
                f->flags |= MG_HDR_HOP;
            break;
        case 4:
            if (MG_NAME_IS(n, "host"))
                x->host_idx = (int)i;
            break;
        case 6:
            if (MG_NAME_IS(n, "expect")) {
                x->req_expect_continue = mg_slice_ieq(f->value, MG_SLICE_LIT("100-continue"));
                f->flags |= MG_HDR_HOP;
            }
            break;
        case 7:
            if (MG_NAME_IS(n, "trailer") || MG_NAME_IS(n, "upgrade"))
                f->flags |= MG_HDR_HOP;
            break;
        case 10:
            if (MG_NAME_IS(n, "connection") || MG_NAME_IS(n, "keep-alive")) {
                f->flags |= MG_HDR_HOP;
                connection = true;
            }
            break;
        case 12:
            if (MG_NAME_IS(n, "x-request-id"))
                x->rid_idx = (int)i;
            break;
        case 14:
            if (MG_NAME_IS(n, "content-length"))
                content_length(x, f);
            break;
        case 16:
            if (MG_NAME_IS(n, "x-forwarded-host") || MG_NAME_IS(n, "proxy-connection"))
                f->flags |= MG_HDR_HOP;
            break;
        case 17:
            if (MG_NAME_IS(n, "x-forwarded-proto") || MG_NAME_IS(n, "transfer-encoding"))
                f->flags |= MG_HDR_HOP;
            break;
        default:
            break;
        }
        if (mg_http_mimics_own_field(n))
            f->flags |= MG_HDR_HOP;
    }
    return connection;
}

enum mg_error mg_h2_inspect(struct mg_h2stream *st)
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
    bool connection = find_fields(x);
    if (x->authority.len && !mg_http_host_valid(x->authority))
        return MG_ERR_BAD_REQUEST;
    if (!x->authority.len &&
        (x->host_idx < 0 || !mg_http_host_valid(x->req_hdrs.v[x->host_idx].value)))
        return MG_ERR_BAD_REQUEST;
    /* Origin form only, ASCII, no fragment (RFC 9110 section 7.1: routes would
     * match "/admin" while the upstream may read "/admin#x"), no dot segment. */
    if (mg_http_path_fault(x->url, false) != MG_TARGET_OK)
        return MG_ERR_BAD_REQUEST;
    const char *q = memchr(x->url.p, '?', x->url.len);
    x->path = (struct mg_slice){x->url.p, q ? (size_t)(q - x->url.p) : x->url.len};
    if (connection)
        mg_headers_mark_hop_by_hop(&x->req_hdrs);
    if (x->rid_idx >= 0 && (x->req_hdrs.v[x->rid_idx].flags & MG_HDR_HOP))
        x->rid_idx = -1;
    if (x->req_has_length && x->req_content_length > x->rt->cfg->client.max_body_size)
        return MG_ERR_BODY_TOO_LARGE;
    return MG_ERR_NONE;
}
