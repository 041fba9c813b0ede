/*
 * A count of holds on an object that a lower layer must keep alive without
 * knowing what it is. The upstream pool parks a connection whose buffer a
 * client write still points into, and the parked connection must keep its
 * target (and so the config snapshot's runtime) alive across a reload; the
 * pool takes and drops a hold here, and the runtime, which embeds this, says
 * what the last drop does. Single-threaded: a hold belongs to one worker loop.
 */
#ifndef MG_CORE_HOLD_H
#define MG_CORE_HOLD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/log.h"

struct mg_hold {
    uint32_t n;   /* holds; the owner's first one included */
    bool retired; /* replaced: nothing new should join what it owns */
    void (*last_dropped)(struct mg_hold *h);
};

static inline void mg_hold_take(struct mg_hold *h)
{
    h->n++;
}

static inline void mg_hold_drop(struct mg_hold *h)
{
    MG_ASSERT(h->n > 0);
    if (--h->n == 0)
        h->last_dropped(h);
}

#endif
