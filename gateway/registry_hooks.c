/*
 * Registry-backed observability hooks (see registry_hooks.h). Lookups take the
 * registry's mutex (a scrape is rare); the values themselves are atomics that
 * the workers keep updating meanwhile.
 */
#include "registry_hooks.h"

#include <uv.h>

#include "config/config-t.h"
#include "idempotency/redis_state.h"
#include "idempotency/store_memory.h"
#include "lua/jitboard.h"
#include "resilience/breaker.h"
#include "resilience/bulkhead.h"
#include "resilience/registry.h"
#include "resilience/retry.h"

static void target_stats(void *ud, const struct mg_config *cfg, size_t upstream, size_t target,
                         struct mg_target_snapshot *out)
{
    (void)ud;
    const struct mg_upstream_conf *uc = &cfg->upstreams[upstream];
    struct mg_target_stats *st = mg_registry_target(uc->name, uc->targets[target].address.text);
    uint64_t now_ms = uv_hrtime() / 1000000;
    out->circuit = mg_breaker_state(&st->breaker, now_ms);
    out->retry_after_ms = mg_breaker_retry_after_ms(&st->breaker, &uc->breaker, now_ms);
    out->consecutive = mg_breaker_failures(&st->breaker);
    out->in_flight = atomic_load_explicit(&st->active, memory_order_relaxed);
    out->ewma = (double)atomic_load_explicit(&st->ewma_ns, memory_order_relaxed) / 1e9;
    out->failures = atomic_load_explicit(&st->failures, memory_order_relaxed);
    if (uc->health_check.enabled)
        out->health = atomic_load_explicit(&st->unhealthy, memory_order_relaxed)
                          ? MG_HEALTH_UNHEALTHY
                          : MG_HEALTH_HEALTHY;
}

static void upstream_stats(void *ud, const struct mg_config *cfg, size_t upstream,
                           struct mg_upstream_snapshot *out)
{
    (void)ud;
    struct mg_upstream_stats *us = mg_registry_upstream(cfg->upstreams[upstream].name);
    out->bulkhead_in_use = mg_bulkhead_in_use(&us->bulkhead);
    out->bulkhead_queued = mg_bulkhead_queued(&us->bulkhead);
    out->bulkhead_rejected = atomic_load_explicit(&us->rejected, memory_order_relaxed);
    const struct mg_bulkhead_conf *bc = &cfg->upstreams[upstream].bulkhead;
    uint32_t adaptive = atomic_load_explicit(&us->bulkhead.limit, memory_order_relaxed);
    out->bulkhead_limit = bc->adaptive.enabled && adaptive ? adaptive : bc->max_concurrent;
    mg_retry_budget_counts(&us->budget, uv_hrtime() / 1000000, &out->budget_requests,
                           &out->budget_retries);
    out->dns_ok = atomic_load_explicit(&us->dns_ok, memory_order_relaxed);
    out->dns_failed = atomic_load_explicit(&us->dns_failed, memory_order_relaxed);
    out->dns_last_unix_ms = atomic_load_explicit(&us->dns_last_ms, memory_order_relaxed);
    out->dns_last_ok = atomic_load_explicit(&us->dns_last_ok, memory_order_relaxed) != 0;
}

static void idem_memory(void *ud, struct mg_idem_memory_snapshot *out)
{
    struct mg_idem_memstats s;
    mg_idem_memtable_stats(ud, &s);
    *out = (struct mg_idem_memory_snapshot){.bytes = s.bytes,
                                            .budget = s.budget,
                                            .entries = s.entries,
                                            .in_flight = s.in_flight,
                                            .expired = s.expired,
                                            .evicted = s.evicted,
                                            .refused = s.refused};
}

/* Copies the process-wide state, so the strings handed out point into a
 * per-thread copy that the next call replaces (only the admin thread calls). */
static void redis(void *ud, struct mg_redis_snapshot *out)
{
    static _Thread_local struct mg_redis_state st;

    (void)ud;
    mg_redis_state_read(&st);
    *out = (struct mg_redis_snapshot){
        .in_use = st.stores > 0,
        .sentinel = st.sentinel,
        .up = st.stores > 0 && st.ready >= st.stores,
        .master_name = st.master_name,
        .master = st.master,
        .failovers = st.failovers,
        .last_failover_unix_ms = st.last_failover_unix_ms,
        .last_failover_from = st.last_failover_from,
        .last_failover_to = st.last_failover_to,
        .last_failover_unavailable_ms = st.last_failover_unavailable_ms,
    };
}

struct mg_obs_hooks mg_registry_obs_hooks(struct mg_idem_memtable *idem_table)
{
    return (struct mg_obs_hooks){.ud = idem_table,
                                 .target_stats = target_stats,
                                 .upstream_stats = upstream_stats,
                                 .idem_memory = idem_table ? idem_memory : NULL,
                                 .redis = redis,
                                 .plugins_jit = mg_jitboard_render};
}
