/*
 * Header fields as slices of a message head that the exchange's arena holds, and
 * the RFC 9110 rules every proxy applies to them: hop-by-hop fields (section 7.6.1)
 * and comma-separated token lists.
 */
#ifndef MG_MESSAGE_H
#define MG_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct mg_slice {
    const char *p;
    size_t len;
};

#define MG_SLICE_LIT(s) ((struct mg_slice){(s), sizeof(s) - 1})

enum {
    MG_HDR_HOP = 1u << 0, /* hop-by-hop: not forwarded */
};

struct mg_header {
    struct mg_slice name, value;
    unsigned flags; /* MG_HDR_* */
};

struct mg_headers {
    struct mg_header *v; /* arena-allocated, capacity `cap` */
    uint32_t n, cap;
};

/* RFC 9110 token characters, indexed by byte. */
extern const bool mg_http_tchar[256];

bool mg_slice_ieq(struct mg_slice a, struct mg_slice b);

/* Is field name `name` (token characters only, as every name the gateway keeps
 * is) the lower-case literal `lit` of letters, digits and '-', in any case?
 * OR-ing 0x20 lower-cases a letter and changes no token character into a digit,
 * a letter or '-' that it was not, so 8 bytes compare at once. The hot path's
 * field lookups go through this. */
static inline bool mg_name_is(struct mg_slice name, const char *lit, size_t len)
{
    if (name.len != len)
        return false;
    if (len >= 8) {
        /* Whole words, the last one overlapping the one before it. */
        uint64_t a, b;
        for (size_t i = 0; i + 8 < len; i += 8) {
            memcpy(&a, name.p + i, 8);
            memcpy(&b, lit + i, 8);
            if ((a | 0x2020202020202020ull) != b)
                return false;
        }
        memcpy(&a, name.p + len - 8, 8);
        memcpy(&b, lit + len - 8, 8);
        return (a | 0x2020202020202020ull) == b;
    }
    if (len >= 4) {
        uint32_t a, b, c, d;
        memcpy(&a, name.p, 4);
        memcpy(&b, lit, 4);
        memcpy(&c, name.p + len - 4, 4);
        memcpy(&d, lit + len - 4, 4);
        return ((a | 0x20202020u) == b) & ((c | 0x20202020u) == d);
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)(name.p[i] | 0x20) != (unsigned char)lit[i])
            return false;
    return true;
}
#define MG_NAME_IS(name, lit) mg_name_is((name), (lit), sizeof(lit) - 1)
/* Index of the first field named `name` (case-insensitive), or -1. */
int mg_headers_find(const struct mg_headers *h, struct mg_slice name);
/* Does the comma-separated list `value` contain `token` (case-insensitive)? */
bool mg_token_list_has(struct mg_slice value, struct mg_slice token);
/* RFC 9110 token characters only, at least one. */
bool mg_field_name_valid(struct mg_slice name);
/* Whether `name` (lower case) is one of the fixed hop-by-hop fields (RFC 9110
 * section 7.6.1): Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
 * Transfer-Encoding, Upgrade. */
bool mg_http_fixed_hop_by_hop(struct mg_slice name);

/* Whether `name` spells with '_' a field the gateway writes itself
 * (X-Request-Id, X-Forwarded-For/-Host/-Proto): CGI-style upstreams (WSGI,
 * PHP, Rack) read "X_Forwarded_For" as X-Forwarded-For, so a client's copy
 * would stand beside the gateway's. Such fields are not forwarded (nginx drops
 * every name with '_' by default; only these are dropped here). */
bool mg_http_mimics_own_field(struct mg_slice name);

/* Sets MG_HDR_HOP on the fixed hop-by-hop fields and on every field that a
 * Connection field names. The Connection-named set is computed from this message
 * only, before the gateway adds anything, so a client cannot strip headers the
 * gateway itself sets (DESIGN.md section 4). */
void mg_headers_mark_hop_by_hop(struct mg_headers *h);

/* What a message's framing fields say (RFC 9112 section 6). */
enum mg_framing {
    MG_FRAMING_NONE,        /* neither Content-Length nor Transfer-Encoding */
    MG_FRAMING_LENGTH,      /* Content-Length (its value is llhttp's to check) */
    MG_FRAMING_CHUNKED,     /* Transfer-Encoding: chunked, and no other coding */
    MG_FRAMING_BAD,         /* ambiguous: Content-Length with Transfer-Encoding, an
                               empty coding, chunked not last or more than once */
    MG_FRAMING_UNSUPPORTED, /* chunked last, after another coding (gzip, chunked) */
};

/* Reads every Content-Length and Transfer-Encoding field (all lines, in order)
 * and marks them MG_HDR_HOP: framing fields are never copied from one hop to the
 * next; the gateway writes its own from what it decoded. */
enum mg_framing mg_headers_framing(struct mg_headers *h);

/* Turns every HTAB in the values of Transfer-Encoding lines of the message head
 * head[0..len) (checked by http/headscan.h: CRLF lines, no obs-fold) into a
 * space, before llhttp parses it. HTAB is optional whitespace (RFC 9110
 * section 5.6.3), and nginx and HAProxy take "chunked<HTAB>", but Debian's
 * llhttp 8.1.0 in strict mode refuses it in requests; mg_headers_framing reads
 * the field itself and treats both alike, and the gateway never forwards it. */
void mg_head_te_tabs(char *head, size_t len);

#endif
