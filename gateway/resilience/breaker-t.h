/*
 * Types of the per-target circuit breaker (DESIGN.md section 5).
 *
 * One struct mg_breaker per target, in process-wide memory shared by every worker
 * and updated with C11 atomics only (breaker.c explains the packing). It outlives
 * exchanges and config snapshots' runtimes: whoever owns the per-target passive
 * stats owns it, and must not free it while a worker may still report to it.
 */
#ifndef MG_BREAKER_T_H
#define MG_BREAKER_T_H

#include <stdatomic.h>
#include <stdint.h>

#include "resilience/window-t.h"

/* The breaker's state as the metric `circuit_state` reports it (DESIGN.md
 * section 7); the values are part of that contract. */
enum mg_circuit {
    MG_CIRCUIT_CLOSED = 0,    /* every request admitted; outcomes counted */
    MG_CIRCUIT_HALF_OPEN = 1, /* open_for elapsed: up to half_open_requests probes */
    MG_CIRCUIT_OPEN = 2,      /* tripped, now < open_until: nothing admitted */
};

struct mg_breaker {
    _Atomic uint64_t state;       /* packed {open, epoch, trips, open_until_ms}: breaker.c */
    _Atomic uint64_t probes;      /* packed {epoch, admitted, succeeded} of the half-open episode */
    _Atomic uint32_t consecutive; /* failures in a row while closed */
    struct mg_window window;      /* while closed: a = requests, b = failures */
};

#endif
