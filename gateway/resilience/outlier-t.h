/*
 * Outlier detection state of one target (DESIGN.md section 10.7), in its
 * process-wide registry stats: counters every worker adds to, and what the
 * last evaluation saw of them; the upstream's evaluation clock.
 */
#ifndef MG_OUTLIER_T_H
#define MG_OUTLIER_T_H

#include <stdatomic.h>
#include <stdint.h>

struct mg_outlier_cell {
    _Atomic uint64_t requests, errors, latency_us; /* ever, all workers */
    /* Written only by the evaluation, which one worker at a time runs. */
    uint64_t seen_requests, seen_errors;             /* at the last evaluation */
    uint64_t lat_seen_requests, lat_seen_latency_us; /* at the last full one */
    uint32_t ejections; /* consecutive: the ejection time doubles with each */
};

/* When one upstream's targets are next compared (its registry stats). */
struct mg_outlier_clock {
    _Atomic uint64_t last_ms; /* loop ms of the last evaluation */
    _Atomic uint64_t full_ms; /* of the next full one (latency too); 0: not started */
    _Atomic uint64_t samples; /* tries reported since the last evaluation */
    /* Held by the one worker evaluating: an evaluation reads and writes the
     * targets' plain seen_* and ejection counts. */
    atomic_flag busy;
};

#endif
