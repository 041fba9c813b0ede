/*
 * Types of a worker's runtime (runtime.h): per worker, per config snapshot.
 */
#ifndef MG_RUNTIME_T_H
#define MG_RUNTIME_T_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config-t.h"
#include "core/hold.h"
#include "resilience/quantile-t.h"
#include "resilience/registry-t.h"

struct mg_upconn;
struct mg_metrics;
struct mg_lua;
struct mg_lua_metrics;
struct mg_lua_target;
struct mg_idem_client;
struct mg_runtime;

/* Per-worker runtime state of one target: its idle connection pool. */
struct mg_target_rt {
    const struct mg_target_conf *conf;
    struct mg_target_stats *stats; /* process-wide: breaker, in-flight, latency, health */
    struct mg_hold *owner;         /* its runtime: a parked connection holds it */
    struct mg_upconn *idle;        /* LIFO list of idle pooled connections */
    uint32_t nidle;
    uint32_t pool_limit;                    /* the upstream's `keepalive` */
    int32_t rr_current;                     /* smooth weighted round robin state */
    uint32_t active;                        /* exchanges using this target now */
    const struct mg_upstream_tls_conf *tls; /* the upstream's, when enabled; else NULL */
    char *tls_name;                         /* SNI and the name verified, or NULL */
    struct ssl_session_st *tls_session;     /* the last resumable session, or NULL */
};

struct mg_upstream_rt {
    const struct mg_upstream_conf *conf;
    struct mg_upstream_stats *stats;   /* process-wide: bulkhead, retry budget */
    struct mg_target_rt *targets;      /* conf->ntargets entries */
    struct mg_lua_target *lua_targets; /* the same targets as Lua balancers see them */
    struct mg_quantile latency;        /* this worker's recent heads (hedge.after: pNN) */
};

/* What one worker needs of one config snapshot. */
struct mg_runtime {
    struct mg_config *cfg;              /* one reference held */
    struct mg_metrics *metrics;         /* the counters of this config generation (ref held) */
    struct mg_lua *lua;                 /* this worker's plugin VM for cfg, or NULL: none needed */
    struct mg_lua_metrics *lua_metrics; /* its metrics hook data, freed after it */
    struct mg_upstream_rt *ups;         /* cfg->nupstreams entries */
    struct mg_idem_client *idem_redis;  /* this worker's Redis store, when a route uses it */
    /* Exchanges and parked connections on it, +1 while it is the current one;
     * retired once a reload replaced it: pools close, nothing new joins. */
    struct mg_hold hold;
};

#endif
