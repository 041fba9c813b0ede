/*
 * Gradient limiter (see gradient.h).
 */
#include "resilience/gradient.h"

#include <math.h>

#define BASELINE_DRIFT 6000.0 /* samples for the baseline to follow a lasting rise */
#define SHORT_ALPHA    0.1    /* weight of a sample in the fast average */
#define TOLERANCE      1.5    /* latency may grow this much before the limit shrinks */

static double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

void mg_gradient_sample(struct mg_gradient *g, _Atomic uint32_t *limit,
                        const struct mg_adaptive_conf *c, uint64_t rtt_us, uint32_t in_use)
{
    if (atomic_flag_test_and_set_explicit(&g->busy, memory_order_acquire))
        return;
    double rtt = rtt_us ? (double)rtt_us : 1.0;
    if (g->samples++ == 0) {
        g->long_rtt = g->short_rtt = rtt;
        g->limit = clampd((double)c->min_limit * 5, c->min_limit, c->max_limit);
    } else {
        g->short_rtt += SHORT_ALPHA * (rtt - g->short_rtt);
        /* The baseline is the least latency seen, drifting up slowly so an
         * upstream that became slower for good is re-measured. */
        if (rtt < g->long_rtt)
            g->long_rtt = rtt;
        else
            g->long_rtt += (rtt - g->long_rtt) / BASELINE_DRIFT;
        if ((double)in_use >= g->limit / 2) {
            double gradient = clampd(TOLERANCE * g->long_rtt / g->short_rtt, 0.5, 1.0);
            double next = g->limit * gradient + sqrt(g->limit);
            next = g->limit * (1 - c->smoothing) + next * c->smoothing;
            g->limit = clampd(next, c->min_limit, c->max_limit);
        }
    }
    atomic_store_explicit(limit, (uint32_t)(g->limit + 0.5), memory_order_relaxed);
    atomic_flag_clear_explicit(&g->busy, memory_order_release);
}
