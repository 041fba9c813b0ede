/*
 * The admin listener's view of live state: hooks that read the process-wide
 * registry (breakers, in-flight counts, latency, health, bulkheads).
 */
#ifndef MG_REGISTRY_HOOKS_H
#define MG_REGISTRY_HOOKS_H

#include "obs/metrics-t.h"

struct mg_idem_memtable;
/* Hooks for mg_admin_start; they run on the admin thread and only read atomics
 * (and the memory store's stats under its lock). idem_table may be NULL. */
struct mg_obs_hooks mg_registry_obs_hooks(struct mg_idem_memtable *idem_table);

#endif
