/*
 * The targets one exchange has tried, by index into its upstream's targets. A
 * request makes at most max_retries + 1 (<= 11) tries, so a short list serves
 * upstreams of any size without allocating; a lost race to an opening breaker
 * adds an entry too, and past MG_TRIED_MAX further entries are dropped (the
 * balancer may then offer such a target again: its breaker refuses it).
 */
#ifndef MG_BALANCER_T_H
#define MG_BALANCER_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_TRIED_MAX 16

struct mg_tried {
    uint32_t n;
    uint32_t idx[MG_TRIED_MAX];
};

static inline bool mg_tried_has(const struct mg_tried *t, size_t i)
{
    for (uint32_t k = 0; k < t->n; k++)
        if (t->idx[k] == i)
            return true;
    return false;
}

static inline void mg_tried_add(struct mg_tried *t, size_t i)
{
    if (t->n < MG_TRIED_MAX && !mg_tried_has(t, i))
        t->idx[t->n++] = (uint32_t)i;
}

#endif
