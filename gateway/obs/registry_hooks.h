/*
 * The admin listener's view of live state: hooks that read the process-wide
 * registry (breakers, in-flight counts, latency, health, bulkheads).
 */
#ifndef MG_REGISTRY_HOOKS_H
#define MG_REGISTRY_HOOKS_H

#include "obs/metrics-t.h"

/* Hooks for mg_admin_start; they run on the admin thread and only read atomics. */
struct mg_obs_hooks mg_registry_obs_hooks(void);

#endif
