/*
 * The registry: process-wide stats keyed by upstream name and target address, so
 * they survive reloads (a breaker that is open stays open when an unrelated route
 * changes). Entries are created at config time under a mutex and live until
 * mg_registry_shutdown(); the request path only follows pointers to them.
 */
#ifndef MG_REGISTRY_H
#define MG_REGISTRY_H

#include "resilience/registry-t.h"

/* Before any worker starts. */
void mg_registry_init(unsigned nworkers);
/* After every worker stopped: frees all entries. */
void mg_registry_shutdown(void);

/* Finds or creates. Never NULL (aborts on OOM). Thread-safe; not for the hot path. */
struct mg_upstream_stats *mg_registry_upstream(const char *name);
struct mg_target_stats *mg_registry_target(const char *upstream, const char *address);

/* The upstream list, for waking bulkhead waiters: entries are only appended, so
 * a worker may walk it without the lock. */
struct mg_upstream_stats *mg_registry_upstreams(void);
unsigned mg_registry_nworkers(void);

/* Peak EWMA (Finagle's): a sample above the average replaces it at once, lower
 * ones decay in with time constant MG_EWMA_TAU_MS. Races between workers lose a
 * sample at worst. */
#define MG_EWMA_TAU_MS 10000
void mg_target_observe_latency(struct mg_target_stats *t, uint64_t sample_ns, uint64_t now_ms);

#endif
