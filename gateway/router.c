/*
 * Request routing (router.h): host (exact or "*." wildcard), longest path
 * prefix at a segment boundary, methods.
 *
 * mg_router_build flattens every (route, host, path prefix) combination into one
 * array sorted by prefix length (longest first), then by route order, so the
 * first entry that matches is the answer: matching is a linear scan that never
 * allocates and never writes. A route without hosts gets one entry with host
 * NULL (any host); a route without paths gets the prefix "/".
 *
 * Ownership: the router is malloc'd and freed by mg_router_free; its entries
 * point at strings of the configuration snapshot, which owns the router and
 * therefore outlives it.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

struct entry {
    const struct mg_route_conf *route;
    const char *host; /* lowercase exact host, or the ".suffix" of "*.suffix"; NULL: any */
    size_t hostlen;
    bool wildcard;
    const char *prefix;
    size_t prefixlen;
    bool open;  /* prefix is "/" or ends in '/': matches anything under it */
    size_t seq; /* build order, so the sort is stable */
};

struct mg_router {
    size_t n;
    struct entry entries[];
};

static int by_precedence(const void *pa, const void *pb)
{
    const struct entry *a = pa, *b = pb;

    if (a->prefixlen != b->prefixlen)
        return a->prefixlen > b->prefixlen ? -1 : 1;
    if (a->route->index != b->route->index)
        return a->route->index < b->route->index ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static void add(struct mg_router *r, const struct mg_route_conf *rt, const char *host,
                const char *prefix)
{
    struct entry *e = &r->entries[r->n];

    e->route = rt;
    e->wildcard = host != NULL && host[0] == '*';
    e->host = e->wildcard ? host + 1 : host; /* "*.example.org" -> ".example.org" */
    e->hostlen = e->host ? strlen(e->host) : 0;
    e->prefix = prefix;
    e->prefixlen = strlen(prefix);
    e->open = prefix[e->prefixlen - 1] == '/';
    e->seq = r->n++;
}

struct mg_router *mg_router_build(const struct mg_config *cfg)
{
    struct mg_router *r;
    size_t n = 0;

    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct mg_route_conf *rt = &cfg->routes[i];
        n += (rt->npaths ? rt->npaths : 1) * (rt->nhosts ? rt->nhosts : 1);
    }
    r = malloc(sizeof(*r) + n * sizeof(r->entries[0]));
    if (r == NULL)
        return NULL;
    r->n = 0;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct mg_route_conf *rt = &cfg->routes[i];
        for (size_t p = 0; p < (rt->npaths ? rt->npaths : 1); p++) {
            const char *prefix = rt->npaths ? rt->paths[p] : "/";
            for (size_t h = 0; h < (rt->nhosts ? rt->nhosts : 1); h++)
                add(r, rt, rt->nhosts ? rt->hosts[h] : NULL, prefix);
        }
    }
    qsort(r->entries, r->n, sizeof(r->entries[0]), by_precedence);
    return r;
}

void mg_router_free(struct mg_router *r)
{
    free(r);
}

/* ASCII-only, locale-independent: `pattern` is already lowercase. */
static bool eq_nocase(const char *s, const char *pattern, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c != (unsigned char)pattern[i])
            return false;
    }
    return true;
}

static bool host_matches(const struct entry *e, const char *host, size_t len)
{
    if (host == NULL)
        return false;
    if (!e->wildcard)
        return len == e->hostlen && eq_nocase(host, e->host, len);
    /* "*.example.org" needs at least one label before ".example.org". */
    return len > e->hostlen && eq_nocase(host + len - e->hostlen, e->host, e->hostlen);
}

static bool prefix_matches(const struct entry *e, const char *path, size_t len)
{
    if (len < e->prefixlen || memcmp(path, e->prefix, e->prefixlen) != 0)
        return false;
    return e->open || len == e->prefixlen || path[e->prefixlen] == '/' || path[e->prefixlen] == '?';
}

/* Reduces a Host header value to the bare host: "[::1]:80" -> "[::1]",
 * "Example.org:8080" -> "Example.org", "example.org." -> "example.org". */
static const char *bare_host(const char *host, size_t *len)
{
    const char *end;

    if (host == NULL || *len == 0)
        return NULL;
    if (host[0] == '[') {
        end = memchr(host, ']', *len);
        if (end != NULL)
            *len = (size_t)(end - host) + 1;
    } else if ((end = memchr(host, ':', *len)) != NULL) {
        *len = (size_t)(end - host);
    }
    if (*len > 0 && host[*len - 1] == '.')
        (*len)--; /* the absolute form names the same host */
    return *len > 0 ? host : NULL;
}

const struct mg_route_conf *mg_router_match(const struct mg_router *r, const char *host,
                                            size_t hostlen, const char *path, size_t pathlen,
                                            int method, size_t *prefix_len)
{
    uint64_t bit = method >= 0 && method < 64 ? 1ull << method : 0;

    host = bare_host(host, &hostlen);
    for (size_t i = 0; r != NULL && i < r->n; i++) {
        const struct entry *e = &r->entries[i];
        if (e->route->methods_mask != 0 && (e->route->methods_mask & bit) == 0)
            continue;
        if (!prefix_matches(e, path, pathlen))
            continue;
        if (e->host != NULL && !host_matches(e, host, hostlen))
            continue;
        if (prefix_len != NULL)
            *prefix_len = e->prefixlen;
        return e->route;
    }
    return NULL;
}
