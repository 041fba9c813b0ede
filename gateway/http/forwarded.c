/*
 * Forwarding headers (see forwarded.h). The X-Forwarded-For walk follows
 * nginx's realip module with real_ip_recursive on, Envoy's trusted-hops
 * reading and HAProxy's: only hops the operator trusts may name the one
 * before them, so a client can put anything at the left of the list without
 * changing who it is taken for. Entries are addresses as proxies write them:
 * IPv4, IPv6, "[IPv6]", "[IPv6]:port" or "IPv4:port".
 */
#include "http/forwarded.h"

#include <string.h>

#include "net/cidr.h"

bool mg_forwarded_is_xff(struct mg_slice name)
{
    return MG_NAME_IS(name, "x-forwarded-for");
}

bool mg_forwarded_is_forwarded(struct mg_slice name)
{
    return MG_NAME_IS(name, "forwarded");
}

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

/* One list entry, trimmed, as an address (see the forms above). */
static bool entry_ip(const char *p, size_t n, struct mg_ip *ip)
{
    while (n && ows(p[0]))
        p++, n--;
    while (n && ows(p[n - 1]))
        n--;
    if (n && p[0] == '[') {
        const char *close = memchr(p, ']', n);
        if (!close)
            return false;
        size_t rest = n - (size_t)(close - p) - 1;
        if (rest && close[1] != ':')
            return false;
        return mg_ip_parse(p + 1, (size_t)(close - p - 1), ip);
    }
    const char *colon = memchr(p, ':', n);
    if (colon && memchr(colon + 1, ':', n - (size_t)(colon - p) - 1) == NULL)
        n = (size_t)(colon - p); /* "IPv4:port" (one colon: no IPv6) */
    return mg_ip_parse(p, n, ip);
}

/* Walks the entries of one field value from the right. Returns false when the
 * walk is over (an untrusted hop or garbage), with *cur the answer so far. */
static bool walk_value(struct mg_slice v, const struct mg_cidr *trusted, size_t ntrusted,
                       struct mg_ip *cur)
{
    size_t end = v.len;
    for (;;) {
        size_t start = end;
        while (start > 0 && v.p[start - 1] != ',')
            start--;
        const char *e = v.p + start;
        size_t n = end - start, blank = 0;
        while (blank < n && ows(e[blank]))
            blank++;
        if (blank < n) { /* empty list elements are allowed and skipped */
            struct mg_ip ip;
            if (!entry_ip(e, n, &ip))
                return false; /* the trusted hop after it stays the answer */
            *cur = ip;
            if (!mg_cidr_match(trusted, ntrusted, &ip))
                return false;
        }
        if (start == 0)
            break;
        end = start - 1;
    }
    return true;
}

void mg_forwarded_client(const struct mg_headers *h, const char *peer,
                         const struct mg_cidr *trusted, size_t ntrusted, char *out, size_t len)
{
    struct mg_ip cur;
    out[0] = '\0';
    if (!ntrusted || !mg_ip_parse(peer, strlen(peer), &cur) ||
        !mg_cidr_match(trusted, ntrusted, &cur))
        return;
    bool moved = false;
    for (uint32_t i = h->n; i-- > 0;) {
        const struct mg_header *f = &h->v[i];
        if ((f->flags & MG_HDR_HOP) || !mg_forwarded_is_xff(f->name))
            continue;
        struct mg_ip before = cur;
        bool go_on = walk_value(f->value, trusted, ntrusted, &cur);
        moved |= memcmp(&before, &cur, sizeof cur) != 0;
        if (!go_on)
            break;
    }
    if (moved)
        mg_ip_text(&cur, out, len);
}

char *mg_forwarded_put_list(char *o, const struct mg_headers *h, bool (*is)(struct mg_slice),
                            bool *any)
{
    *any = false;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct mg_header *f = &h->v[i];
        if ((f->flags & MG_HDR_HOP) || !is(f->name) || f->value.len == 0)
            continue;
        if (*any) {
            memcpy(o, ", ", 2);
            o += 2;
        }
        memcpy(o, f->value.p, f->value.len);
        o += f->value.len;
        *any = true;
    }
    return o;
}

char *mg_forwarded_put_node(char *o, const char *ip)
{
    size_t n = strnlen(ip, MG_FORWARDED_NODE_MAX - 4);
    if (n == 0) {
        memcpy(o, "unknown", 7);
        return o + 7;
    }
    bool v6 = memchr(ip, ':', n) != NULL;
    if (v6) {
        memcpy(o, "\"[", 2);
        o += 2;
    }
    memcpy(o, ip, n);
    o += n;
    if (v6) {
        memcpy(o, "]\"", 2);
        o += 2;
    }
    return o;
}
