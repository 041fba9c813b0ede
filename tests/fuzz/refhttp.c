/*
 * Reference HTTP/1.1 request framing (see refhttp.h). Written for clarity: each
 * rule of the grammar is one test on the whole buffer, and running out of input
 * anywhere is REF_MORE.
 */
#include "refhttp.h"

#include <stdlib.h>
#include <string.h>

const char *ref_result_text(enum ref_result r)
{
    switch (r) {
    case REF_DONE:
        return "done";
    case REF_MORE:
        return "more";
    case REF_ERROR:
        return "error";
    case REF_LIMIT:
        return "limit";
    }
    return "?";
}

const char *ref_stream_end_text(enum ref_stream_end e)
{
    switch (e) {
    case REF_END_CLEAN:
        return "clean";
    case REF_END_PARTIAL:
        return "partial";
    case REF_END_BROKEN:
        return "broken body";
    case REF_END_UNKNOWN:
        return "unknown";
    }
    return "?";
}

void ref_buf_add(struct ref_buf *b, const uint8_t *p, size_t n)
{
    if (n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np)
            abort();
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void ref_buf_free(struct ref_buf *b)
{
    free(b->p);
    *b = (struct ref_buf){0};
}

bool ref_tchar(uint8_t c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool ws(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* VCHAR / obs-text */
static bool vchar(uint8_t c)
{
    return (c >= 0x21 && c <= 0x7e) || c >= 0x80;
}

/* A byte of a field value: SP / HTAB / VCHAR / obs-text (no CTL but HTAB). */
static bool value_byte(uint8_t c, bool del_ok)
{
    return ws(c) || vchar(c) || (del_ok && c == 0x7f);
}

static int hex(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool ref_ieq(const uint8_t *p, size_t n, const char *s)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t a = p[i], b = (uint8_t)s[i];
        if (a >= 'A' && a <= 'Z')
            a = (uint8_t)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z')
            b = (uint8_t)(b - 'A' + 'a');
        if (a != b)
            return false;
    }
    return true;
}

/* Index of the first CR or LF at or after i, or len. */
static size_t line_end(const uint8_t *p, size_t len, size_t i)
{
    while (i < len && p[i] != '\r' && p[i] != '\n')
        i++;
    return i;
}

/* The CRLF expected at p[k]: REF_DONE (*next = k + 2), REF_MORE or REF_ERROR (*bad). */
static enum ref_result crlf(const uint8_t *p, size_t len, size_t k, size_t *next, size_t *bad)
{
    if (k >= len)
        return REF_MORE;
    if (p[k] != '\r') {
        *bad = k;
        return REF_ERROR;
    }
    if (k + 1 >= len)
        return REF_MORE;
    if (p[k + 1] != '\n') {
        *bad = k + 1;
        return REF_ERROR;
    }
    *next = k + 2;
    return REF_DONE;
}

/* ------------------------------------------------------------ chunked */

/* chunk-ext on s[0..n), the rest of a size line after its digits (no CR or LF in
 * it). `complete`: the line ends there. REF_DONE: valid; REF_MORE: a valid
 * beginning (only when !complete); REF_ERROR at s[*bad]. */
static enum ref_result chunk_ext(const uint8_t *s, size_t n, bool complete, size_t *bad)
{
    enum {
        END,       /* after the size, an extension's name, value or closing quote: accepting */
        PRE_SEMI,  /* BWS that must lead to ';' */
        NAME0,     /* after ';' (and BWS): a name must come */
        NAME,      /* in a name: accepting */
        NAME_BWS,  /* BWS after a name: '=' or ';' must come */
        VALUE0,    /* after '=' (and BWS): a token or a quoted-string must come */
        VTOKEN,    /* in a token value: accepting */
        QUOTED,    /* in a quoted-string */
        QUOTED_BS, /* after a backslash in a quoted-string */
    } st = END;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        bool ok = true;
        switch (st) {
        case END:
        case PRE_SEMI:
            if (ws(c))
                st = PRE_SEMI;
            else if (c == ';')
                st = NAME0;
            else
                ok = false;
            break;
        case NAME0:
            if (ref_tchar(c))
                st = NAME;
            else if (!ws(c))
                ok = false;
            break;
        case NAME:
        case NAME_BWS:
            if (st == NAME && ref_tchar(c))
                break;
            if (ws(c))
                st = NAME_BWS;
            else if (c == '=')
                st = VALUE0;
            else if (c == ';')
                st = NAME0;
            else
                ok = false;
            break;
        case VALUE0:
            if (ref_tchar(c))
                st = VTOKEN;
            else if (c == '"')
                st = QUOTED;
            else if (!ws(c))
                ok = false;
            break;
        case VTOKEN:
            if (ref_tchar(c))
                break;
            if (ws(c))
                st = PRE_SEMI;
            else if (c == ';')
                st = NAME0;
            else
                ok = false;
            break;
        case QUOTED:
            /* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text */
            if (c == '"')
                st = END;
            else if (c == '\\')
                st = QUOTED_BS;
            else if (!(ws(c) || c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e) ||
                       c >= 0x80))
                ok = false;
            break;
        case QUOTED_BS:
            /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (ws(c) || vchar(c))
                st = QUOTED;
            else
                ok = false;
            break;
        }
        if (!ok) {
            *bad = i;
            return REF_ERROR;
        }
    }
    if (!complete)
        return REF_MORE;
    if (st == END || st == NAME || st == VTOKEN)
        return REF_DONE;
    *bad = n; /* the CR came where the grammar wanted more */
    return REF_ERROR;
}

/* One trailer field line p[i..k) (no CR or LF in it): token ":" value bytes. */
static enum ref_result trailer_line(const uint8_t *p, size_t i, size_t k, bool complete,
                                    size_t *bad)
{
    size_t j = i;
    while (j < k && ref_tchar(p[j]))
        j++;
    if (j == k) {
        if (!complete && j > i)
            return REF_MORE; /* a name so far */
        *bad = j;
        return REF_ERROR; /* empty line handled by the caller; here: no colon */
    }
    if (j == i || p[j] != ':') {
        *bad = j; /* empty name, or a byte neither tchar nor ':' */
        return REF_ERROR;
    }
    for (j++; j < k; j++)
        if (!value_byte(p[j], false)) {
            *bad = j;
            return REF_ERROR;
        }
    return complete ? REF_DONE : REF_MORE;
}

static enum ref_result fail(size_t *end, size_t at, const char **why, const char *text,
                            enum ref_result r)
{
    *end = at;
    *why = text;
    return r;
}

enum ref_result ref_chunked(const uint8_t *p, size_t len, const struct ref_chunked_opts *o,
                            size_t *end, struct ref_buf *data, const char **why)
{
    static const char *const more = "cut short";
    uint64_t total = 0;
    size_t i = 0, bad = 0;
    *why = NULL;
    for (;;) {
        /* chunk-size [ chunk-ext ] CRLF */
        size_t start = i, k = line_end(p, len, i), d = i;
        uint64_t size = 0;
        while (d < k && hex(p[d]) >= 0) {
            if (d - start + 1 > o->max_digits)
                return fail(end, d, why, "too many hex digits in a chunk size", REF_LIMIT);
            size = size << 4 | (uint64_t)hex(p[d]);
            d++;
        }
        if (d == start) {
            if (d == len)
                return fail(end, d, why, more, REF_MORE);
            return fail(end, d, why, "no chunk size", REF_ERROR);
        }
        if (d < len) { /* the size is known once a byte follows its digits */
            if (size > o->limit - total)
                return fail(end, d, why, "chunk size over the body limit", REF_LIMIT);
        }
        if (!o->extensions && d < k)
            return fail(end, d, why, "chunk extension (or junk) after the size", REF_ERROR);
        enum ref_result r = chunk_ext(p + d, k - d, k < len, &bad);
        if (r == REF_ERROR)
            return fail(end, d + bad, why, "invalid chunk extension", REF_ERROR);
        size_t line = k - start;
        if (line > o->max_line)
            return fail(end, start + o->max_line, why, "chunk size line too long", REF_LIMIT);
        r = crlf(p, len, k, &i, &bad);
        if (r == REF_MORE)
            return fail(end, len, why, more, REF_MORE);
        if (r == REF_ERROR)
            return fail(end, bad, why, "chunk size line not ended by CRLF", REF_ERROR);
        total += size;
        if (size == 0)
            break;
        /* chunk-data CRLF */
        size_t avail = len - i < size ? len - i : (size_t)size;
        ref_buf_add(data, p + i, avail);
        if (avail < size)
            return fail(end, len, why, more, REF_MORE);
        r = crlf(p, len, i + (size_t)size, &i, &bad);
        if (r == REF_MORE)
            return fail(end, len, why, more, REF_MORE);
        if (r == REF_ERROR)
            return fail(end, bad, why, "chunk data not followed by CRLF", REF_ERROR);
    }
    /* trailer-section CRLF */
    size_t section = i;
    for (;;) {
        size_t k = line_end(p, len, i);
        if (k == i) { /* the empty line that ends the message (or a bare LF) */
            enum ref_result r = crlf(p, len, i, &i, &bad);
            if (r == REF_MORE)
                return fail(end, len, why, more, REF_MORE);
            if (r == REF_ERROR)
                return fail(end, bad, why, "bare CR or LF ending the trailer section", REF_ERROR);
            *end = i;
            return REF_DONE;
        }
        if (!o->trailers)
            return fail(end, i, why, "trailer field", REF_ERROR);
        enum ref_result r = trailer_line(p, i, k, k < len, &bad);
        if (r == REF_ERROR)
            return fail(end, bad, why, "invalid trailer field line", REF_ERROR);
        /* The section's bytes so far: its field lines with their CRLFs. */
        size_t seen = (k + 2 < len ? k + 2 : len) - section;
        if (seen > o->max_trailer)
            return fail(end, section + o->max_trailer, why, "trailer section too large", REF_LIMIT);
        r = crlf(p, len, k, &i, &bad);
        if (r == REF_MORE)
            return fail(end, len, why, more, REF_MORE);
        if (r == REF_ERROR)
            return fail(end, bad, why, "trailer field line not ended by CRLF", REF_ERROR);
    }
}

/* ------------------------------------------------------------ heads */

bool ref_target_tab_ok;

/* The request line p[i..k) (no CR or LF in it). */
static enum ref_result request_line(const uint8_t *p, size_t i, size_t k, bool complete,
                                    struct ref_head *h, size_t *bad)
{
    size_t j = i;
    while (j < k && ref_tchar(p[j]))
        j++;
    if (j == k && !complete)
        return REF_MORE;
    if (j == i || j == k || p[j] != ' ') {
        *bad = j;
        return REF_ERROR;
    }
    h->method = p + i;
    h->method_len = j - i;
    size_t t = ++j;
    while (j < k && (vchar(p[j]) || (ref_target_tab_ok && (p[j] == '\t' || p[j] == '\f'))))
        j++;
    if (j == k && !complete)
        return REF_MORE;
    if (j == t || j == k || p[j] != ' ') {
        *bad = j;
        return REF_ERROR;
    }
    h->target = p + t;
    h->target_len = j - t;
    j++;
    static const char v[] = "HTTP/D.D";
    for (size_t n = 0; n < sizeof v - 1; n++, j++) {
        if (j == k) {
            if (!complete)
                return REF_MORE;
            *bad = j;
            return REF_ERROR;
        }
        bool ok = v[n] == 'D' ? p[j] >= '0' && p[j] <= '9' : p[j] == (uint8_t)v[n];
        if (!ok) {
            *bad = j;
            return REF_ERROR;
        }
    }
    if (j != k) {
        *bad = j;
        return REF_ERROR;
    }
    h->major = p[k - 3] - '0';
    h->minor = p[k - 1] - '0';
    return complete ? REF_DONE : REF_MORE;
}

enum ref_result ref_request_head(const uint8_t *p, size_t len, bool empty_lines, bool del_ok,
                                 struct ref_head *h, size_t *end, const char **why)
{
    size_t i = 0, bad = 0;
    h->nf = 0;
    *why = NULL;
    if (empty_lines) {
        while (i < len && p[i] == '\r') {
            enum ref_result r = crlf(p, len, i, &i, &bad);
            if (r == REF_MORE)
                return fail(end, len, why, "cut short", REF_MORE);
            if (r == REF_ERROR)
                return fail(end, bad, why, "bare CR before the request line", REF_ERROR);
        }
    }
    size_t k = line_end(p, len, i);
    enum ref_result r = request_line(p, i, k, k < len, h, &bad);
    if (r == REF_ERROR)
        return fail(end, bad, why, "invalid request line", REF_ERROR);
    if (r == REF_MORE)
        return fail(end, len, why, "cut short", REF_MORE);
    r = crlf(p, len, k, &i, &bad);
    if (r != REF_DONE)
        return fail(end, r == REF_MORE ? len : bad, why, "request line not ended by CRLF", r);
    for (;;) {
        k = line_end(p, len, i);
        if (k == i) {
            r = crlf(p, len, i, &i, &bad);
            if (r != REF_DONE)
                return fail(end, r == REF_MORE ? len : bad, why, "bare CR or LF in the head", r);
            *end = i;
            return REF_DONE;
        }
        /* field-line: token ":" OWS value OWS; a line starting with SP/HTAB is obs-fold */
        size_t j = i;
        while (j < k && ref_tchar(p[j]))
            j++;
        if (j == k && k == len && j > i)
            return fail(end, len, why, "cut short", REF_MORE);
        if (j == i || j == k || p[j] != ':')
            return fail(end, j, why, ws(p[i]) ? "obs-fold" : "invalid field name (or no colon)",
                        REF_ERROR);
        size_t name_end = j++;
        for (size_t q = j; q < k; q++)
            if (!value_byte(p[q], del_ok))
                return fail(end, q, why, "invalid byte in a field value", REF_ERROR);
        if (k == len)
            return fail(end, len, why, "cut short", REF_MORE);
        if (h->nf == REF_MAX_FIELDS)
            return fail(end, i, why, "too many fields", REF_LIMIT);
        size_t vs = j, ve = k;
        while (vs < ve && ws(p[vs]))
            vs++;
        while (ve > vs && ws(p[ve - 1]))
            ve--;
        h->f[h->nf++] = (struct ref_field){
            .name = p + i, .name_len = name_end - i, .value = p + vs, .value_len = ve - vs};
        r = crlf(p, len, k, &i, &bad);
        if (r != REF_DONE)
            return fail(end, r == REF_MORE ? len : bad, why, "field line not ended by CRLF", r);
    }
}

unsigned ref_field_count(const struct ref_head *h, const char *name, int *last)
{
    unsigned n = 0;
    for (unsigned i = 0; i < h->nf; i++)
        if (ref_ieq(h->f[i].name, h->f[i].name_len, name)) {
            n++;
            if (last)
                *last = (int)i;
        }
    return n;
}

/* ------------------------------------------------------------ streams */

void ref_reqs_clear(struct ref_reqs *r)
{
    for (size_t i = 0; i < r->n; i++)
        ref_buf_free(&r->v[i].body);
    r->n = 0;
}

static struct ref_req *reqs_add(struct ref_reqs *r, const struct ref_head *h)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 16;
        r->v = realloc(r->v, r->cap * sizeof *r->v);
        if (!r->v)
            abort();
    }
    struct ref_req *q = &r->v[r->n++];
    *q = (struct ref_req){0};
    size_t n = h->method_len < sizeof q->method - 1 ? h->method_len : sizeof q->method - 1;
    memcpy(q->method, h->method, n);
    return q;
}

/* 1*DIGIT of at most 18 digits (so it fits): true with *v. */
static bool digits(const uint8_t *p, size_t n, uint64_t *v)
{
    if (n == 0 || n > 18)
        return false;
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        *v = *v * 10 + (uint64_t)(p[i] - '0');
    }
    return true;
}

static bool tunnel_request(const struct ref_head *h)
{
    return ref_ieq(h->method, h->method_len, "CONNECT") || ref_field_count(h, "upgrade", NULL);
}

const char *ref_forwarded(const uint8_t *p, size_t len, struct ref_reqs *out, size_t *at)
{
    static struct ref_head h; /* large: not on the stack */
    static const struct ref_chunked_opts strict = {
        .extensions = false,
        .trailers = false,
        .max_digits = 16,
        .max_line = SIZE_MAX,
        .max_trailer = SIZE_MAX,
        .limit = UINT64_MAX,
    };
    size_t i = 0;
    while (i < len) {
        size_t end = 0;
        const char *why = NULL;
        enum ref_result r = ref_request_head(p + i, len - i, false, true, &h, &end, &why);
        *at = i + end;
        if (r == REF_MORE)
            return NULL;
        if (r != REF_DONE)
            return why;
        size_t body = i + end;
        if (h.major != 1 || h.minor != 1)
            return "not HTTP/1.1";
        if (ref_field_count(&h, "host", NULL) != 1)
            return "not exactly one Host field";
        int cl_i = -1, te_i = -1;
        unsigned ncl = ref_field_count(&h, "content-length", &cl_i);
        unsigned nte = ref_field_count(&h, "transfer-encoding", &te_i);
        if (ncl > 1)
            return "more than one Content-Length";
        if (nte > 1)
            return "more than one Transfer-Encoding";
        if (ncl && nte)
            return "both Content-Length and Transfer-Encoding";
        struct ref_req *q = reqs_add(out, &h);
        if (nte) {
            if (!ref_ieq(h.f[te_i].value, h.f[te_i].value_len, "chunked"))
                return "a Transfer-Encoding other than chunked";
            r = ref_chunked(p + body, len - body, &strict, &end, &q->body, &why);
            *at = body + end;
            if (r == REF_ERROR || r == REF_LIMIT)
                return why;
            if (r == REF_MORE) {
                out->n--; /* cut short: not a forwarded request */
                ref_buf_free(&q->body);
                return NULL;
            }
            i = body + end;
        } else {
            uint64_t n = 0;
            if (ncl && !digits(h.f[cl_i].value, h.f[cl_i].value_len, &n))
                return "Content-Length not 1*DIGIT";
            if (n > len - body) {
                out->n--;
                *at = len;
                return NULL;
            }
            ref_buf_add(&q->body, p + body, (size_t)n);
            i = body + (size_t)n;
        }
        q->end = i;
        if (tunnel_request(&h))
            return NULL; /* a tunnel follows */
    }
    return NULL;
}

enum ref_stream_end ref_client(const uint8_t *p, size_t len, struct ref_reqs *out)
{
    static struct ref_head h;
    static const struct ref_chunked_opts lax = {
        .extensions = true,
        .trailers = true,
        .max_digits = 16,
        .max_line = SIZE_MAX,
        .max_trailer = SIZE_MAX,
        .limit = UINT64_MAX,
    };
    size_t i = 0;
    while (i < len) {
        size_t end = 0;
        const char *why = NULL;
        enum ref_result r = ref_request_head(p + i, len - i, true, false, &h, &end, &why);
        if (r == REF_MORE)
            return REF_END_PARTIAL;
        if (r != REF_DONE)
            return REF_END_UNKNOWN;
        size_t body = i + end;
        if (h.major != 1 || (h.minor != 0 && h.minor != 1) || tunnel_request(&h))
            return REF_END_UNKNOWN;
        int cl_i = -1, te_i = -1;
        unsigned ncl = ref_field_count(&h, "content-length", &cl_i);
        unsigned nte = ref_field_count(&h, "transfer-encoding", &te_i);
        uint64_t n = 0;
        if (nte) {
            if (nte > 1 || ncl || h.minor != 1 ||
                !ref_ieq(h.f[te_i].value, h.f[te_i].value_len, "chunked"))
                return REF_END_UNKNOWN;
        } else if (ncl > 1 || (ncl && !digits(h.f[cl_i].value, h.f[cl_i].value_len, &n))) {
            return REF_END_UNKNOWN;
        }
        struct ref_req *q = reqs_add(out, &h);
        if (nte) {
            r = ref_chunked(p + body, len - body, &lax, &end, &q->body, &why);
            if (r != REF_DONE) {
                out->n--;
                ref_buf_free(&q->body);
                return r == REF_MORE    ? REF_END_PARTIAL
                       : r == REF_ERROR ? REF_END_BROKEN
                                        : REF_END_UNKNOWN;
            }
            i = body + end;
        } else {
            if (n > len - body) {
                out->n--;
                return REF_END_PARTIAL;
            }
            ref_buf_add(&q->body, p + body, (size_t)n);
            i = body + (size_t)n;
        }
        q->end = i;
    }
    return REF_END_CLEAN;
}
