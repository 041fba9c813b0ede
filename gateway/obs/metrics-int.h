/*
 * Private to obs/metrics.c and obs/exposition.c: the store's entities and the
 * label tables both files use.
 */
#ifndef MG_OBS_METRICS_INT_H
#define MG_OBS_METRICS_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "obs/metrics-t.h"

#define CACHE_LINE 64

enum entity_kind { ENT_GLOBAL, ENT_ROUTE, ENT_UPSTREAM, ENT_TARGET, ENT_PLUGIN, ENT_LISTENER };

struct mg_metrics_entity {
    struct mg_metrics_entity *next; /* store list */
    enum entity_kind kind;
    unsigned refs;          /* generations naming it; store->mu */
    atomic_bool registered; /* plugins: loaded at least once */
    uint32_t hash;
    char *name;  /* route/upstream/plugin name; target: upstream name */
    char *name2; /* target: address text; else NULL */
    size_t ncells;
    _Atomic uint64_t *cells[]; /* one array per worker */
};

struct mg_metrics_store {
    uv_mutex_t mu; /* entities, refs, ngenerations */
    unsigned nworkers;
    unsigned ngenerations; /* generations alive */
    struct mg_metrics_entity *entities;
    _Atomic uint64_t reloads[2]; /* [0] success, [1] failure */
};

/* The bounds in use (see MG_METRICS_NBOUNDS): nanoseconds, and the le labels
 * Prometheus shows, "+Inf" at [mg_metrics__nbounds]. */
extern unsigned mg_metrics__nbounds;
extern uint64_t mg_metrics__bounds_ns[MG_METRICS_NBOUNDS];
extern char mg_metrics__bounds_text[MG_METRICS_NBUCKETS][24];
extern const char *const mg_metrics__outcome_names[MG_OUTCOME__COUNT];
extern const char *const mg_metrics__idem_names[MG_IDEM_RESULT__COUNT];
extern const char *const mg_metrics__phase_names[MG_PLUGIN_PHASE__COUNT];
extern const char *const mg_metrics__tls_hs_names[MG_TLS_HS__COUNT];
extern const char *const mg_metrics__side_names[MG_CONN_SIDE__COUNT];
extern const char *const mg_metrics__state_names[MG_CONN_STATE__COUNT];

/* calloc that aborts on OOM (metrics.c). */
void *mg_metrics__xcalloc(size_t n, size_t size);

#endif
