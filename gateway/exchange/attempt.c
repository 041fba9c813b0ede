/*
 * Tries (see attempt.h). The attempt struct lives in the exchange (x->att);
 * everything process-wide it touches (the target's in-flight count and
 * breaker, the upstream's retry budget) is atomics in the registry.
 */
#include "exchange/attempt.h"

#include <stdatomic.h>

#include "config/config-t.h"
#include "core/log.h"
#include "exchange/plugins.h"
#include "obs/metrics.h"
#include "resilience/breaker.h"
#include "resilience/retry.h"
#include "upstream/balancer.h"
#include "worker.h"

static void begin(struct mg_exchange *x, struct mg_target_rt *t, uint32_t probe)
{
    struct mg_attempt *a = &x->att;
    a->x = x;
    a->target = t;
    a->probe = probe;
    a->open = true;
    a->reported = false;
    a->start_ns = uv_hrtime();
    x->attempts++;
    t->active++;
    atomic_fetch_add_explicit(&t->stats->active, 1, memory_order_relaxed);
}

/* The soonest an open breaker lets a target through again, in seconds. */
static uint32_t retry_after_s(struct mg_upstream_rt *ur, uint64_t now)
{
    const struct mg_upstream_conf *uc = ur->conf;
    uint64_t wait_ms = UINT64_MAX;
    for (size_t k = 0; k < uc->ntargets; k++) {
        uint64_t ms = mg_breaker_retry_after_ms(&ur->targets[k].stats->breaker, &uc->breaker, now);
        wait_ms = ms < wait_ms ? ms : wait_ms;
    }
    return (uint32_t)((wait_ms + 999) / 1000);
}

/* Breaker changes are logged by the one caller that made them (the breaker's
 * CAS winner), so each change is one line whatever the traffic. */
static bool acquire(struct mg_exchange *x, struct mg_target_rt *t, uint64_t now, uint32_t *probe)
{
    const struct mg_upstream_conf *uc = x->ups;
    bool half_opened;
    bool ok = mg_breaker_acquire_ex(&t->stats->breaker, &uc->breaker, now, probe, &half_opened);

    if (half_opened)
        mg_info("circuit breaker half-open: upstream %s target %s (probing)", uc->name,
                t->conf->address.text);
    return ok;
}

enum mg_error mg_attempt_open(struct mg_exchange *x)
{
    const struct mg_upstream_conf *uc = x->ups;
    struct mg_upstream_rt *ur = &x->rt->ups[uc->index];
    uint64_t now = uv_now(&x->w->loop);
    uint32_t probe = 0;
    int i = -1;
    if (uc->ntargets == 0)
        return MG_ERR_NO_TARGETS; /* a name that does not resolve (yet) */
    if (mg_xplug_active(x, MG_LUA_BALANCE)) {
        bool raised;
        i = mg_xplug_balance(x, ur, now, &raised);
        if (raised)
            return MG_ERR_PLUGIN_ERROR;
        if (x->lua.balance_refused)
            return MG_ERR_BALANCER_REFUSED;
    }
    if (i >= 0 && !acquire(x, &ur->targets[i], now, &probe))
        i = -1;
    for (size_t n = 0; i < 0 && n < uc->ntargets; n++) {
        i = mg_balancer_pick(ur, &x->tried, now);
        if (i < 0 || acquire(x, &ur->targets[i], now, &probe))
            break;
        mg_tried_add(&x->tried, (size_t)i); /* lost a race to an opening breaker: next one */
        i = -1;
    }
    if (i < 0) {
        x->retry_after_s = retry_after_s(ur, now);
        return MG_ERR_CIRCUIT_OPEN;
    }
    mg_tried_add(&x->tried, (size_t)i);
    begin(x, &ur->targets[i], probe);
    return MG_ERR_NONE;
}

void mg_attempt_report(struct mg_exchange *x, bool failure, enum mg_upstream_outcome outcome)
{
    struct mg_attempt *a = &x->att;
    if (!a->open || a->reported)
        return;
    a->reported = true;
    struct mg_upstream_rt *ur = &x->rt->ups[x->ups->index];
    mg_metrics_upstream_outcome(x->rt->metrics, (unsigned)x->w->id, x->ups->index,
                                (size_t)(a->target - ur->targets), outcome);
    struct mg_target_stats *st = a->target->stats;
    const struct mg_upstream_conf *uc = x->ups;
    uint64_t now = uv_now(&x->w->loop);
    switch (mg_breaker_report(&st->breaker, &uc->breaker, now, failure, a->probe)) {
    case MG_BREAKER_OPENED:
        mg_warn("circuit breaker open: upstream %s target %s (for %llu ms)", uc->name,
                a->target->conf->address.text,
                (unsigned long long)mg_breaker_retry_after_ms(&st->breaker, &uc->breaker, now));
        break;
    case MG_BREAKER_CLOSED:
        mg_info("circuit breaker closed: upstream %s target %s", uc->name,
                a->target->conf->address.text);
        break;
    case MG_BREAKER_UNCHANGED:
        break;
    }
    if (failure)
        atomic_fetch_add_explicit(&st->failures, 1, memory_order_relaxed);
}

void mg_attempt_close(struct mg_exchange *x)
{
    struct mg_attempt *a = &x->att;
    if (!a->open)
        return;
    if (!a->reported)
        mg_breaker_cancel(&a->target->stats->breaker, a->probe); /* outcome unknown */
    a->open = false;
    a->target->active--;
    atomic_fetch_sub_explicit(&a->target->stats->active, 1, memory_order_relaxed);
}

bool mg_attempt_may_retry(struct mg_exchange *x, unsigned kind, bool reached)
{
    const struct mg_upstream_conf *uc = x->ups;
    if (x->resp_started || x->attempts > uc->retry.max_retries || x->req_upgrade ||
        (x->req_body_bytes > 0 && !x->body_copy_ok))
        return false;
    /* A body still arriving can be repeated only if none of it left yet (a
     * connect failure: the bytes still wait in the client buffer). */
    if (!x->req_done && (reached || x->req_body_bytes > 0))
        return false;
    if (kind && !mg_retry_on(&uc->retry, kind))
        return false;
    if (!mg_retry_safe(x->method, reached, x->idem.keyed))
        return false;
    struct mg_upstream_stats *us = x->rt->ups[uc->index].stats;
    return mg_retry_budget_try_spend(&us->budget, &uc->retry, uv_now(&x->w->loop));
}

uint64_t mg_attempt_backoff_ms(struct mg_exchange *x)
{
    return mg_retry_backoff_ms(&x->ups->retry, x->attempts - 1, mg_worker_random(x->w));
}

enum mg_upstream_outcome mg_attempt_outcome_of(unsigned kind)
{
    return kind == MG_RETRY_ON_CONNECT_FAILURE ? MG_OUTCOME_CONNECT_FAILURE
           : kind == MG_RETRY_ON_TIMEOUT       ? MG_OUTCOME_TIMEOUT
                                               : MG_OUTCOME_RESET;
}
