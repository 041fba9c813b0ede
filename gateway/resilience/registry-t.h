/*
 * Process-wide state of upstreams and targets: what every worker must see the
 * same (breaker, bulkhead, retry budget, in-flight count, latency, health).
 */
#ifndef MG_REGISTRY_T_H
#define MG_REGISTRY_T_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "resilience/breaker-t.h"
#include "resilience/bulkhead-t.h"
#include "resilience/gradient-t.h"
#include "resilience/outlier-t.h"
#include "resilience/retry-t.h"

/* One per (upstream name, target address). Read by the balancers (and later
 * through the Lua FFI), so it is a plain struct of atomics. */
struct mg_target_stats {
    struct mg_breaker breaker;
    struct mg_outlier_cell outlier;
    _Atomic uint32_t active;      /* requests in flight to it, all workers */
    _Atomic uint64_t ewma_ns;     /* peak-EWMA latency of response heads, ns */
    _Atomic uint64_t ewma_at_ms;  /* when ewma_ns was last updated */
    _Atomic uint64_t failures;    /* failures reported, ever */
    _Atomic uint32_t unhealthy;   /* 1 while active health checks say down */
    _Atomic uint64_t out_until;   /* loop ms: out of rotation (Retry-After, outlier) */
    struct mg_target_stats *next; /* registry list */
    char *key;                    /* "upstream\taddress" */
};

/* One request waiting for a bulkhead slot, embedded in whoever waits (an
 * exchange). resilience/admission.c links it and calls on_grant when a slot is
 * held for it; the owner never touches the links. */
struct mg_waiter {
    struct mg_waiter *next;
    uint64_t since;                         /* loop ms it joined the queue */
    void (*on_grant)(struct mg_waiter *wt); /* at a loop boundary: the slot is held */
    /* A request of higher priority took its place in a full queue: it is out of
     * the queue, counted as rejected; the owner answers bulkhead_full soon
     * (not from inside this call: another exchange is running). */
    void (*on_shed)(struct mg_waiter *wt);
    uint8_t priority; /* enum mg_priority, set by the owner before entering */
    bool shed;        /* set with on_shed */
};

/* A worker's FIFO of waiters on one upstream's bulkhead; only that worker
 * touches it. */
struct mg_waitlist {
    struct mg_waiter *head, *tail;
};

struct mg_upstream_stats {
    struct mg_bulkhead bulkhead;
    struct mg_gradient gradient; /* bulkhead.adaptive */
    struct mg_retry_budget budget;
    struct mg_window hedge_budget; /* a = requests, b = hedges (hedge.budget) */
    struct mg_waitlist *waiting;   /* [nworkers] */
    _Atomic uint64_t rejected;     /* bulkhead_full answers */
    /* Saturation as logged (admission.c): one line when rejections start, one
     * when a request gets a slot again, at most one of each per interval. */
    _Atomic bool saturated;
    _Atomic bool full_logged; /* the last "full" line was written: its end will be */
    _Atomic uint64_t saturated_since_rejected; /* `rejected` when it began */
    _Atomic uint64_t saturation_logged_ms;     /* monotonic ms of the last line */
    /* Service discovery (discovery/resolver.c), for /metrics and /status. */
    _Atomic uint64_t dns_ok, dns_failed; /* resolutions by result */
    _Atomic uint64_t dns_last_ms;        /* wall clock ms of the last one, 0: none */
    _Atomic uint32_t dns_last_ok;        /* 1 when the last one succeeded */
    _Atomic uint32_t dns_targets;        /* targets in the last published snapshot */
    struct mg_outlier_clock outlier;     /* when its targets are next compared */
    struct mg_upstream_stats *next;      /* registry list (append-only) */
    char *name;
};

#endif
