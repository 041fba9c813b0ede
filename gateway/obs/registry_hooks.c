/*
 * Registry-backed observability hooks (see registry_hooks.h). Lookups take the
 * registry's mutex (a scrape is rare); the values themselves are atomics that
 * the workers keep updating meanwhile.
 */
#include "obs/registry_hooks.h"

#include <uv.h>

#include "config/config-t.h"
#include "idempotency/store_memory.h"
#include "resilience/breaker.h"
#include "resilience/bulkhead.h"
#include "resilience/registry.h"

static void target_stats(void *ud, const struct mg_config *cfg, size_t upstream, size_t target,
                         struct mg_target_snapshot *out)
{
    (void)ud;
    const struct mg_upstream_conf *uc = &cfg->upstreams[upstream];
    struct mg_target_stats *st = mg_registry_target(uc->name, uc->targets[target].address.text);
    out->circuit = mg_breaker_state(&st->breaker, uv_hrtime() / 1000000);
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

struct mg_obs_hooks mg_registry_obs_hooks(struct mg_idem_memtable *idem_table)
{
    return (struct mg_obs_hooks){.ud = idem_table,
                                 .target_stats = target_stats,
                                 .upstream_stats = upstream_stats,
                                 .idem_memory = idem_table ? idem_memory : NULL};
}
