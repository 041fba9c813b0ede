/*
 * The upstream response head's fast path (see resphead.h). Every test here
 * either passes a byte llhttp takes the same way or gives the head back to
 * llhttp: it is an acceleration, never a second opinion on what is valid.
 */
#include "http/resphead.h"

#include <string.h>

#include "http/fields.h"

/* HTAB, SP and visible ASCII: what a reason phrase or field value may hold
 * here (obs-text and controls go to llhttp). */
static const bool plain[256] = {
    ['\t'] = true,
#define R4(c)  [c] = true, [(c) + 1] = true, [(c) + 2] = true, [(c) + 3] = true
#define R16(c) R4(c), R4((c) + 4), R4((c) + 8), R4((c) + 12)
    R16(0x20),     R16(0x30), R16(0x40),     R16(0x50),     R16(0x60),     R4(0x70),
    R4(0x74),      R4(0x78),  [0x7c] = true, [0x7d] = true, [0x7e] = true,
#undef R16
#undef R4
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The fields llhttp reads itself (its header state machine): Content-Length
 * and Connection in their plain forms here, the others only by llhttp. */
static bool special(struct mg_slice n, struct mg_slice v, struct mg_resphead *out)
{
    switch (n.len) {
    case 7:
        return !MG_NAME_IS(n, "upgrade");
    case 10:
        if (!MG_NAME_IS(n, "connection"))
            return true;
        if (mg_slice_ieq(v, MG_SLICE_LIT("close"))) {
            out->close = true;
            return true;
        }
        return mg_slice_ieq(v, MG_SLICE_LIT("keep-alive"));
    case 14: {
        if (!MG_NAME_IS(n, "content-length"))
            return true;
        if (out->has_length || v.len > 18) /* a second one, or one near overflow */
            return false;
        uint64_t x = 0;
        for (size_t i = 0; i < v.len; i++) {
            if (!is_digit(v.p[i]))
                return false;
            x = x * 10 + (uint64_t)(v.p[i] - '0');
        }
        out->has_length = true;
        out->length = x;
        return true;
    }
    case 16:
        return !MG_NAME_IS(n, "proxy-connection");
    case 17:
        return !MG_NAME_IS(n, "transfer-encoding");
    default:
        return true;
    }
}

/* "HTTP/1.1 NNN reason\r\n" with NNN in 200..599; *p moves past it. */
static bool status_line(const char **p, const char *end, struct mg_resphead *out)
{
    const char *s = *p;
    if (end - s < 15 || memcmp(s, "HTTP/1.1 ", 9) != 0)
        return false;
    s += 9;
    if (!is_digit(s[0]) || !is_digit(s[1]) || !is_digit(s[2]) || s[3] != ' ')
        return false;
    out->status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    if (out->status < 200 || out->status > 599)
        return false;
    s += 4;
    const char *r = s;
    while (s < end && plain[(unsigned char)*s])
        s++;
    if (end - s < 2 || s[0] != '\r' || s[1] != '\n')
        return false;
    /* An empty reason, or whitespace around it: llhttp's spans. */
    if (s == r || *r == ' ' || *r == '\t' || s[-1] == ' ' || s[-1] == '\t')
        return false;
    out->reason = (struct mg_slice){r, (size_t)(s - r)};
    *p = s + 2;
    return true;
}

/* One "name: value\r\n" line; *p moves past it. */
static bool field_line(struct mg_arena *a, struct mg_headers *h, const char **p, const char *end,
                       struct mg_resphead *out)
{
    const char *s = *p, *n = s;
    while (s < end && mg_http_tchar[(unsigned char)*s])
        s++;
    if (s == n || s == end || *s != ':')
        return false;
    struct mg_slice name = {n, (size_t)(s - n)};
    s++;
    while (s < end && *s == ' ')
        s++;
    const char *v = s;
    while (s < end && plain[(unsigned char)*s])
        s++;
    if (end - s < 2 || s[0] != '\r' || s[1] != '\n')
        return false;
    /* An empty value, a tab first or whitespace last: llhttp's trimming. */
    if (s == v || *v == '\t' || s[-1] == ' ' || s[-1] == '\t')
        return false;
    struct mg_slice value = {v, (size_t)(s - v)};
    *p = s + 2;
    if (!special(name, value, out))
        return false;
    if (mg_fields_name(a, h, name.p, name.len) < 0 || mg_fields_value(h, value.p, value.len) < 0)
        return false; /* too many fields: llhttp's run reports it */
    mg_fields_value_done(h);
    return true;
}

bool mg_resphead_parse(struct mg_arena *a, struct mg_headers *h, const char *head, size_t len,
                       struct mg_resphead *out)
{
    const char *p = head, *end = head + len;
    *out = (struct mg_resphead){0};
    if (!status_line(&p, end, out))
        return false;
    while (end - p >= 2) {
        if (p[0] == '\r') /* the empty line: the head's last bytes */
            return p[1] == '\n' && p + 2 == end;
        if (!field_line(a, h, &p, end, out))
            return false;
    }
    return false;
}
