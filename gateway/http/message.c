/*
 * Header field helpers (see message.h). Everything here works on slices and
 * allocates nothing.
 */
#include "http/message.h"

#include <string.h>

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

bool mg_slice_ieq(struct mg_slice a, struct mg_slice b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++)
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i]))
            return false;
    return true;
}

int mg_headers_find(const struct mg_headers *h, struct mg_slice name)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (h->v[i].name.len == name.len && mg_slice_ieq(h->v[i].name, name))
            return (int)i;
    return -1;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

bool mg_token_list_has(struct mg_slice value, struct mg_slice token)
{
    size_t i = 0;
    while (i < value.len) {
        while (i < value.len && (is_ows(value.p[i]) || value.p[i] == ','))
            i++;
        size_t start = i;
        while (i < value.len && value.p[i] != ',')
            i++;
        size_t end = i;
        while (end > start && is_ows(value.p[end - 1]))
            end--;
        if (end > start && mg_slice_ieq((struct mg_slice){value.p + start, end - start}, token))
            return true;
    }
    return false;
}

/* RFC 9110 section 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" /
 * "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA. */
#define T4(a, b, c, d) a, b, c, d
const bool mg_http_tchar[256] = {
    /* 0x00-0x1f: CTLs */
    T4(0, 0, 0, 0), T4(0, 0, 0, 0), T4(0, 0, 0, 0), T4(0, 0, 0, 0), T4(0, 0, 0, 0), T4(0, 0, 0, 0),
    T4(0, 0, 0, 0), T4(0, 0, 0, 0),
    /* SP ! " # $ % & ' ( ) * + , - . / */
    T4(0, 1, 0, 1), T4(1, 1, 1, 1), T4(0, 0, 1, 1), T4(0, 1, 1, 0),
    /* 0-9 : ; < = > ? */
    T4(1, 1, 1, 1), T4(1, 1, 1, 1), T4(1, 1, 0, 0), T4(0, 0, 0, 0),
    /* @ A-O */
    T4(0, 1, 1, 1), T4(1, 1, 1, 1), T4(1, 1, 1, 1), T4(1, 1, 1, 1),
    /* P-Z [ \ ] ^ _ */
    T4(1, 1, 1, 1), T4(1, 1, 1, 1), T4(1, 1, 1, 0), T4(0, 0, 1, 1),
    /* ` a-o */
    T4(1, 1, 1, 1), T4(1, 1, 1, 1), T4(1, 1, 1, 1), T4(1, 1, 1, 1),
    /* p-z { | } ~ DEL */
    T4(1, 1, 1, 1), T4(1, 1, 1, 1), T4(1, 1, 1, 0), T4(1, 0, 1, 0),
    /* 0x80-0xff: not in tokens */
};
#undef T4

bool mg_field_name_valid(struct mg_slice name)
{
    if (name.len == 0)
        return false;
    for (size_t i = 0; i < name.len; i++)
        if (!mg_http_tchar[(unsigned char)name.p[i]])
            return false;
    return true;
}

bool mg_http_fixed_hop_by_hop(struct mg_slice name)
{
    /* Dispatch on length first: most fields are none of these, and say so in one
     * comparison instead of seven. */
    switch (name.len) {
    case 2:
        return MG_NAME_IS(name, "te");
    case 7:
        return MG_NAME_IS(name, "trailer") || MG_NAME_IS(name, "upgrade");
    case 10:
        return MG_NAME_IS(name, "connection") || MG_NAME_IS(name, "keep-alive");
    case 16:
        return MG_NAME_IS(name, "proxy-connection");
    case 17:
        return MG_NAME_IS(name, "transfer-encoding");
    default:
        return false;
    }
}

/* name == lit (lower case, dashes) when case and '_' for '-' are alike, with
 * at least one '_' in name. */
static bool cgi_alias(struct mg_slice name, const char *lit)
{
    bool under = false;
    for (size_t i = 0; i < name.len; i++) {
        unsigned char c = (unsigned char)name.p[i];
        under |= c == '_';
        if ((c == '_' ? '-' : (c | 0x20)) != (unsigned char)lit[i])
            return false;
    }
    return under;
}

bool mg_http_mimics_own_field(struct mg_slice name)
{
    if (name.len < 12 || (name.p[0] | 0x20) != 'x')
        return false;
    switch (name.len) {
    case 12:
        return cgi_alias(name, "x-request-id");
    case 15:
        return cgi_alias(name, "x-forwarded-for");
    case 16:
        return cgi_alias(name, "x-forwarded-host");
    case 17:
        return cgi_alias(name, "x-forwarded-proto");
    default:
        return false;
    }
}

/* Does the Connection value name anything beyond the usual options, whose
 * namesakes (Keep-Alive, Upgrade) are hop-by-hop anyway? */
static bool names_other_fields(struct mg_slice list)
{
    size_t i = 0;
    while (i < list.len) {
        while (i < list.len && (list.p[i] == ' ' || list.p[i] == '\t' || list.p[i] == ','))
            i++;
        size_t start = i;
        while (i < list.len && list.p[i] != ',' && list.p[i] != ' ' && list.p[i] != '\t')
            i++;
        /* MG_NAME_IS is exact here too: a value holds no CR (the head scan
         * refuses a bare one), the only byte besides '-' that ORs to '-'. */
        struct mg_slice tok = {list.p + start, i - start};
        if (tok.len && !MG_NAME_IS(tok, "keep-alive") && !MG_NAME_IS(tok, "close") &&
            !MG_NAME_IS(tok, "upgrade"))
            return true;
    }
    return false;
}

/* Fields that framing or routing needs are never removed because Connection
 * names them: "Connection: Content-Length" would otherwise strip the length while
 * the body still follows (a request smuggled inside the body), and
 * "Connection: Host" would strip the name the route was chosen by. */
static bool nominable(struct mg_slice name)
{
    return !MG_NAME_IS(name, "host") && !MG_NAME_IS(name, "content-length");
}

static void mark_named_by(struct mg_headers *h, struct mg_slice list)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (mg_token_list_has(list, h->v[i].name) && nominable(h->v[i].name))
            h->v[i].flags |= MG_HDR_HOP;
}

void mg_headers_mark_hop_by_hop(struct mg_headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (!mg_http_fixed_hop_by_hop(h->v[i].name))
            continue;
        h->v[i].flags |= MG_HDR_HOP;
        if (MG_NAME_IS(h->v[i].name, "connection") && names_other_fields(h->v[i].value))
            mark_named_by(h, h->v[i].value);
    }
}

/* One Transfer-Encoding value's codings, in order, into the running verdict. */
static void read_codings(struct mg_slice v, bool *bad, bool *chunked, bool *chunked_last,
                         bool *other)
{
    size_t i = 0;
    do {
        while (i < v.len && is_ows(v.p[i]))
            i++;
        size_t start = i;
        while (i < v.len && v.p[i] != ',')
            i++;
        size_t end = i;
        while (end > start && is_ows(v.p[end - 1]))
            end--;
        struct mg_slice coding = {v.p + start, end - start};
        if (coding.len == 0 || (*chunked && *chunked_last)) {
            *bad = true; /* an empty coding, or anything after chunked */
        } else if (mg_slice_ieq(coding, MG_SLICE_LIT("chunked"))) {
            *chunked = *chunked_last = true;
        } else {
            *other = true;
            *chunked_last = false;
        }
    } while (i++ < v.len);
}

enum mg_framing mg_headers_framing(struct mg_headers *h)
{
    bool length = false, te = false, bad = false, chunked = false, last = false, other = false;
    for (uint32_t i = 0; i < h->n; i++) {
        struct mg_header *f = &h->v[i];
        if (f->name.len == 14 && MG_NAME_IS(f->name, "content-length")) {
            length = true;
            f->flags |= MG_HDR_HOP;
        } else if (f->name.len == 17 && MG_NAME_IS(f->name, "transfer-encoding")) {
            te = true;
            f->flags |= MG_HDR_HOP;
            read_codings(f->value, &bad, &chunked, &last, &other);
        }
    }
    if (!te)
        return length ? MG_FRAMING_LENGTH : MG_FRAMING_NONE;
    if (bad || length || !last)
        return MG_FRAMING_BAD;
    return other ? MG_FRAMING_UNSUPPORTED : MG_FRAMING_CHUNKED;
}

void mg_head_te_tabs(char *head, size_t len)
{
    static const char name[] = "transfer-encoding:";
    const size_t nlen = sizeof name - 1;
    if (!memchr(head, '\t', len))
        return; /* the common head: one pass of memchr */
    char *p = memchr(head, '\n', len), *end = head + len;
    while (p && ++p < end) { /* p: the start of a field line */
        char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t n = eol ? (size_t)(eol - p) : (size_t)(end - p);
        if (n > nlen && mg_name_is((struct mg_slice){p, nlen - 1}, name, nlen - 1) &&
            p[nlen - 1] == ':')
            for (size_t i = nlen; i < n; i++)
                if (p[i] == '\t')
                    p[i] = ' ';
        p = eol;
    }
}
