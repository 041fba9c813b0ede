/*
 * The adaptive bulkhead's limiter state (bulkhead.adaptive; resilience/gradient.h).
 */
#ifndef MG_GRADIENT_T_H
#define MG_GRADIENT_T_H

#include <stdatomic.h>
#include <stdint.h>

struct mg_gradient {
    atomic_flag busy; /* one worker updates at a time; the others skip a sample */
    double long_rtt;  /* least response-head latency seen (drifting up), us: the baseline */
    double short_rtt; /* fast average: what the latency is now */
    double limit;     /* the estimate; published rounded in mg_bulkhead.limit */
    uint64_t samples;
    /* The current window: the limit moves once per window, from its average. */
    uint64_t win_start_us;
    double win_sum_us;
    uint32_t win_n;
    uint32_t win_in_use; /* the most slots held during it */
};

#endif
