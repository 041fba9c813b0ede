/*
 * The exchange's bulkhead slot (see slot.h).
 */
#include "exchange/slot.h"

#include "config/config-t.h"
#include "runtime.h"
#include "loopctx.h"

static struct mg_upstream_stats *stats_of(struct mg_exchange *x)
{
    return x->rt->ups[x->ups->index].stats;
}

enum mg_admit mg_xslot_enter(struct mg_exchange *x)
{
    x->waiter.priority = (uint8_t)x->route->priority;
    enum mg_admit r = mg_admission_enter(stats_of(x), &x->ups->bulkhead, (unsigned)x->ctx->id,
                                         uv_now(&x->ctx->loop), &x->waiter);
    if (r == MG_ADMIT_ACQUIRED)
        x->slot_held = true;
    return r;
}

void mg_xslot_release(struct mg_exchange *x)
{
    if (!x->slot_held)
        return;
    x->slot_held = false;
    mg_admission_release(stats_of(x), &x->ups->bulkhead, (unsigned)x->ctx->id);
}

void mg_xslot_leave(struct mg_exchange *x)
{
    mg_admission_leave(stats_of(x), (unsigned)x->ctx->id, &x->waiter);
    uv_timer_stop(&x->wait);
}

void mg_xslot_stop_waiting(struct mg_exchange *x)
{
    if (x->state == MG_X_QUEUED)
        mg_xslot_leave(x);
    else if (x->state == MG_X_BACKOFF)
        uv_timer_stop(&x->wait);
}

bool mg_xslot_timeout(struct mg_exchange *x)
{
    if (!mg_admission_timeout(stats_of(x), (unsigned)x->ctx->id, &x->waiter))
        return false;
    x->slot_held = true;
    return true;
}
