/*
 * Outlier detection state of one target (DESIGN.md section 10.7), in its
 * process-wide registry stats: counters every worker adds to, and what the
 * last evaluation saw of them.
 */
#ifndef MG_OUTLIER_T_H
#define MG_OUTLIER_T_H

#include <stdatomic.h>
#include <stdint.h>

struct mg_outlier_cell {
    _Atomic uint64_t requests, errors, latency_us; /* ever, all workers */
    /* Written only by the evaluation, which one worker at a time runs. */
    uint64_t seen_requests, seen_errors, seen_latency_us;
    uint32_t ejections; /* consecutive: the ejection time doubles with each */
};

#endif
