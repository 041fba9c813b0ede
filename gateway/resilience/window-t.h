/*
 * Types of the sliding-window counter shared by the circuit breaker (requests and
 * failures per target) and the retry budget (requests and retries per upstream).
 *
 * A window is MG_WINDOW_BUCKETS buckets of `width_ms` each, used as a ring. Each
 * bucket is ONE 64-bit atomic word holding its bucket number and both counters,
 * so a bucket is rotated and counted with a single compare-and-swap: no lock, and
 * no increment can land in a bucket between its rotation and its reset.
 *
 * Ownership: embedded in the struct that uses it (breaker, budget), which lives in
 * process-wide memory shared by all workers, never in an exchange's arena.
 */
#ifndef MG_WINDOW_T_H
#define MG_WINDOW_T_H

#include <stdatomic.h>
#include <stdint.h>

/* Ten buckets: the window slides in steps of a tenth, so a burst leaves it within
 * 10% of `window` late, as Hystrix's default rolling window does. */
#define MG_WINDOW_BUCKETS 10

struct mg_window {
    _Atomic uint64_t buckets[MG_WINDOW_BUCKETS]; /* packed {bucket number, a, b}: window.c */
};

/* Totals over the live buckets of a window. */
struct mg_window_count {
    uint64_t a; /* first counter: requests, for both users */
    uint64_t b; /* second counter: failures (breaker) or retries (budget) */
};

#endif
