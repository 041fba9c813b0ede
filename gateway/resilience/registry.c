/*
 * The registry (see registry.h): two append-only lists under one mutex. Lookups
 * happen when a worker builds a runtime for a config snapshot, never per request.
 */
#include "resilience/registry.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "resilience/breaker.h"
#include "resilience/bulkhead.h"
#include "resilience/retry.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct mg_upstream_stats *) upstreams;
static struct mg_target_stats *targets;
static unsigned nworkers = 1;

void mg_registry_init(unsigned n)
{
    nworkers = n ? n : 1;
}

unsigned mg_registry_nworkers(void)
{
    return nworkers;
}

struct mg_upstream_stats *mg_registry_upstreams(void)
{
    return atomic_load_explicit(&upstreams, memory_order_acquire);
}

struct mg_upstream_stats *mg_registry_upstream(const char *name)
{
    pthread_mutex_lock(&lock);
    struct mg_upstream_stats *u = atomic_load(&upstreams);
    while (u && strcmp(u->name, name) != 0)
        u = u->next;
    if (!u) {
        u = calloc(1, sizeof *u);
        if (!u || !(u->name = strdup(name)) || !(u->waiting = calloc(nworkers, sizeof *u->waiting)))
            mg_fatal("out of memory (upstream stats)");
        mg_bulkhead_init(&u->bulkhead, nworkers);
        mg_retry_budget_init(&u->budget);
        u->next = atomic_load(&upstreams);
        atomic_store_explicit(&upstreams, u, memory_order_release);
    }
    pthread_mutex_unlock(&lock);
    return u;
}

struct mg_target_stats *mg_registry_target(const char *upstream, const char *address)
{
    char key[512];
    snprintf(key, sizeof key, "%s\t%s", upstream, address);
    pthread_mutex_lock(&lock);
    struct mg_target_stats *t = targets;
    while (t && strcmp(t->key, key) != 0)
        t = t->next;
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t || !(t->key = strdup(key)))
            mg_fatal("out of memory (target stats)");
        mg_breaker_init(&t->breaker);
        t->next = targets;
        targets = t;
    }
    pthread_mutex_unlock(&lock);
    return t;
}

void mg_registry_shutdown(void)
{
    pthread_mutex_lock(&lock);
    struct mg_upstream_stats *u = atomic_exchange(&upstreams, NULL);
    while (u) {
        struct mg_upstream_stats *next = u->next;
        mg_bulkhead_destroy(&u->bulkhead);
        free(u->waiting);
        free(u->name);
        free(u);
        u = next;
    }
    while (targets) {
        struct mg_target_stats *next = targets->next;
        free(targets->key);
        free(targets);
        targets = next;
    }
    pthread_mutex_unlock(&lock);
}

void mg_target_observe_latency(struct mg_target_stats *t, uint64_t sample_ns, uint64_t now_ms)
{
    uint64_t prev = atomic_load_explicit(&t->ewma_ns, memory_order_relaxed);
    uint64_t at = atomic_load_explicit(&t->ewma_at_ms, memory_order_relaxed);
    uint64_t next = sample_ns;
    if (prev && sample_ns < prev) {
        double w = exp(-(double)(now_ms > at ? now_ms - at : 0) / MG_EWMA_TAU_MS);
        next = (uint64_t)((double)prev * w + (double)sample_ns * (1.0 - w));
    }
    atomic_store_explicit(&t->ewma_ns, next, memory_order_relaxed);
    atomic_store_explicit(&t->ewma_at_ms, now_ms, memory_order_relaxed);
}
