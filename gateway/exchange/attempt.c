/*
 * Tries (see attempt.h). The attempt struct lives in the exchange (x->att);
 * everything process-wide it touches (the target's in-flight count and
 * breaker, the upstream's retry budget) is atomics in the registry.
 */
#include "exchange/attempt.h"

#include <stdatomic.h>
#include <time.h>

#include "config/config-t.h"
#include "core/log.h"
#include "exchange/plugins.h"
#include "obs/metrics.h"
#include "resilience/breaker.h"
#include "resilience/bulkhead.h"
#include "resilience/gradient.h"
#include "resilience/outlier.h"
#include "resilience/quantile.h"
#include "resilience/retry.h"
#include "resilience/retry_after.h"
#include "upstream/balancer.h"
#include "loopctx.h"

/* start_ns: a clock read of just now (the Lua balancer's end), 0: none. */
static void begin(struct mg_exchange *x, struct mg_attempt *a, struct mg_target_rt *t,
                  uint32_t probe, uint64_t start_ns)
{
    a->x = x;
    a->target = t;
    a->probe = probe;
    a->open = true;
    a->reported = false;
    a->start_ns = start_ns ? start_ns : uv_hrtime();
    x->attempts++;
    t->active++;
    atomic_fetch_add_explicit(&t->stats->active, 1, memory_order_relaxed);
}

/* How long until the target's own Retry-After lets it back into rotation. */
static uint64_t out_for_ms(const struct mg_target_rt *t, uint64_t now)
{
    uint64_t until = atomic_load_explicit(&t->stats->out_until, memory_order_relaxed);
    return until > now ? until - now : 0;
}

/* The soonest an open breaker (or a Retry-After) lets a target through again,
 * in seconds. */
static uint32_t retry_after_s(struct mg_upstream_rt *ur, uint64_t now)
{
    const struct mg_upstream_conf *uc = ur->conf;
    uint64_t wait_ms = UINT64_MAX;
    for (size_t k = 0; k < uc->ntargets; k++) {
        uint64_t ms = mg_breaker_retry_after_ms(&ur->targets[k].stats->breaker, &uc->breaker, now);
        uint64_t out = out_for_ms(&ur->targets[k], now);
        ms = out > ms ? out : ms;
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

/* 0 when some target is in rotation, else how long until the first one is
 * back from its Retry-After: a retry waits at least that long. */
static uint64_t wait_for_target_ms(struct mg_exchange *x, uint64_t now)
{
    const struct mg_upstream_conf *uc = x->ups;
    if (!uc->honor_retry_after)
        return 0;
    struct mg_upstream_rt *ur = &x->rt->ups[uc->index];
    uint64_t wait_ms = UINT64_MAX;
    for (size_t k = 0; k < uc->ntargets && wait_ms; k++) {
        uint64_t ms = out_for_ms(&ur->targets[k], now);
        wait_ms = ms < wait_ms ? ms : wait_ms;
    }
    return wait_ms;
}

enum mg_error mg_attempt_open(struct mg_exchange *x)
{
    const struct mg_upstream_conf *uc = x->ups;
    struct mg_upstream_rt *ur = &x->rt->ups[uc->index];
    uint64_t now = uv_now(&x->ctx->loop);
    uint32_t probe = 0;
    uint64_t start_ns = 0;
    int i = -1;
    if (uc->ntargets == 0)
        return MG_ERR_NO_TARGETS; /* a name that does not resolve (yet) */
    if (mg_xplug_active(x, MG_LUA_BALANCE)) {
        bool raised;
        i = mg_xplug_balance(x, ur, now, &raised);
        start_ns = mg_lua_call_end_ns(x->rt->lua); /* the try starts now: no second read */
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
    begin(x, &x->att, &ur->targets[i], probe, start_ns);
    return MG_ERR_NONE;
}

/* The route's Lua balancer's choice for a hedge: an untried target while one
 * is available (the balancer sees the tried ones as unavailable), -1 for the
 * C choice. *stop: it raised or refused, so no hedge. */
static int lua_pick_other(struct mg_exchange *x, struct mg_upstream_rt *ur, uint64_t now,
                          bool *stop)
{
    bool raised;
    int i = mg_xplug_balance(x, ur, now, &raised);
    *stop = raised || x->lua.balance_refused;
    if (*stop) {
        x->lua.balance_refused = 0; /* the request goes on with its first try */
        return -1;
    }
    return i >= 0 && !mg_tried_has(&x->tried, (size_t)i) ? i : -1;
}

bool mg_attempt_open_other(struct mg_exchange *x, struct mg_attempt *a)
{
    const struct mg_upstream_conf *uc = x->ups;
    struct mg_upstream_rt *ur = &x->rt->ups[uc->index];
    uint64_t now = uv_now(&x->ctx->loop);
    uint32_t probe = 0;
    int i = -1;
    if (mg_xplug_active(x, MG_LUA_BALANCE)) {
        bool stop;
        i = lua_pick_other(x, ur, now, &stop);
        if (stop)
            return false;
        if (i >= 0) {
            mg_tried_add(&x->tried, (size_t)i);
            if (!mg_breaker_acquire(&ur->targets[i].stats->breaker, &uc->breaker, now, &probe))
                i = -1;
        }
    }
    for (size_t n = 0; i < 0 && n < uc->ntargets && mg_balancer_fresh_exists(ur, &x->tried, now);
         n++) {
        i = mg_balancer_pick(ur, &x->tried, now);
        if (i < 0)
            return false;
        mg_tried_add(&x->tried, (size_t)i);
        if (!mg_breaker_acquire(&ur->targets[i].stats->breaker, &uc->breaker, now, &probe))
            i = -1;
    }
    if (i < 0)
        return false;
    *a = (struct mg_attempt){0};
    begin(x, a, &ur->targets[i], probe, 0);
    return true;
}

/* Outlier detection: the try counts for its target, and whoever reports when
 * the interval is over evaluates the upstream's targets. */
static void outlier_report(struct mg_exchange *x, struct mg_attempt *a, bool failure)
{
    const struct mg_upstream_conf *uc = x->ups;
    struct mg_upstream_rt *ur = &x->rt->ups[uc->index];
    struct mg_outlier_clock *clk = &ur->stats->outlier;
    mg_outlier_record(clk, a->target->stats, failure, (uv_hrtime() - a->start_ns) / 1000);
    uint64_t now = uv_now(&x->ctx->loop);
    if (!mg_outlier_due(clk, uc->ntargets, &uc->outlier, now))
        return;
    struct mg_target_stats *ts[64];
    size_t n = uc->ntargets < 64 ? uc->ntargets : 64;
    for (size_t k = 0; k < n; k++)
        ts[k] = ur->targets[k].stats;
    uint64_t which = 0;
    if (!mg_outlier_maybe_eval(clk, ts, n, &uc->outlier, now, &which))
        return;
    for (size_t k = 0; k < n; k++)
        if (which & (1ull << k))
            mg_warn(
                "outlier detection: target %s of upstream %s ejected for %llu ms",
                ur->targets[k].conf->address.text, uc->name,
                (unsigned long long)(atomic_load_explicit(&ts[k]->out_until, memory_order_relaxed) -
                                     now));
}

void mg_attempt_report(struct mg_exchange *x, bool failure, enum mg_upstream_outcome outcome)
{
    mg_attempt_report_on(&x->att, failure, outcome);
}

void mg_attempt_report_on(struct mg_attempt *a, bool failure, enum mg_upstream_outcome outcome)
{
    struct mg_exchange *x = a->x;
    if (!a->open || a->reported)
        return;
    a->reported = true;
    struct mg_upstream_rt *ur = &x->rt->ups[x->ups->index];
    mg_metrics_upstream_outcome(x->rt->metrics, (unsigned)x->ctx->id, x->ups->index,
                                (size_t)(a->target - ur->targets), outcome);
    struct mg_target_stats *st = a->target->stats;
    const struct mg_upstream_conf *uc = x->ups;
    uint64_t now = uv_now(&x->ctx->loop);
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
    if (x->ups->outlier.enabled)
        outlier_report(x, a, failure);
}

void mg_attempt_close(struct mg_exchange *x)
{
    mg_attempt_close_on(&x->att);
}

void mg_attempt_close_on(struct mg_attempt *a)
{
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
    uint64_t now = uv_now(&x->ctx->loop);
    /* Every target asked for a pause the route deadline cannot wait out: the
     * client gets the upstream's answer (or error) now rather than a 504 later. */
    uint64_t wait = wait_for_target_ms(x, now);
    if (wait && x->deadline.due && now + wait >= x->deadline.due)
        return false;
    struct mg_upstream_stats *us = x->rt->ups[uc->index].stats;
    return mg_retry_budget_try_spend(&us->budget, &uc->retry, now);
}

uint64_t mg_attempt_backoff_ms(struct mg_exchange *x)
{
    uint64_t ms = mg_retry_backoff_ms(&x->ups->retry, x->attempts - 1, mg_loopctx_random(x->ctx));
    uint64_t wait = wait_for_target_ms(x, uv_now(&x->ctx->loop));
    return wait > ms ? wait : ms;
}

uint64_t mg_attempt_timeout_ms(struct mg_exchange *x, uint64_t ms)
{
    struct mg_attempt *a = &x->att;
    uint64_t per_try = x->ups->per_try_timeout_ms;
    a->try_cut = false;
    if (!per_try || !ms || a->head_done)
        return ms;
    uint64_t spent = (uv_hrtime() - a->start_ns) / 1000000;
    uint64_t left = spent < per_try ? per_try - spent : 1;
    if (left >= ms)
        return ms;
    a->try_cut = true;
    return left;
}

void mg_attempt_note_head(struct mg_exchange *x)
{
    const struct mg_upstream_conf *uc = x->ups;
    uint64_t now = uv_now(&x->ctx->loop);
    if (uc->bulkhead.adaptive.enabled) {
        struct mg_bulkhead *b = &x->rt->ups[uc->index].stats->bulkhead;
        mg_gradient_sample(&x->rt->ups[uc->index].stats->gradient, &b->limit,
                           &uc->bulkhead.adaptive, (uv_hrtime() - x->att.start_ns) / 1000,
                           mg_bulkhead_in_use(b), uv_hrtime() / 1000);
    }
    /* From the start of the try a hedge raced, not the winning hedge's own: a
     * hedged slow answer still counts as slow, else every hedge pulls the
     * quantile down and more requests pass it (a threshold chasing itself). */
    if (uc->hedge.after_permille && x->raced_ns)
        mg_quantile_add(&x->rt->ups[uc->index].latency,
                        (uint32_t)((uv_hrtime() - x->raced_ns) / 1000), uc->hedge.after_permille);
    if (!uc->honor_retry_after || (x->status != 503 && x->status != 429))
        return;
    int i = mg_headers_find(&x->resp_hdrs, MG_SLICE_LIT("retry-after"));
    uint64_t ms;
    if (i < 0 || !mg_retry_after_parse(x->resp_hdrs.v[i].value, (int64_t)time(NULL), &ms) || !ms)
        return;
    ms = ms < uc->retry_after_max_ms ? ms : uc->retry_after_max_ms;
    uint64_t until = now + ms;
    _Atomic uint64_t *out = &x->att.target->stats->out_until;
    uint64_t cur = atomic_load_explicit(out, memory_order_relaxed);
    while (cur < until && !atomic_compare_exchange_weak_explicit(
                              out, &cur, until, memory_order_relaxed, memory_order_relaxed)) {
    }
    mg_info("target %s asked for %llums out of rotation (status %d, request_id %s)",
            x->att.target->conf->address.text, (unsigned long long)ms, x->status, x->request_id);
}

enum mg_upstream_outcome mg_attempt_outcome_of(unsigned kind)
{
    return kind == MG_RETRY_ON_CONNECT_FAILURE ? MG_OUTCOME_CONNECT_FAILURE
           : kind == MG_RETRY_ON_TIMEOUT       ? MG_OUTCOME_TIMEOUT
                                               : MG_OUTCOME_RESET;
}
