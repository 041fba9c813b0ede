/*
 * Deadline propagation (see propagate.h). The client's field is marked
 * hop-by-hop so the upstream codec drops it and writes the gateway's own value
 * (what is left of the deadline when each try's head is written).
 */
#include "exchange/propagate.h"

#include <string.h>
#include <strings.h>

#include "config/config-t.h"

/* A positive decimal number of milliseconds, else 0 (ignored). */
static uint64_t parse_ms(struct mg_slice v)
{
    while (v.len && (v.p[0] == ' ' || v.p[0] == '\t'))
        v.p++, v.len--;
    while (v.len && (v.p[v.len - 1] == ' ' || v.p[v.len - 1] == '\t'))
        v.len--;
    if (v.len == 0 || v.len > 12)
        return 0;
    uint64_t ms = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return 0;
        ms = ms * 10 + (uint64_t)(v.p[i] - '0');
    }
    return ms;
}

uint64_t mg_xprop_timeout_ms(struct mg_exchange *x)
{
    uint64_t route_ms = x->route->timeout_ms;
    const char *name = x->ups->deadline_header;
    if (!name)
        return route_ms;
    size_t len = strlen(name);
    uint64_t ms = route_ms;
    for (uint32_t i = 0; i < x->req_hdrs.n; i++) {
        struct mg_header *f = &x->req_hdrs.v[i];
        if (f->name.len != len || strncasecmp(f->name.p, name, len) != 0)
            continue;
        f->flags |= MG_HDR_HOP; /* the gateway sends its own value */
        uint64_t asked = parse_ms(f->value);
        if (asked && asked < ms)
            ms = asked;
    }
    return ms;
}
